"""The ``irnn`` command line.

    irnn train --task smnist --act elu --out runs/elu     train (or --resume) one run
    irnn plot RUN_DIR... -o fig.png                       metric-vs-epoch curves
    irnn compare RUN_DIR...                               table of final/best scores
    irnn demo                                             quick ELU vs ReLU comparison
    irnn bench                                            recurrence speed against peers
    irnn sweep SPEC.toml | --preset NAME [--ray auto]    a grid of runs x seeds, resumable
    irnn presets [NAME]                                   the built-in sweep specs
    irnn report RUN_DIR... -o DIR                         report.md + report.html over seeds
    irnn diagnose RUN_DIR... [-o DIR]                     gradient flow, dead units, W_hh spectrum
    irnn sample RUN_DIR --prime "..." -n 200              text from a language-model run

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
    p.add_argument("--at", type=float, nargs="+", help="thresholds for 'epochs to reach', in the metric's units "
                   "(accuracy as a fraction; default: the task's)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")

    p = sub.add_parser("demo", help="quick ELU vs ReLU IRNN comparison on a subset of sequential MNIST")
    p.add_argument("--out", default=DEMO_DIR, help=f"folder for the two runs, figure and table (default: {DEMO_DIR})")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run")
    p.add_argument("--limit-train", type=int, default=None, help="training sequences per run")
    p.add_argument("--limit-test", type=int, default=None, help="validation and test sequences")
    p.add_argument("--data-dir", help="folder with the MNIST files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("sweep", help="train a grid of runs times seeds from a TOML spec (skips finished runs, "
                                     "resumes unfinished ones), locally or on a Ray cluster")
    p.add_argument("spec", nargs="?", help="sweep spec, a TOML file (see docs/experiments.md)")
    p.add_argument("--preset", help="a built-in spec instead of a file (see `irnn presets`)")
    p.add_argument("--out", help="folder for the run directories (default: the spec's `out`)")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", dest="overrides",
                   help="override a [base] option, e.g. --set epochs=2 (repeatable; the value is read as TOML)")
    p.add_argument("--workers", type=int, help="local runs at a time (default: as many as the cores allow)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: auto (the one this node belongs to) "
                                                    "or HOST:PORT of its head")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is left of each; train nothing")

    p = sub.add_parser("presets", help="list the built-in sweep specs, or print one")
    p.add_argument("name", nargs="?", help="print this preset's TOML (to copy and edit)")

    p = sub.add_parser("report", help="Markdown and HTML report: tables over seeds, learning curves, differences "
                                      "with confidence intervals")
    p.add_argument("runs", nargs="+", help="run directories (or folders of them, e.g. a sweep's)")
    p.add_argument("-o", "--output", default="report", help="folder for report.md, report.html and figures "
                                                             "(default: report)")

    p = sub.add_parser("sample", help="generate text from a language-model run (ptb-word, ptb-char, shakespeare, text:PATH)")
    p.add_argument("run", help="run directory of a language-model run")
    p.add_argument("--prime", default="", help="text to start from; every character (word) must be in the model's "
                                               "vocabulary (default: the start of a line)")
    p.add_argument("-n", "--length", type=int, default=200, help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature: lower is more conservative, 0 always takes the most likely token "
                        "(default: 0.8)")
    p.add_argument("--seed", type=int, help="seed for a reproducible sample (default: a fresh one)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="weights with the best validation score, or those after the last finished epoch")

    from .bench import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="time a training step of the fused engine against nn.RNN and an eager loop"))

    p = sub.add_parser("diagnose", help="gradient flow, dead units, pre-activations and W_hh spectrum of runs")
    p.add_argument("runs", nargs="+", help="run directories (or folders of them); each gets RUN_DIR/diagnostics/")
    p.add_argument("--epochs", nargs="+", metavar="EPOCH",
                   help="epochs to diagnose: numbers, 'last', 'best' (default: every kept epoch and the last)")
    p.add_argument("-o", "--output", help="folder for the overlay of several runs' gradient norms")
    p.add_argument("--batch-size", type=int, default=100, help="validation sequences in the fixed batch (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed that picks the fixed batch (default: 0)")
    p.add_argument("--data-dir", help="folder with the dataset files, if not where the run found them")
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
    from .bench import run_from_args

    return run_from_args(args)


def _cmd_diagnose(args) -> int:
    from .diagnostics import compare_runs, diagnose_run
    from .report import load_runs

    runs = load_runs(args.runs)
    results = []
    for run in runs:
        records = diagnose_run(run.path, args.epochs, batch_size=args.batch_size, seed=args.seed,
                               data_dir=args.data_dir)
        print(f"{run.path}: diagnosed epoch(s) {', '.join(str(r['epoch']) for r in records)} "
              f"into {run.path / 'diagnostics'}")
        results.append((run, records[-1]))
    if args.output:
        print(f"wrote {compare_runs(results, Path(args.output))}")
    elif len(runs) > 1:
        print("add -o DIR to overlay the runs' gradient norms in one figure")
    return 0


def _cmd_sweep(args) -> int:
    from .errors import ConfigError
    from .sweep import load_preset, load_spec, run_sweep

    if bool(args.spec) == bool(args.preset):
        raise ConfigError("give a spec file or --preset NAME (one of them)")
    options = dict(out=args.out, overrides=args.overrides)
    spec = load_preset(args.preset, **options) if args.preset else load_spec(args.spec, **options)
    try:
        run_sweep(spec, workers=args.workers, ray=args.ray, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print("irnn sweep: interrupted; finished epochs are kept (run the same command again to continue)",
              file=sys.stderr)
        return 130
    if not args.dry_run:
        print(f"sweep done; report with: irnn report {spec.out} -o {spec.out / 'report'}")
    return 0


def _cmd_presets(args) -> int:
    from .sweep import list_presets, preset_text

    if args.name:
        print(preset_text(args.name), end="")
        return 0
    for spec in list_presets():
        print(f"{spec.name:<22} {len(spec.runs()):>3} runs  {spec.description}")
    print("run one with: irnn sweep --preset NAME  (print its spec with: irnn presets NAME)")
    return 0


def _cmd_report(args) -> int:
    from .report.report import write_report

    for path in write_report(args.runs, Path(args.output)):
        print(f"wrote {path}")
    return 0


def _cmd_sample(args) -> int:
    from .data.lm import sample_from_run

    print(sample_from_run(args.run, prime=args.prime, length=args.length, temperature=args.temperature,
                          seed=args.seed, checkpoint=args.checkpoint))
    return 0


_COMMANDS = {"train": _cmd_train, "plot": _cmd_plot, "compare": _cmd_compare, "demo": _cmd_demo, "bench": _cmd_bench,
             "diagnose": _cmd_diagnose, "sweep": _cmd_sweep, "presets": _cmd_presets, "report": _cmd_report,
             "sample": _cmd_sample}


if __name__ == "__main__":
    sys.exit(main())
