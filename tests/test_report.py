"""`irnn report`: its numbers are those of the metrics files, its confidence intervals are Welch's,
it is deterministic, self-contained in HTML, and picks up diagnostics figures."""

import json
import math
import statistics

import numpy as np
import pytest

from irnn.cli import main
from irnn.report.report import write_report
from irnn.report.stats import betainc, t_quantile, welch_interval
from irnn.train import TrainConfig

THRESHOLDS = [0.9, 0.95, 0.97]


def fake_run(root, name, metrics, resolved=None, **config):
    """A run directory as the trainer leaves it, with chosen numbers (no training needed)."""
    path = root / name
    path.mkdir(parents=True)
    resolved = {"metric": "acc", "higher_is_better": True, "thresholds": THRESHOLDS, **(resolved or {})}
    record = {"config": TrainConfig(**config).to_dict(), "resolved": resolved}
    (path / "config.json").write_text(json.dumps(record))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return path


def acc_curve(test, val, seconds):
    return [{"epoch": i + 1, "train_loss": 1.0, "train_acc": t, "val_acc": v, "test_acc": t, "test_loss": 1 - t,
             "seconds": seconds} for i, (t, v) in enumerate(zip(test, val))]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(3):
        # ELU reaches 90% in epoch 3, 95% in epoch 4 and 97% only with seed 2; its best validation
        # epoch is 3 for seed 0, 4 for the others
        fake_run(root, f"elu-{seed}", acc_curve([0.5, 0.85, 0.92, 0.95 + 0.01 * seed],
                                                [0.5, 0.8, 0.95, 0.94 + 0.02 * seed], 10.0 + seed),
                 task="smnist", act="elu", seed=seed)
        fake_run(root, f"relu-{seed}", acc_curve([0.3, 0.6, 0.8, 0.87 + 0.01 * seed],
                                                 [0.3, 0.6, 0.8, 0.85 + 0.01 * seed], 9.0),
                 task="smnist", act="relu", seed=seed)
    fake_run(root, "lstm-0", acc_curve([0.4, 0.7], [0.4, 0.7], 20.0), task="smnist", model="lstm", seed=0)
    fake_run(root, "gru-0", acc_curve([0.45, 0.75], [0.45, 0.75], 20.0), task="smnist", model="gru", seed=0)
    baseline = {"description": "predict 1 for every sequence, analytic 1/6", "test_mse": 1 / 6}
    for seed in range(2):
        metrics = [{"epoch": e, "train_loss": 0.1, "train_mse": 0.1, "val_mse": v, "test_mse": v * 1.1, "seconds": 2.0}
                   for e, v in enumerate([0.15, 0.05 / (seed + 1), 0.008], start=1)]
        fake_run(root, f"adding-{seed}", metrics, {"metric": "mse", "higher_is_better": False,
                                                   "thresholds": [0.1, 0.01], "seq_len": 50, "baseline": baseline},
                 task="adding", seq_len=50, seed=seed)
    return root


def honest(test, val):
    """Test accuracy at the best-validation epoch (the first such epoch)."""
    return test[int(np.argmax(val))]


def pm(values, scale=100, digits=2):
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def test_report_numbers_equal_those_of_the_metrics_files(sweep, tmp_path):
    md_path, html_path = write_report([sweep], tmp_path / "out")
    md = md_path.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}

    curves = {}
    for name in ("elu", "relu"):
        runs = [[json.loads(l) for l in (sweep / f"{name}-{s}" / "metrics.jsonl").read_text().splitlines()]
                for s in range(3)]
        test = [[r["test_acc"] for r in run] for run in runs]
        val = [[r["val_acc"] for r in run] for run in runs]
        curves[name] = [honest(t, v) for t, v in zip(test, val)]
        row = rows[f"act={name} model=irnn"]
        best_val = pm([max(v) for v in val])
        assert (f"| 3 | 4 ± 0 | {best_val} | {pm([t[-1] for t in test])} | {pm(curves[name])} | "
                f"{pm([max(t) for t in test])} |") in row
    # thresholds: epochs / seconds to reach, over the seeds that did
    elu = rows["act=elu model=irnn"]
    assert "| 3 ± 0 / 33 ± 3 | 4 ± 0 / 44 ± 4 | 4 / 48 (1/3 seeds) |" in elu  # epochs of 10, 11, 12 s
    assert "not reached | not reached | not reached" in rows["act=relu model=irnn"]
    assert "| model=lstm | 1 | 2 | 70.00 | 70.00 | 70.00 | 70.00 |" in md

    # the one-option pairs: elu vs relu with a Welch interval; lstm vs gru has a single seed a side
    diff = statistics.mean(curves["elu"]) - statistics.mean(curves["relu"])
    low, high = welch_interval(curves["elu"], curves["relu"])[1:]
    assert f"| act | elu | relu | model=irnn | {100 * diff:.2f} | [{100 * low:.2f}, {100 * high:.2f}] | 3, 3 |" in md
    assert "| model | gru | lstm | - | 5.00 | n/a (needs 2+ seeds a side) | 1, 1 |" in md

    # the adding section: its own metric, thresholds and baseline
    assert "## adding (T=50)" in md and "test mse (lower is better)" in md
    assert "Baseline (predict 1 for every sequence, analytic 1/6): test mse 0.1667." in md
    adding = rows["all runs"]
    finals = [0.008 * 1.1, 0.008 * 1.1]
    assert f"| 2 | 3 ± 0 | 0.008 ± 0 | {finals[0]:.4g} ± 0 |" in adding and "| 2 ± 0 / 4 ± 0 | 3 ± 0 / 6 ± 0 |" in adding

    # figures: files for the Markdown, embedded in the HTML
    assert "![smnist: test acc per epoch](figures/smnist-test_acc.png)" in md
    assert (tmp_path / "out" / "figures" / "smnist-test_acc.png").stat().st_size > 5_000
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == md.count("![") and 'src="figures' not in page
    assert "<td>act=elu model=irnn</td>" in page


def test_report_is_deterministic(sweep, tmp_path):
    first = write_report([sweep], tmp_path / "a")[0].read_text()
    second = write_report(sorted(sweep.iterdir(), reverse=True), tmp_path / "b")[0].read_text()
    assert first == second
    again = write_report([sweep], tmp_path / "a")
    assert again[0].read_text() == first


def test_diagnostics_figures_are_included(sweep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diag = sweep / "relu-1" / "diagnostics"
    diag.mkdir()
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(diag / "grad_norm.png")
    plt.close(fig)
    (diag / "summary.json").write_text("{}")
    md = write_report([sweep], tmp_path / "out")[0].read_text()
    assert "### Diagnostics" in md and "**act=relu model=irnn**, seed 1 (../sweep/relu-1/diagnostics" in md
    assert "numbers in summary.json" in md
    assert "(figures/diagnostics/smnist-act-relu-model-irnn/grad_norm.png)" in md
    assert (tmp_path / "out" / "figures" / "diagnostics" / "smnist-act-relu-model-irnn" / "grad_norm.png").exists()


def fake_diagnostics(run_dir, dead_by_epoch, grad_ratio, radius=1.0, steps=5):
    """``diagnostics/epoch_NNN.json`` records with chosen numbers (top layer only matters)."""
    diag = run_dir / "diagnostics"
    diag.mkdir()
    for epoch, dead in dead_by_epoch.items():
        layer = {"dead_fraction": dead, "grad_norm_first_over_last": grad_ratio, "spectral_radius": radius,
                 "grad_norm": list(np.geomspace(grad_ratio, 1.0, steps))}
        (diag / f"epoch_{epoch:03d}.json").write_text(json.dumps({"epoch": epoch, "loss": 1.0, "layers": [layer]}))


def test_diagnostics_are_compared_across_settings_over_seeds(sweep, tmp_path):
    for seed in range(3):
        fake_diagnostics(sweep / f"elu-{seed}", {1: 0.0, 4: 0.0}, grad_ratio=1.0 + seed)
    for seed in (0, 2):  # relu-1 has no diagnostics: it is left out, not counted as zero
        fake_diagnostics(sweep / f"relu-{seed}", {1: 0.4 + 0.1 * seed, 2: 0.5, 4: 0.5 + 0.1 * seed}, grad_ratio=0.01,
                         radius=1.1)
    md = write_report([sweep], tmp_path / "out")[0].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| act=")]
    # epochs compared: those every seed of every setting has (1 and 4, not relu's 2)
    assert "| act=elu model=irnn | 1 | 3 | 0 ± 0 | 2 ± 1 | 1.000 ± 0.000 |" in rows
    assert "| act=relu model=irnn | 4 | 2 | 60 ± 14 | 0.01 ± 0 | 1.100 ± 0.000 |" in rows
    assert not any(row.startswith("| act=relu model=irnn | 2 |") for row in rows)
    assert (tmp_path / "out" / "figures" / "diagnostics" / "smnist-compared.png").stat().st_size > 1000
    assert "(figures/diagnostics/smnist-compared.png)" in md


def test_runs_without_a_finished_epoch_are_named_not_summarised(sweep, tmp_path):
    fake_run(sweep, "started", [], task="smnist", act="tanh", seed=0)
    md = write_report([sweep], tmp_path / "out")[0].read_text()
    assert "Left out, no finished epoch yet: ../sweep/started." in md
    assert "act=tanh" not in md


def test_cli_report(sweep, tmp_path, capsys):
    assert main(["report", str(sweep), "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "report.html" in out


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389),
                                          (30, 2.0422725), (1e7, 1.9599640)])
def test_t_quantiles_match_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_welch_interval_and_incomplete_beta():
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - (0.6^4 + 4 * 0.4 * 0.6^3)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    diff, low, high = welch_interval(a, b)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    assert (diff, low, high) == pytest.approx((-3.0, -3.0 - half, -3.0 + half))
    assert 2.7 < t_quantile(0.975, df) < 2.8  # df ~ 4.1
    assert welch_interval([1.0], [1.0, 2.0]) is None
    assert welch_interval([1.0, 1.0], [2.0, 2.0]) == (-1.0, -1.0, -1.0)
