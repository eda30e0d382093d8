"""The generated tasks (adding, copy) and sequential Fashion-MNIST: generators, metrics, baselines,
and their trip through the trainer, `compare` and `plot` without special cases."""

import json
import math

import numpy as np
import pytest
import torch

from irnn.data import mnist
from irnn.data.synthetic import AddingTask, CopyTask
from irnn.data.tasks import TASKS, make_task
from irnn.errors import ConfigError
from irnn.report import compare_table, load_runs, plot_runs
from irnn.train import TrainConfig, evaluate, train

QUIET = dict(progress=False, log=lambda line: None)


def task(name, **options):
    return make_task(TrainConfig(task=name, **options))


# ------------------------------------------------------------------------------------ adding
def test_adding_sequences_follow_the_definition():
    data = task("adding", seq_len=50, limit_train=300, limit_test=200).load()
    x, y = data.train
    assert x.shape == (300, 50, 2) and x.dtype == torch.float32 and y.shape == (300,)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    # exactly one marker in each half, and the target is the sum of the two marked values
    assert torch.all(markers[:, :25].sum(1) == 1) and torch.all(markers[:, 25:].sum(1) == 1)
    assert torch.allclose((values * markers).sum(1), y)
    assert data.info["seq_len"] == 50 and data.info["n_train"] == 300
    assert (len(data.val[0]), len(data.test[0])) == (200, 200)


def test_adding_odd_length_and_default_length():
    x, _ = task("adding", seq_len=7, limit_train=500, limit_test=10).load().train
    assert torch.all(x[:, :3, 1].sum(1) == 1) and torch.all(x[:, 3:, 1].sum(1) == 1)
    assert task("adding").seq_len == AddingTask.default_seq_len == 200
    with pytest.raises(ConfigError, match="--seq-len must be at least 2"):
        task("adding", seq_len=1)


def test_predicting_one_scores_the_analytic_baseline_of_one_sixth():
    t = task("adding", seq_len=20, limit_train=10)
    data = t.load()
    _, y = data.test  # the default 10,000 test sequences
    total, count = t.metric_sum(torch.ones(len(y), 1), y)
    mse = t.metric_value(total, count)
    # the standard error of the mean of (a + b - 1)^2 over 10,000 sequences is about 0.002
    assert abs(mse - 1 / 6) < 0.008
    assert data.info["baseline"]["test_mse"] == pytest.approx(1 / 6)
    assert t.loss(torch.ones(len(y), 1), y).item() == pytest.approx(mse, rel=1e-5)
    assert t.metric == "mse" and not t.higher_is_better


def test_generated_sets_are_seeded_independent_and_prefix_stable():
    full = task("adding", seq_len=30, limit_train=400, limit_test=100).load()
    short = task("adding", seq_len=30, limit_train=50, limit_test=20).load()
    again = task("adding", seq_len=30, limit_train=400, limit_test=100).load()
    other = task("adding", seq_len=30, limit_train=400, limit_test=100, data_seed=1).load()
    for split in ("train", "val", "test"):
        a, b = getattr(full, split), getattr(short, split)
        assert torch.equal(a[0][:len(b[0])], b[0]) and torch.equal(a[1][:len(b[1])], b[1])
        assert torch.equal(getattr(again, split)[0], a[0])
        assert not torch.equal(getattr(other, split)[0], a[0])
    assert not torch.equal(full.val[0], full.test[0][:len(full.val[0])])  # the splits are different draws


# ------------------------------------------------------------------------------------ copy
def test_copy_sequences_follow_the_definition():
    T = 15
    t = task("copy", seq_len=T, limit_train=100, limit_test=10)
    x, y = t.load().train
    assert x.shape == y.shape == (100, T + 20)
    symbols = x[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert torch.all(x[:, 10:T + 9] == 0) and torch.all(x[:, T + 9] == 9) and torch.all(x[:, T + 10:] == 0)
    assert torch.all(y[:, :T + 10] == 0) and torch.equal(y[:, T + 10:], symbols)
    output, _ = t.forward(t.make_model(), x[:4])
    assert output.shape == (4, T + 20, 9)  # blank + 8 categories at every step


def memoryless_logits(n, T):
    """Blank for sure until the recall, then equal odds among the 8 categories."""
    logits = torch.full((n, T + 20, 9), -1e4)
    logits[:, :T + 10, 0] = 0.0
    logits[:, T + 10:, 1:] = 0.0
    return logits


@pytest.mark.parametrize("T", [10, 100])
def test_copy_memoryless_baseline(T):
    t = task("copy", seq_len=T, limit_train=10, limit_test=2000)
    data = t.load()
    x, y = data.test
    baseline = data.info["baseline"]
    assert baseline["test_loss"] == pytest.approx(10 * math.log(8) / (T + 20))
    assert t.loss(memoryless_logits(len(x), T), y).item() == pytest.approx(baseline["test_loss"], rel=1e-5)
    # accuracy is over the 10 recall steps: a memoryless guess scores 1/8 there
    guess = memoryless_logits(len(x), T)
    guess[:, T + 10:, 1] = 1.0
    total, count = t.metric_sum(guess, y)
    assert count == 10 * len(x)
    assert abs(total / count - 1 / 8) < 0.02 and baseline["test_acc"] == 1 / 8
    perfect = torch.nn.functional.one_hot(y.long(), 9).float() * 50
    assert t.metric_sum(perfect, y)[0] == count


# ------------------------------------------------------------------------------------ through the trainer
def test_adding_and_copy_train_and_report_with_their_metric(tmp_path):
    common = dict(hidden=16, epochs=2, limit_train=256, limit_test=64, batch_size=32, optimizer="adam", lr=3e-3,
                  threads=1)
    train(TrainConfig(task="adding", seq_len=12, **common), tmp_path / "adding", **QUIET)
    train(TrainConfig(task="copy", seq_len=5, model="gru", **common), tmp_path / "copy", **QUIET)

    record = json.loads((tmp_path / "adding" / "config.json").read_text())
    resolved = record["resolved"]
    assert resolved["metric"] == "mse" and resolved["higher_is_better"] is False
    assert resolved["thresholds"] == [0.1, 0.01, 0.001] and resolved["seq_len"] == 12
    assert resolved["baseline"]["test_mse"] == pytest.approx(1 / 6) and resolved["data_seed"] == 0
    line = json.loads((tmp_path / "adding" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_mse", "val_mse", "test_mse"} <= set(line)

    adding_table = compare_table(load_runs([tmp_path / "adding"]))
    assert "final test mse" in adding_table and "epochs to 0.0100" in adding_table
    assert "baseline (predict 1 for every sequence, analytic 1/6): test mse 0.1667" in adding_table
    copy_table = compare_table(load_runs([tmp_path / "copy"]))
    assert "test acc at best val (%)" in copy_table and "epochs to 90.00" in copy_table
    assert "test acc 12.50%, test loss" in copy_table
    for name in ("adding", "copy"):
        assert plot_runs(load_runs([tmp_path / name]), tmp_path / f"{name}.png").stat().st_size > 5_000


def test_seq_len_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="--seq-len does not apply to smnist"):
        task("smnist", seq_len=100)
    with pytest.raises(ConfigError, match="--seq-len must be a positive integer"):
        TrainConfig(task="adding", seq_len=0).validate()


# ------------------------------------------------------------------------------------ Fashion-MNIST
def test_sfmnist_runs_the_mnist_pipeline_on_fashion_mnist(monkeypatch):
    asked = {}
    rng = np.random.default_rng(0)

    def fake_load(data_dir=None, variant="mnist", **kwargs):
        asked["variant"] = variant
        images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
        return mnist.MnistArrays(images, rng.integers(0, 10, 60).astype(np.uint8), images[:20],
                                 rng.integers(0, 10, 20).astype(np.uint8), "fake")

    monkeypatch.setattr(mnist, "load_mnist", fake_load)
    data = task("sfmnist", pixels_per_step=28, val_size=10).load()
    assert asked["variant"] == "fashion" and TASKS["sfmnist"].variant == "fashion"
    assert data.train[0].shape == (50, 28, 28) and data.val[0].shape == (10, 28, 28)
    assert data.info["data_source"] == "fake"


def test_fashion_mnist_missing_from_a_named_folder_is_a_clear_error(tmp_path):
    from irnn.errors import DataError

    with pytest.raises(DataError, match="Fashion-MNIST"):
        train(TrainConfig(task="sfmnist", data_dir=str(tmp_path), epochs=1), tmp_path / "run", **QUIET)


def test_evaluate_uses_the_task_metric():
    t = task("adding", seq_len=6, limit_train=10, limit_test=50)
    data = t.load()
    model = t.make_model()
    loss, metric = evaluate(t, model, data.test, 16, torch.device("cpu"))
    assert loss == pytest.approx(metric, rel=1e-5)  # for adding, the loss is the metric
    assert isinstance(TASKS["copy"](TrainConfig(task="copy")), CopyTask)
