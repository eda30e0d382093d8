"""PNG figures drawn from the diagnostics JSON records (never from live models).

Each function takes already-loaded epoch records (see :mod:`irnn.diagnostics.runs` for the file
layout) and writes one figure. Curves are labelled by epoch, and by layer when a model has more
than one; a run's figures are redrawn from every ``epoch_*.json`` in its folder each time a new
epoch is diagnosed, so epochs diagnosed during training build up one picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

# Pre-activation fan chart: (lower quantile, upper quantile, opacity); the median is drawn as a line.
_BANDS = ((0.01, 0.99, 0.12), (0.05, 0.95, 0.2), (0.25, 0.75, 0.35))
_MAX_PANELS = 4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _layers(records: Sequence[Dict]) -> List[Tuple[str, Dict]]:
    """``(label, layer record)`` for every epoch and layer, labelled ``epoch E[, layer L]``."""
    out = []
    for record in records:
        layers = record["layers"]
        for index, layer in enumerate(layers):
            out.append((f"epoch {record['epoch']}" + (f", layer {index + 1}" if len(layers) > 1 else ""), layer))
    return out


def _curves(records: Sequence[Dict], key: str) -> List[Tuple[str, np.ndarray]]:
    """``(label, values)`` of the per-step series ``key`` for every epoch and layer."""
    return [(label, np.asarray(layer[key], dtype=float)) for label, layer in _layers(records)]


def _per_step_figure(curves, path: Path, ylabel: str, title: str, log: bool) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, values in curves:
        if log:
            values = np.where(values > 0, values, np.nan)  # a zero has no place on a log axis
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if log else "major")
    ax.legend(fontsize=8)
    return _save(fig, path)


def grad_norm_figure(records: Sequence[Dict], path: Path, title: str) -> Path:
    return _per_step_figure(_curves(records, "grad_norm"), path, "||dLoss/dh_t||", title, log=True)


def hidden_norm_figure(records: Sequence[Dict], path: Path, title: str) -> Path:
    return _per_step_figure(_curves(records, "hidden_norm"), path, "mean ||h_t||", title, log=True)


def units_figure(records: Sequence[Dict], path: Path, title: str) -> Path:
    """Fraction of negative pre-activations per step; the legend gives each epoch's dead fraction."""
    curves = [(f"{label} (dead units {100 * layer['dead_fraction']:.0f}%)",
               np.asarray(layer["negative_fraction_per_step"], dtype=float)) for label, layer in _layers(records)]
    return _per_step_figure(curves, path, "fraction of pre-activations < 0", title, log=False)


def preactivation_figure(records: Sequence[Dict], path: Path, title: str) -> Path:
    """Fan chart of the pre-activation quantiles over time: one row per layer, one column per epoch
    (at most four epochs, spread over the ones diagnosed)."""
    plt = _pyplot()
    picks = [records[int(i)] for i in np.unique(np.linspace(0, len(records) - 1, min(len(records), _MAX_PANELS)))]
    rows = len(picks[0]["layers"])
    fig, axes = plt.subplots(rows, len(picks), figsize=(3.6 * len(picks) + 1, 3.2 * rows + 0.6), dpi=120,
                             squeeze=False, sharey="row")
    for col, record in enumerate(picks):
        for row, layer in enumerate(record["layers"]):
            ax = axes[row][col]
            q = layer["preact_quantiles"]
            values = {round(level, 6): np.asarray(v, dtype=float) for level, v in zip(q["q"], q["values"])}
            t = np.arange(1, len(values[0.5]) + 1)
            for low, high, alpha in _BANDS:
                ax.fill_between(t, values[low], values[high], color="C0", alpha=alpha, lw=0,
                                label=f"{int(100 * low)}-{int(100 * high)}%")
            ax.plot(t, values[0.5], color="C0", lw=1, label="median")
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_title(f"epoch {record['epoch']}" + (f", layer {row + 1}" if rows > 1 else ""), fontsize=9)
            ax.set_xlabel("time step t")
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("pre-activation z_t")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def spectrum_figure(records: Sequence[Dict], path: Path, title: str) -> Path:
    """Left: the largest singular values of W_hh per epoch. Right: spectral radius and largest
    singular value against epoch."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for label, values in _curves(records, "singular_values"):
        left.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=label)
    left.set_xlabel("rank")
    left.set_ylabel("singular value of W_hh")
    left.legend(fontsize=8)
    layers = len(records[0]["layers"])
    epochs = [r["epoch"] for r in records]
    for index in range(layers):
        suffix = f" (layer {index + 1})" if layers > 1 else ""
        right.plot(epochs, [r["layers"][index]["spectral_radius"] for r in records], marker="o",
                   label="spectral radius" + suffix)
        right.plot(epochs, [r["layers"][index]["singular_values"][0] for r in records], marker="s", ls="--",
                   label="largest singular value" + suffix)
    right.axhline(1.0, color="k", lw=0.6)
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def comparison_figure(curves: Sequence[Tuple[str, Sequence[float]]], path: Path, title: str) -> Path:
    """Several runs' ``||dLoss/dh_t||`` curves on one log-scale axis."""
    return _per_step_figure([(label, np.asarray(v, dtype=float)) for label, v in curves], path,
                            "||dLoss/dh_t||", title, log=True)


def settings_figure(groups: Dict[str, Sequence[Sequence[Dict]]], path: Path, title: str) -> Path:
    """Several settings side by side, each over its seeds (``groups``: label -> one list of epoch
    records per seed). One panel per epoch that every seed of every setting has, with the top
    layer's ``||dLoss/dh_t||`` (geometric mean over seeds, band from the lowest to the highest
    seed); a last panel with the top layer's dead-unit fraction against epoch (mean, seeds as dots)."""
    plt = _pyplot()
    by_epoch = {label: [{r["epoch"]: r for r in seed} for seed in seeds] for label, seeds in groups.items()}
    epochs = sorted(set.intersection(*(set(seed) for seeds in by_epoch.values() for seed in seeds)))
    fig, axes = plt.subplots(1, len(epochs) + 1, figsize=(3.8 * (len(epochs) + 1), 3.8), dpi=120, squeeze=False)
    for col, epoch in enumerate(epochs):
        ax = axes[0][col]
        for index, (label, seeds) in enumerate(by_epoch.items()):
            curves = np.log10(np.maximum([seed[epoch]["layers"][-1]["grad_norm"] for seed in seeds], 1e-300))
            t = np.arange(1, curves.shape[1] + 1)
            ax.plot(t, 10 ** curves.mean(axis=0), color=f"C{index}", lw=1, label=f"{label} ({len(seeds)} seeds)")
            if len(seeds) > 1:
                ax.fill_between(t, 10 ** curves.min(axis=0), 10 ** curves.max(axis=0), color=f"C{index}",
                                alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_title(f"epoch {epoch}", fontsize=9)
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("||dLoss/dh_t||")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    for index, (label, seeds) in enumerate(by_epoch.items()):
        dead = np.array([[100 * seed[e]["layers"][-1]["dead_fraction"] for e in epochs] for seed in seeds])
        ax.plot(epochs, dead.mean(axis=0), color=f"C{index}", marker="o", label=label)
        for row in dead:
            ax.scatter(epochs, row, color=f"C{index}", s=10, alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dead units (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("units never active", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


# file name -> drawing function, for one run's folder (names are part of the documented interface)
RUN_FIGURES = {
    "grad_norm.png": grad_norm_figure,
    "hidden_norm.png": hidden_norm_figure,
    "units.png": units_figure,
    "preactivations.png": preactivation_figure,
    "spectrum.png": spectrum_figure,
}
