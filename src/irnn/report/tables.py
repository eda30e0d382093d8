"""Comparison tables of runs: final and best scores, epochs to reach thresholds, time."""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence

from .runs import Run, differing_settings, run_label

# For runs recorded before tasks declared their thresholds (see ``Task.thresholds``).
DEFAULT_THRESHOLDS = {"acc": (0.90, 0.95, 0.97)}


def default_thresholds(run: Run) -> Sequence[float]:
    """The thresholds the run's task declared when it was trained, else the metric's defaults."""
    if "thresholds" in run.resolved:
        return tuple(run.resolved["thresholds"])
    return DEFAULT_THRESHOLDS.get(run.metric, ())


def format_value(metric: str, value: Optional[float]) -> str:
    """A metric value as tables show it: accuracies in percent, anything else to four decimals."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if metric == "acc" else f"{value:.4f}"


def baseline_lines(runs: Sequence[Run]) -> List[str]:
    """One line per distinct baseline the runs' tasks recorded (what a model that learned nothing scores)."""
    lines: List[str] = []
    for run in runs:
        baseline = run.resolved.get("baseline")
        if not baseline:
            continue
        scores = []
        for key, value in sorted(baseline.items()):
            if key != "description":  # the others are "<split>_<metric>" keys, e.g. test_mse
                metric = key.split("_", 1)[1]
                scores.append(f"{key.replace('_', ' ')} {format_value(metric, value)}{'%' if metric == 'acc' else ''}")
        line = f"baseline ({baseline.get('description', 'no learning')}): {', '.join(scores)}"
        if line not in lines:
            lines.append(line)
    return lines


def summarize_run(run: Run, thresholds: Sequence[float] = ()) -> Dict:
    """Numbers for one run. ``test_at_best_val`` is the honest score (model chosen on validation)."""
    m = run.metric
    better = max if run.higher_is_better else min
    recs = run.metrics
    if not recs:
        return {"epochs": 0}
    best_val = better(recs, key=lambda r: r[f"val_{m}"])
    best_test = better(recs, key=lambda r: r[f"test_{m}"])
    out = {
        "epochs": len(recs),
        f"final_test_{m}": recs[-1][f"test_{m}"],
        f"best_val_{m}": best_val[f"val_{m}"],
        f"test_{m}_at_best_val": best_val[f"test_{m}"],
        "best_val_epoch": best_val["epoch"],
        f"best_test_{m}": best_test[f"test_{m}"],
        "best_test_epoch": best_test["epoch"],
        "seconds": sum(r["seconds"] for r in recs),
    }
    for t in thresholds:
        reached = [r for r in recs if (r[f"test_{m}"] >= t if run.higher_is_better else r[f"test_{m}"] <= t)]
        out[f"epochs_to_{t:g}"] = reached[0]["epoch"] if reached else None
        # wall time until the end of that epoch (training and evaluation)
        out[f"seconds_to_{t:g}"] = sum(r["seconds"] for r in recs[:reached[0]["epoch"]]) if reached else None
    return out


def compare_table(runs: Sequence[Run], thresholds: Optional[Sequence[float]] = None) -> str:
    """A Markdown table, one row per run."""
    if not runs:
        return "(no runs)"
    m = runs[0].metric
    if thresholds is None:
        thresholds = default_thresholds(runs[0])
    keys = differing_settings(runs)
    pct = functools.partial(format_value, m)
    unit = " (%)" if m == "acc" else ""
    head = ["run", "epochs", f"final test {m}{unit}", f"test {m} at best val{unit}", f"best test {m}{unit} (epoch)"]
    head += [f"epochs to {pct(t)}" for t in thresholds] + ["time (s)"]
    rows: List[List[str]] = []
    for run in runs:
        s = summarize_run(run, thresholds)
        if not s["epochs"]:
            rows.append([run_label(run, keys), "0"] + ["-"] * (len(head) - 2))
            continue
        row = [run_label(run, keys), str(s["epochs"]), pct(s[f"final_test_{m}"]), pct(s[f"test_{m}_at_best_val"]),
               f"{pct(s[f'best_test_{m}'])} ({s['best_test_epoch']})"]
        row += ["-" if s[f"epochs_to_{t:g}"] is None else str(s[f"epochs_to_{t:g}"]) for t in thresholds]
        row.append(f"{s['seconds']:.0f}")
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    baselines = baseline_lines(runs)
    if baselines:
        lines += [""] + baselines
    return "\n".join(lines)
