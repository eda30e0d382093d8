"""Diagnostics of run directories: which weights, which batch, which files.

Files (the names are stable: ``irnn report`` and users' scripts read them)::

    RUN_DIR/checkpoints/epoch_NNN.pt     model weights kept at the epochs of ``--diagnose-at``
    RUN_DIR/diagnostics/epoch_NNN.json   every number for the model after epoch NNN
    RUN_DIR/diagnostics/summary.json     the scalar numbers of every diagnosed epoch, and the file names
    RUN_DIR/diagnostics/grad_norm.png    ||dLoss/dh_t|| against t (log scale), one curve per epoch
    RUN_DIR/diagnostics/hidden_norm.png  mean ||h_t|| against t (log scale)
    RUN_DIR/diagnostics/units.png        fraction of negative pre-activations against t; dead units
    RUN_DIR/diagnostics/preactivations.png  pre-activation quantiles against t
    RUN_DIR/diagnostics/spectrum.png     singular values and spectral radius of W_hh
    DIR/grad_norm_compare.png, DIR/compare.json   ``irnn diagnose RUN_A RUN_B ... -o DIR``

Epoch 0 is the initial model (``checkpoint.pt`` of a run that has not finished an epoch yet).

The batch is fixed: ``batch_size`` sequences drawn without replacement from the run's validation
split by a generator seeded with ``seed`` (indices sorted, and recorded in every epoch file), so
every epoch and every run of the same task is measured on the same sequences. A language model's
validation split is one token stream: the batch is then ``batch_size`` windows of ``--bptt``
tokens at seeded start offsets (the recorded indices), each run from a zero state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError, RunDirError
from ..models.elman_net import elman_net
from ..train.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from .compute import gradient_flow, layer_summary
from .figures import RUN_FIGURES, comparison_figure

DIAGNOSTICS_DIR = "diagnostics"
KEPT_DIR = "checkpoints"
SUMMARY_FILE = "summary.json"
COMPARE_FIGURE, COMPARE_FILE = "grad_norm_compare.png", "compare.json"
DEFAULT_BATCH, DEFAULT_SEED = 100, 0
# The per-epoch numbers copied into summary.json (per layer), besides the per-step curves.
_SCALARS = ("dead_fraction", "dead_fraction_per_sequence", "negative_fraction", "spectral_radius",
            "grad_norm_first_over_last")


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.json"


def kept_weights_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


# ---------------------------------------------------------------------------- epoch selection
def parse_epoch_spec(spec: str, epochs: int) -> List[int]:
    """The epochs of ``--diagnose-at``: comma-separated numbers, ``last``, ``every:K``.

    ``"1,10,last"`` with 50 epochs gives ``[1, 10, 50]``; ``"every:20"`` gives ``[20, 40]``.
    """
    chosen = set()
    for item in (part.strip() for part in str(spec).split(",")):
        if item == "last":
            chosen.add(epochs)
        elif item.startswith("every:") and item[6:].isdigit() and int(item[6:]) >= 1:
            chosen.update(range(int(item[6:]), epochs + 1, int(item[6:])))
        elif item.isdigit() and 1 <= int(item) <= epochs:
            chosen.add(int(item))
        else:
            raise ConfigError(f"--diagnose-at: {item!r} is not an epoch between 1 and {epochs}, 'last' or "
                              "'every:K' (e.g. --diagnose-at 1,10,last)")
    return sorted(chosen)


def available_weights(run_dir: Path) -> Tuple[Dict[int, Path], Dict[str, int]]:
    """``({epoch: weights file}, {"last": epoch, "best": epoch})`` of a run directory.

    Kept epochs come from ``checkpoints/``, the last finished epoch from ``checkpoint.pt`` and
    the best validation epoch from ``best.pt`` (its epoch read from ``metrics.jsonl``).
    """
    from ..report.runs import load_run

    run = load_run(run_dir)
    files: Dict[int, Path] = {}
    aliases: Dict[str, int] = {}
    for path in sorted((run_dir / KEPT_DIR).glob("epoch_*.pt")):
        files[int(path.stem.split("_")[1])] = path
    if (run_dir / "checkpoint.pt").is_file():
        aliases["last"] = len(run.metrics)
        files.setdefault(aliases["last"], run_dir / "checkpoint.pt")
    scores = [(m["epoch"], m.get(f"val_{run.metric}")) for m in run.metrics if m.get(f"val_{run.metric}") is not None]
    if (run_dir / "best.pt").is_file() and scores:
        pick = max if run.higher_is_better else min
        best_score = pick(score for _, score in scores)
        aliases["best"] = next(epoch for epoch, score in scores if score == best_score)
        files.setdefault(aliases["best"], run_dir / "best.pt")
    return files, aliases


def choose_epochs(run_dir: Path, requested: Optional[Sequence[str]]) -> List[Tuple[int, Path]]:
    """The ``(epoch, weights file)`` pairs to diagnose: ``requested`` (numbers, ``last``, ``best``), or
    by default every kept epoch and the last one."""
    files, aliases = available_weights(run_dir)
    if not files:
        raise RunDirError(f"{run_dir} holds no weights to diagnose (no checkpoint.pt, best.pt or {KEPT_DIR}/)")
    if not requested:
        kept_and_last = [(e, p) for e, p in sorted(files.items()) if p.name != "best.pt"]
        return kept_and_last or sorted(files.items())
    chosen = {}
    for token in requested:
        epoch = aliases.get(token, int(token) if str(token).isdigit() else None)
        if epoch not in files:
            known = ", ".join(f"{e}" + "".join(f" ({a})" for a, v in aliases.items() if v == e) for e in sorted(files))
            raise RunDirError(f"{run_dir}: no weights for epoch {token!r}; available: {known}. "
                              "Train with --diagnose-at to keep the weights of other epochs")
        chosen[epoch] = files[epoch]
    return sorted(chosen.items())


# ---------------------------------------------------------------------------- the measurement
@dataclass
class FixedBatch:
    """The sequences every diagnosis of a run is measured on. ``indices`` are sequence numbers, or
    for a token stream the start offsets of windows of ``window`` tokens."""

    x: torch.Tensor
    y: torch.Tensor
    indices: List[int]
    seed: int
    window: Optional[int] = None

    def describe(self) -> Dict:
        extra = {} if self.window is None else {"window": self.window}
        return {"split": "val", "size": len(self.indices), "seed": self.seed, "indices": self.indices, **extra}


def fixed_batch(split, size: int, seed: int, window: Optional[int] = None) -> FixedBatch:
    """``size`` sequences of ``split`` picked by a generator seeded with ``seed`` (not the global RNG,
    so diagnosing during training changes nothing about the training run).

    A split whose inputs are one 1-D token stream gives ``size`` windows of ``window`` tokens.
    """
    if size < 1:
        raise ConfigError(f"the diagnostic batch size must be a positive integer (got {size})")
    x, y = split
    generator = torch.Generator().manual_seed(seed)
    if x.dim() > 1:
        indices = torch.randperm(len(x), generator=generator)[:size].sort().values
        return FixedBatch(x[indices], y[indices], indices.tolist(), seed)
    if window is None or not 1 <= window <= len(x):
        raise ConfigError(f"diagnosing a token stream of {len(x)} tokens needs a window length between 1 and "
                          f"that (got {window})")
    starts = torch.randperm(len(x) - window + 1, generator=generator)[:size].sort().values
    positions = starts[:, None] + torch.arange(window)
    return FixedBatch(x[positions], y[positions], starts.tolist(), seed, window)


def diagnose_model(model: nn.Module, loss_fn: Callable, batch: FixedBatch) -> Dict:
    """Every number for ``model`` on ``batch`` (see :mod:`irnn.diagnostics.compute`).

    The model is only read: its weights are copied to float64, no gradient lands on them, and
    neither its mode nor the global random state changes.
    """
    net = elman_net(model, "irnn diagnose")
    device = net.layers[0].weight_hh.device
    y = batch.y.to(device)
    loss, traces = gradient_flow(net, batch.x.to(device), y.double() if y.is_floating_point() else y, loss_fn)
    return {"loss": loss, "time_steps": int(traces[0].pre.shape[0]), "batch": batch.describe(),
            "layers": [layer_summary(trace, layer) for trace, layer in zip(traces, net.layers)]}


# ---------------------------------------------------------------------------- files
def write_records(diag_dir: Path, records: Sequence[Dict], title: str) -> None:
    """Write epoch records, then redraw the folder's figures and summary from *all* its epochs
    (so epochs diagnosed at different times end up in one picture)."""
    for record in records:
        atomic_write_json(Path(diag_dir) / epoch_file(record["epoch"]), record)
    refresh_folder(diag_dir, title)


def load_epoch_records(diag_dir: Path) -> List[Dict]:
    """Every ``epoch_NNN.json`` of a diagnostics folder, in epoch order."""
    return [json.loads(p.read_text()) for p in sorted(Path(diag_dir).glob("epoch_*.json"))]


def refresh_folder(diag_dir: Path, title: str) -> None:
    """Redraw every figure and rewrite ``summary.json`` from the folder's epoch records."""
    records = load_epoch_records(diag_dir)
    for name, draw in RUN_FIGURES.items():
        draw(records, Path(diag_dir) / name, title)
    atomic_write_json(Path(diag_dir) / SUMMARY_FILE, {
        "title": title,
        "epochs": [r["epoch"] for r in records],
        "records": [epoch_file(r["epoch"]) for r in records],
        "figures": list(RUN_FIGURES),
        "per_epoch": [{"epoch": r["epoch"], "loss": r["loss"], "source": r.get("source"),
                       "layers": [{**{k: layer[k] for k in _SCALARS},
                                   "largest_singular_value": layer["singular_values"][0],
                                   "hidden_norm_last": layer["hidden_norm"][-1]} for layer in r["layers"]]}
                      for r in records],
    })


def _title(run_dir: Path, config) -> str:
    model = f"{config.act} IRNN" if config.model == "irnn" else config.model.upper()
    return f"{Path(run_dir).name}: {model}-{config.hidden} on {config.task}"


# ---------------------------------------------------------------------------- entry points
class TrainingDiagnostics:
    """The trainer's ``--diagnose-at`` hook: at the chosen epochs, keep the weights in
    ``checkpoints/`` and write the diagnostics into ``diagnostics/``."""

    def __init__(self, config, task, data, out: Path, log: Callable[[str], None]):
        self.epochs = set(parse_epoch_spec(config.diagnose_at, config.epochs))
        self.loss_fn, self.out, self.log = task.loss, Path(out), log
        self.batch = fixed_batch(data.val, DEFAULT_BATCH, DEFAULT_SEED, window=config.bptt)
        self.title = _title(out, config)

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch not in self.epochs:
            return
        weights = self.out / KEPT_DIR / kept_weights_file(epoch)
        save_checkpoint(weights, model.state_dict())
        record = {"epoch": epoch, "source": f"{KEPT_DIR}/{weights.name}", **diagnose_model(model, self.loss_fn, self.batch)}
        write_records(self.out / DIAGNOSTICS_DIR, [record], self.title)
        self.log(f"epoch {epoch}: diagnostics written to {self.out / DIAGNOSTICS_DIR}")


def training_diagnostics(config, task, data, out: Path, log: Callable[[str], None]) -> Optional[TrainingDiagnostics]:
    """The hook the trainer calls after every epoch, or None without ``--diagnose-at``."""
    return None if config.diagnose_at is None else TrainingDiagnostics(config, task, data, out, log)


def diagnose_run(run_dir, epochs: Optional[Sequence[str]] = None, batch_size: int = DEFAULT_BATCH,
                 seed: int = DEFAULT_SEED, data_dir: Optional[str] = None) -> List[Dict]:
    """Diagnose the chosen epochs of one run into ``RUN_DIR/diagnostics/``; return their records."""
    from ..data.tasks import make_task
    from ..train.loop import read_run_config

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if config is None:
        raise RunDirError(f"{run_dir} is not a run directory (no config.json)")
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    chosen = choose_epochs(run_dir, epochs)
    task = make_task(config)
    batch = fixed_batch(task.load().val, batch_size, seed, window=config.bptt)
    title = _title(run_dir, config)
    records = []
    for epoch, path in chosen:
        model = task.make_model()
        model.load_state_dict(_model_weights(path))
        records.append({"epoch": epoch, "source": str(path.relative_to(run_dir)),
                        **diagnose_model(model, task.loss, batch)})
    write_records(run_dir / DIAGNOSTICS_DIR, records, title)
    return records


def _model_weights(path: Path) -> Dict:
    """The model state dict in a weights file: ``checkpoint.pt`` wraps it with the trainer's state,
    ``best.pt`` and the kept epochs hold it bare."""
    state = load_checkpoint(path)
    return state["model"] if "optimizer" in state else state


def compare_runs(results: Sequence[Tuple[object, Dict]], out_dir: Path) -> Path:
    """Overlay the top layer's ``||dLoss/dh_t||`` of several runs (one record each) in ``out_dir``.

    ``results`` pairs each :class:`irnn.report.runs.Run` with the epoch record to show; runs are
    labelled by the settings that differ between them.
    """
    from ..report.runs import differing_settings, run_label

    runs = [run for run, _ in results]
    # Where diagnostics were taken says nothing about the experiment; keep it out of the labels.
    keys = [k for k in differing_settings(runs) if k != "diagnose_at"]
    curves, entries = [], []
    for run, record in results:
        label = f"{run_label(run, keys)} (epoch {record['epoch']})"
        top = record["layers"][-1]
        curves.append((label, top["grad_norm"]))
        entries.append({"run": str(run.path), "label": label, "epoch": record["epoch"], "loss": record["loss"],
                        "grad_norm": top["grad_norm"], **{k: top[k] for k in _SCALARS}})
    out_dir = Path(out_dir)
    figure = comparison_figure(curves, out_dir / COMPARE_FIGURE, "how far back the gradient reaches")
    atomic_write_json(out_dir / COMPARE_FILE, {"figure": COMPARE_FIGURE, "runs": entries})
    return figure
