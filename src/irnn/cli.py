"""The ``irnn`` command line.

    irnn train --task smnist --act elu --out runs/elu     train (or --resume) one run
    irnn plot RUN_DIR... -o fig.png                       metric-vs-epoch curves
    irnn compare RUN_DIR...                               table of final/best scores
    irnn demo                                             quick ELU vs ReLU comparison
    irnn bench                                            recurrence speed against peers

A wrong value exits with status 2 and one line saying what is wrong; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

from .errors import IrnnError

DEMO_DIR = "demo"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from .train.config import config_fields

    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(help=f.metadata.get("help", ""), default=argparse.SUPPRESS, dest=f.name)
        kind = str(f.type)
        if kind == "bool":
            kwargs.update(action="store_true")
        else:
            kwargs["type"] = int if "int" in kind else float if "float" in kind else str
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = f.name.upper() if not f.metadata.get("choices") else None
            kwargs["help"] += f" (default: {f.default})"
        parser.add_argument(flag, **{k: v for k, v in kwargs.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="irnn", description="Identity-initialised RNNs with any activation: train, compare, plot.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one run into a run directory")
    p.add_argument("--out", required=True, help="run directory (config.json, metrics.jsonl, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar (epoch lines are still printed)")
    _add_train_options(p)

    p = sub.add_parser("plot", help="metric vs epoch for one or more runs")
    p.add_argument("runs", nargs="+", help="run directories (or folders of them)")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--title")

    p = sub.add_parser("compare", help="table of final and best scores, epochs to thresholds, time")
    p.add_argument("runs", nargs="+", help="run directories (or folders of them)")
    p.add_argument("--at", type=float, nargs="+", help="thresholds for 'epochs to reach' (accuracy as a fraction)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")

    p = sub.add_parser("demo", help="quick ELU vs ReLU IRNN comparison on a subset of sequential MNIST")
    p.add_argument("--out", default=DEMO_DIR, help=f"folder for the two runs, figure and table (default: {DEMO_DIR})")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run")
    p.add_argument("--limit-train", type=int, default=None, help="training sequences per run")
    p.add_argument("--limit-test", type=int, default=None, help="validation and test sequences")
    p.add_argument("--data-dir", help="folder with the MNIST files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("bench", help="time a training step of the fused engine against nn.RNN and an eager loop")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--quick", action="store_true", help="fewer repeats; skip the slowest peer at large batch")
    p.add_argument("--out", help="also write the JSON lines to this file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``irnn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except IrnnError as exc:
        print(f"irnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"irnn {args.command}: interrupted; finished epochs are kept (continue with --resume)", file=sys.stderr)
        return 130


def _cmd_train(args) -> int:
    from .train import TrainConfig, read_run_config, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    base = read_run_config(Path(args.out)) if args.resume else None
    config = (base or TrainConfig()).replace(**given)
    train(config, args.out, resume=args.resume, progress=not args.quiet)
    return 0


def _cmd_plot(args) -> int:
    from .report import load_runs, plot_runs

    path = plot_runs(load_runs(args.runs), Path(args.output), split=args.split, title=args.title)
    print(f"wrote {path}")
    return 0


def _cmd_compare(args) -> int:
    from .report import compare_table, load_runs, summarize_run

    runs = load_runs(args.runs)
    if args.json:
        for run in runs:
            print(json.dumps({"run": str(run.path), **summarize_run(run, args.at or ())}))
    else:
        print(compare_table(runs, args.at))
    return 0


def _cmd_demo(args) -> int:
    from .experiments.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, limit_train=args.limit_train, limit_test=args.limit_test,
             data_dir=args.data_dir, progress=not args.quiet)
    return 0


def _cmd_bench(args) -> int:
    from .bench import run_benchmark

    run_benchmark(batch_sizes=args.batch_sizes, quick=args.quick, out=args.out)
    return 0


_COMMANDS = {"train": _cmd_train, "plot": _cmd_plot, "compare": _cmd_compare, "demo": _cmd_demo, "bench": _cmd_bench}


if __name__ == "__main__":
    sys.exit(main())
