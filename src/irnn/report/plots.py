"""Learning-curve figures (PNG) from run directories."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .runs import Run, differing_settings, run_label


def group_by_setting(runs: Sequence[Run]) -> Dict[str, List[Run]]:
    """Runs that differ only in ``seed`` share a group, labelled by their other differing settings."""
    keys = [k for k in differing_settings(runs) if k != "seed"]
    groups: Dict[str, List[Run]] = defaultdict(list)
    for run in runs:
        groups[run_label(run, keys) if keys else (runs[0].config.get("task", "run"))].append(run)
    return dict(groups)


def plot_runs(runs: Sequence[Run], out: Path, split: str = "test", title: str | None = None,
              metric: str | None = None) -> Path:
    """Metric vs epoch, one curve per setting; seeds of a setting give the mean and a min-max band.

    ``metric`` picks another recorded quantity than the task's metric (e.g. ``"loss"``). A baseline
    the task recorded for the plotted key is drawn as a dashed line; error-like quantities (lower
    is better) get a log axis, where small differences near zero matter.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = metric or runs[0].metric
    key = f"{split}_{metric}"
    lower_is_better = metric == "loss" or (metric == runs[0].metric and not runs[0].higher_is_better)
    scale = 100.0 if metric == "acc" else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, members in sorted(group_by_setting(runs).items()):
        curves = [np.asarray(r.series(key), dtype=float) * scale for r in members]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        stack = np.stack([c[:n] for c in curves])
        epochs = np.arange(1, n + 1)
        mean = stack.mean(0)
        suffix = f" ({len(curves)} seeds)" if len(curves) > 1 else ""
        (line,) = ax.plot(epochs, mean, marker="o" if n < 15 else None, ms=3, label=label + suffix)
        if len(curves) > 1:
            ax.fill_between(epochs, stack.min(0), stack.max(0), color=line.get_color(), alpha=0.2)
    baselines = {r.resolved.get("baseline", {}).get(key) for r in runs}
    if len(baselines) == 1 and None not in baselines:
        ax.axhline(baselines.pop() * scale, color="0.4", ls="--", lw=1, label="baseline (no learning)")
    if lower_is_better and all(v > 0 for r in runs for v in r.series(key)):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {'accuracy (%)' if metric == 'acc' else metric}")
    ax.set_title(title or f"{runs[0].config.get('task', '')}: {split} {metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
