"""The command line: clear one-line errors, and train / plot / compare / demo end to end."""

import subprocess
import sys

import pytest


def irnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irnn.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["train", "--out", "X", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--out", "X", "--act", "swish"], "invalid choice: 'swish'"),
    (["train", "--out", "X", "--hidden", "-5"], "--hidden must be a positive integer"),
    (["train", "--out", "X", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", "--out", "X", "--lr", "nan"], "--lr must be a positive number"),
    (["train", "--out", "X", "--act", "elu", "--act-param", "-1"], "elu alpha must be > 0"),
    (["train", "--out", "X", "--hidden", "ten"], "invalid int value: 'ten'"),
    (["train", "--out", "X", "--data-dir", "no/such/dir"], "no/such/dir"),
    (["train", "--out", "nothing-here", "--resume"], "holds no run to resume"),
    (["plot", "no-such-run", "-o", "x.png"], "does not exist"),
])
def test_bad_values_exit_nonzero_with_one_clear_line(tmp_path, args, message):
    result = irnn(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_resume_into_another_runs_directory_is_refused(tmp_path):
    common = ["--task", "smnist", "--pixels-per-step", "28", "--hidden", "8", "--epochs", "1",
              "--limit-train", "50", "--limit-test", "20", "--quiet"]
    assert irnn("train", "--out", "run", *common, cwd=tmp_path).returncode == 0
    again = irnn("train", "--out", "run", *common, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    other = irnn("train", "--out", "run", "--resume", "--hidden", "16", cwd=tmp_path)
    assert other.returncode == 2 and "hidden=8 there, 16 here" in other.stderr
    # a bare --resume takes the saved settings
    more = irnn("train", "--out", "run", "--resume", "--epochs", "2", "--quiet", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "epoch 2/2" in more.stdout


def test_demo_end_to_end_writes_figure_and_table(tmp_path):
    result = irnn("demo", "--out", "d", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--quiet",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "d"
    assert (out / "curves.png").stat().st_size > 10_000
    table = (out / "table.md").read_text()
    assert "act=elu" in table and "act=relu" in table
    assert (out / "elu-irnn" / "metrics.jsonl").exists() and (out / "relu-irnn" / "metrics.jsonl").exists()

    compare = irnn("compare", "d/elu-irnn", "d/relu-irnn", cwd=tmp_path)
    assert compare.returncode == 0 and "act=elu" in compare.stdout
    plot = irnn("plot", "d", "-o", "fig.png", "--split", "val", cwd=tmp_path)
    assert plot.returncode == 0 and (tmp_path / "fig.png").exists()
