"""A 2-run sweep through a local Ray head that the test starts (and stops) itself."""

import subprocess
import sys

import pytest

from irnn.train import read_metrics

SPEC = """
out = "runs"
seeds = 2

[base]
task = "adding"
seq_len = 10
hidden = 8
epochs = 2
limit_train = 128
limit_test = 32
"""


@pytest.fixture
def ray_head(monkeypatch):
    """A one-node Ray cluster with 2 CPUs, on the loopback interface only; yields its address."""
    # Ray's single-machine mode: it binds to 127.0.0.1 instead of the machine's network address.
    # Read when ray is imported, so set before; the sweep's own driver process inherits it.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_two_run_sweep_through_a_local_ray_head(tmp_path, ray_head):
    (tmp_path / "s.toml").write_text(SPEC)
    command = [sys.executable, "-m", "irnn.cli", "sweep", "s.toml", "--ray", ray_head]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"2 to start (Ray cluster {ray_head}, 1 CPU(s) per run)" in result.stdout
    runs = tmp_path / "runs"
    for seed in (0, 1):
        # the same run-directory layout as the local backend
        run = runs / f"seed={seed}"
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
        assert {"config.json", "checkpoint.pt", "best.pt", "train.log"} <= {p.name for p in run.iterdir()}
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "2 finished, 0 to resume, 0 to start" in again.stdout


def test_an_unreachable_cluster_is_one_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    from irnn.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SPEC)
    assert main(["sweep", "s.toml", "--ray", "127.0.0.1:1"]) == 2  # nothing listens on port 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach a Ray cluster at '127.0.0.1:1'" in err[0]
