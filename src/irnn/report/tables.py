"""Comparison tables of runs: final and best scores, epochs to reach thresholds, time."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from .runs import Run, differing_settings, run_label

DEFAULT_THRESHOLDS = {"acc": (0.90, 0.95, 0.97)}


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
    return out


def compare_table(runs: Sequence[Run], thresholds: Optional[Sequence[float]] = None) -> str:
    """A Markdown table, one row per run."""
    if not runs:
        return "(no runs)"
    m = runs[0].metric
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS.get(m, ())
    keys = differing_settings(runs)
    pct = (lambda v: "-" if v is None else f"{100 * v:.2f}") if m == "acc" else (lambda v: "-" if v is None else f"{v:.4f}")
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
    return "\n".join(lines)
