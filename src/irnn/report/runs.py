"""Reading finished or running run directories for plots, tables and reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from ..errors import RunDirError

# Settings that never distinguish one experiment from another in a label.
_NOT_A_SETTING = {"data_dir", "tensorboard", "threads", "eval_batch_size", "device", "diagnose_at"}
# Options only the IRNN layer reads: they say nothing about an LSTM, GRU or tanh-RNN run.
IRNN_ONLY = ("act", "act_param", "recurrent_init", "recurrent_gain", "input_init")


def experiment_settings(config: Dict) -> Dict:
    """The settings that make a run what it is (a ``config.json`` "config" mapping, or part of one).

    Leaves out how and where it ran (threads, device, data folder, ...) and, for models other
    than the IRNN, the IRNN-only options, so that two LSTM runs that differ only in ``act`` count
    as the same experiment.
    """
    drop = set(_NOT_A_SETTING)
    if config.get("model", "irnn") != "irnn":
        drop.update(IRNN_ONLY)
    return {k: v for k, v in config.items() if k not in drop}


@dataclass
class Run:
    """One run directory: its saved config record and per-epoch metrics."""

    path: Path
    config: Dict
    resolved: Dict
    metrics: List[Dict]

    @property
    def metric(self) -> str:
        return self.resolved.get("metric", "acc")

    @property
    def higher_is_better(self) -> bool:
        return self.resolved.get("higher_is_better", True)

    def series(self, key: str) -> List[float]:
        return [m[key] for m in self.metrics if key in m]


def load_run(path) -> Run:
    """Read ``config.json`` and ``metrics.jsonl`` of a run directory."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunDirError(f"{path} is not a run directory (no config.json)")
    try:
        record = json.loads(cfg_path.read_text())
        metrics_path = path / "metrics.jsonl"
        metrics = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()] if metrics_path.exists() else []
    except ValueError as exc:
        raise RunDirError(f"{path}: unreadable run files ({exc})") from exc
    return Run(path, record["config"], record.get("resolved", {}), metrics)


def load_runs(paths: Sequence) -> List[Run]:
    """Load several runs; a folder that holds run folders (a sweep) is expanded."""
    runs = []
    for p in paths:
        p = Path(p)
        if (p / "config.json").is_file():
            runs.append(load_run(p))
        elif p.is_dir():
            children = sorted(c for c in p.rglob("config.json"))
            if not children:
                raise RunDirError(f"{p} holds no run directories")
            runs.extend(load_run(c.parent) for c in children)
        else:
            raise RunDirError(f"{p} does not exist")
    return runs


def differing_settings(runs: Sequence[Run]) -> List[str]:
    """Config keys whose values differ between the runs (what a label must show).

    Among runs an option applies to: ``act`` differs between two IRNNs, not between an IRNN and an LSTM.
    """
    settings = [experiment_settings(r.config) for r in runs]
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({json.dumps(s[k]) for s in settings if k in s}) > 1]


def run_label(run: Run, keys: Sequence[str]) -> str:
    """``act=elu seed=1``-style label from the differing settings (the folder name if none differ).

    Options that do not apply to the run (``act`` of an LSTM) are left out.
    """
    if not keys:
        return run.path.name
    settings = experiment_settings(run.config)
    return " ".join(f"{k}={settings[k]}" for k in keys if k in settings)
