"""``irnn demo``: ELU-IRNN against ReLU-IRNN on a subset of sequential MNIST, in minutes on a laptop CPU.

Both runs share every setting but the activation (and the seed, data and thread count), so the
figure and table show the activation's effect alone. The full-size experiment is the
``smnist`` preset; this is its quick form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..report import compare_table, load_runs, plot_runs
from ..train import TrainConfig, read_run_config, train

# Quick but not trivial: enough data and epochs for the two activations to separate.
DEMO_SETTINGS = dict(task="smnist", model="irnn", hidden=100, epochs=4, batch_size=32, optimizer="rmsprop",
                     lr=1e-4, clip=1.0, limit_train=6000, limit_test=1000, seed=0)


def run_demo(out: Path, *, epochs: Optional[int] = None, limit_train: Optional[int] = None,
             limit_test: Optional[int] = None, data_dir: Optional[str] = None, progress: bool = True) -> Path:
    """Train both runs (resuming any already there), then write ``curves.png`` and ``table.md``."""
    settings = dict(DEMO_SETTINGS, data_dir=data_dir)
    for key, value in (("epochs", epochs), ("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None:
            settings[key] = value
    run_dirs = []
    for act in ("elu", "relu"):
        run_dir = out / f"{act}-irnn"
        config = TrainConfig(act=act, **settings)
        resume = read_run_config(run_dir) is not None
        print(f"== {act}-IRNN -> {run_dir}")
        train(config, run_dir, resume=resume, progress=progress)
        run_dirs.append(run_dir)
    runs = load_runs(run_dirs)
    figure = plot_runs(runs, out / "curves.png", title="Sequential MNIST (subset): ELU vs ReLU IRNN")
    table = compare_table(runs)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"figure: {figure}\ntable: {out / 'table.md'}")
    return figure
