"""The trainer: it learns, resumes bit-exactly after SIGKILL, survives non-finite losses, and its
run directory holds what the docs promise."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from irnn.data.tasks import SequentialMNIST
from irnn.errors import RunDirError, TrainingDiverged
from irnn.train import TrainConfig, read_metrics, train

# Row-by-row MNIST on a subset: 28 steps, so a test trains in seconds.
QUICK = dict(task="smnist", pixels_per_step=28, hidden=64, epochs=3, batch_size=50, lr=3e-3,
             optimizer="adam", limit_train=3000, limit_test=500, threads=1)


def test_small_model_learns(tmp_path):
    history = train(TrainConfig(act="elu", **QUICK), tmp_path / "run", progress=False, log=lambda s: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.6  # chance is 0.1


def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(act="relu", **dict(QUICK, epochs=1)), out, progress=False, log=lambda s: None)
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "best.pt"}
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["act"] == "relu" and record["config"]["lr"] == 3e-3
    assert {"torch", "irnn", "numpy", "python"} <= set(record["versions"])
    assert record["resolved"]["metric"] == "acc" and record["resolved"]["n_train"] == 3000
    (line,) = read_metrics(out)
    for key in ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds", "grad_norm", "seq_per_sec"):
        assert key in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_permutation_seed_is_recorded(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**dict(QUICK, task="pmnist", pixels_per_step=1, hidden=8, epochs=1, limit_train=20,
                             limit_test=20, perm_seed=7)), out, progress=False, log=lambda s: None)
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["perm_seed"] == 7 and record["resolved"]["perm_seed"] == 7
    assert len(record["resolved"]["permutation_head"]) == 8


def _cli(*args):
    return [sys.executable, "-m", "irnn.cli", *args]


def _train_args(out, epochs):
    args = ["train", "--out", str(out), "--quiet", "--epochs", str(epochs)]
    for k, v in QUICK.items():
        if k != "epochs":
            args += ["--" + k.replace("_", "-"), str(v)]
    return args + ["--act", "elu"]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    epochs = 4
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(*_train_args(straight, epochs)), check=True, capture_output=True)

    proc = subprocess.Popen(_cli(*_train_args(killed, epochs)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(killed) if (killed / "metrics.jsonl").exists() else []) < 1:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(read_metrics(killed))
    assert 1 <= done_at_kill < epochs, "the run was not killed mid-way; make its epochs longer"

    subprocess.run(_cli(*_train_args(killed, epochs), "--resume"), check=True, capture_output=True)
    timing = {"seconds", "train_seconds", "seq_per_sec"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert strip(read_metrics(killed)) == strip(read_metrics(straight))
    a = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_rolls_back_with_lower_rate(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = SequentialMNIST.loss
    batches_per_epoch = QUICK["limit_train"] // QUICK["batch_size"]

    def flaky_loss(self, output, target):
        calls["n"] += 1
        loss = original(self, output, target)
        return loss * float("nan") if calls["n"] == batches_per_epoch + 3 else loss  # once, in epoch 2

    monkeypatch.setattr(SequentialMNIST, "loss", flaky_loss)
    logs = []
    history = train(TrainConfig(act="elu", **dict(QUICK, epochs=3)), tmp_path / "run", progress=False, log=logs.append)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["rollbacks"] == 1 and history[1]["lr"] == pytest.approx(QUICK["lr"] * 0.5)
    assert any("rolled back" in line for line in logs)


def test_persistent_non_finite_loss_stops_clearly_and_keeps_finished_epochs(tmp_path, monkeypatch):
    state = {"epoch2": False}
    original = SequentialMNIST.loss

    def broken_after_epoch1(self, output, target):
        loss = original(self, output, target)
        return loss * float("nan") if state["epoch2"] else loss

    monkeypatch.setattr(SequentialMNIST, "loss", broken_after_epoch1)
    out = tmp_path / "run"

    def log(line):
        if line.startswith("epoch 1/"):
            state["epoch2"] = True

    with pytest.raises(TrainingDiverged, match="non-finite.*epochs 1-1 are kept"):
        train(TrainConfig(act="elu", **dict(QUICK, epochs=3, max_rollbacks=2)), out, progress=False, log=log)
    assert [r["epoch"] for r in read_metrics(out)] == [1]


def test_repeated_rollbacks_to_one_checkpoint_keep_lowering_the_rate(tmp_path, monkeypatch):
    # Epoch 2 fails twice, then trains: its rate must be halved twice, not halved from the
    # checkpoint's rate each time (which would replay the failing epoch at the same rate).
    failures = {"left": 2}
    original = SequentialMNIST.loss
    batches_per_epoch = QUICK["limit_train"] // QUICK["batch_size"]
    calls = {"n": 0}

    def failing_twice(self, output, target):
        loss = original(self, output, target)
        if not torch.is_grad_enabled():  # evaluation
            return loss
        calls["n"] += 1
        if calls["n"] > batches_per_epoch and failures["left"]:
            failures["left"] -= 1
            return loss * float("nan")
        return loss

    monkeypatch.setattr(SequentialMNIST, "loss", failing_twice)
    logs = []
    history = train(TrainConfig(act="elu", **dict(QUICK, epochs=2, max_rollbacks=2)), tmp_path / "run",
                    progress=False, log=logs.append)
    assert history[1]["rollbacks"] == 2 and history[1]["lr"] == pytest.approx(QUICK["lr"] * 0.25)
    assert [line.split("rate to ")[1].split(" ")[0] for line in logs if "rolled back" in line] == [
        f"{QUICK['lr'] * 0.5:.3g}", f"{QUICK['lr'] * 0.25:.3g}"]


def test_run_record_names_the_data_source_without_the_home_folder(tmp_path, monkeypatch):
    from conftest import SHARED_DATA

    monkeypatch.setattr(Path, "home", classmethod(lambda cls: SHARED_DATA.parent))
    out = tmp_path / "run"
    train(TrainConfig(act="elu", **dict(QUICK, epochs=1, limit_train=100, limit_test=50)), out, progress=False,
          log=lambda s: None)
    source = json.loads((out / "config.json").read_text())["resolved"]["data_source"]
    assert str(SHARED_DATA.parent) not in source and "~/data" in source


def test_resume_refuses_other_settings_and_missing_runs(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(act="elu", **dict(QUICK, epochs=1, limit_train=100, limit_test=50))
    train(cfg, out, progress=False, log=lambda s: None)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg, out, progress=False, log=lambda s: None)
    with pytest.raises(RunDirError, match="lr=0.003 there, 0.01 here"):
        train(cfg.replace(lr=0.01), out, resume=True, progress=False, log=lambda s: None)
    with pytest.raises(RunDirError, match="no run to resume"):
        train(cfg, tmp_path / "nothing", resume=True, progress=False, log=lambda s: None)
    (out / "checkpoint.pt").unlink()
    with pytest.raises(RunDirError, match="no checkpoint"):
        train(cfg.replace(epochs=2), out, resume=True, progress=False, log=lambda s: None)
    # more epochs on resume is allowed and continues where it stopped
    out2 = tmp_path / "run2"
    train(cfg, out2, progress=False, log=lambda s: None)
    history = train(cfg.replace(epochs=2), out2, resume=True, progress=False, log=lambda s: None)
    assert [r["epoch"] for r in history] == [1, 2]


def test_tensorboard_event_files_hold_the_epoch_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(TrainConfig(act="elu", tensorboard=True, **dict(QUICK, epochs=2, limit_train=300, limit_test=100)), out,
          progress=False, log=lambda s: None)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2]
    assert [e.value for e in events.Scalars("val_acc")] == pytest.approx([r["val_acc"] for r in read_metrics(out)])
