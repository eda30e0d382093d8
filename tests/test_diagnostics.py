"""Diagnostics: dLoss/dh_t agrees with finite differences, dead units are counted as defined,
and `irnn diagnose` / `--diagnose-at` write the documented files without touching the training run."""

import itertools
import json

import pytest
import torch
from torch import nn

from irnn import IRNN
from irnn.cli import main
from irnn.diagnostics import diagnose_model, fixed_batch, gradient_flow, layer_summary, parse_epoch_spec, unroll
from irnn.errors import ConfigError
from irnn.models.elman_net import elman_net
from irnn.models.sequence import SequenceModel
from irnn.train import TrainConfig, read_metrics, train

cross_entropy = nn.functional.cross_entropy


def tiny_classifier(act, layers=1, hidden=3, per_step=False, recurrent="irnn", seed=0):
    torch.manual_seed(seed)
    if recurrent == "irnn":
        rec = IRNN(2, hidden, layers, act, batch_first=True, recurrent_init="orthogonal", recurrent_gain=0.9,
                   bias_init="uniform")
    else:
        rec = nn.RNN(2, hidden, layers, nonlinearity=act, batch_first=True)
    return SequenceModel(rec, 3, per_step=per_step).double()


@pytest.mark.parametrize("act, recurrent, per_step", [("relu", "irnn", False), ("elu", "irnn", True),
                                                      ("tanh", "rnn", False)])
def test_the_diagnostic_unroll_reproduces_the_model(act, recurrent, per_step):
    model = tiny_classifier(act, layers=2, per_step=per_step, recurrent=recurrent)
    x = torch.randn(4, 6, 2, dtype=torch.float64)
    output, pres, states = unroll(elman_net(model, "test"), x)
    torch.testing.assert_close(output, model(x), rtol=1e-10, atol=1e-12)
    assert len(pres) == len(states) == 2 and states[1].shape == (6, 4, 3)


@pytest.mark.parametrize("act", ["elu", "relu"])
def test_gradient_norms_match_central_finite_differences(act):
    """Perturb every coordinate of every h_t (through the zero offsets) and difference the loss."""
    model = tiny_classifier(act, layers=2)
    net = elman_net(model, "test")
    x, y = torch.randn(2, 5, 2, dtype=torch.float64), torch.tensor([0, 2])
    _, traces = gradient_flow(net, x, y, cross_entropy)

    eps = 1e-6
    zeros = [torch.zeros(5, 2, 3, dtype=torch.float64) for _ in net.layers]

    def loss_with(layer, index, delta):
        offsets = [z.clone() for z in zeros]
        offsets[layer][index] = delta
        return float(cross_entropy(unroll(net, x, offsets)[0], y))

    for layer, trace in enumerate(traces):
        numeric = torch.zeros_like(trace.grad)
        for index in itertools.product(*map(range, numeric.shape)):
            numeric[index] = (loss_with(layer, index, eps) - loss_with(layer, index, -eps)) / (2 * eps)
        torch.testing.assert_close(trace.grad, numeric, rtol=1e-5, atol=1e-9)
        summary = layer_summary(trace, net.layers[layer])
        expected = numeric.flatten(1).norm(dim=1)
        torch.testing.assert_close(torch.tensor(summary["grad_norm"], dtype=torch.float64), expected,
                                   rtol=1e-5, atol=1e-9)
    # The last layer's last state feeds the read-out directly; earlier states only through W_hh.
    assert traces[-1].grad[-1].abs().sum() > 0


def test_dead_units_match_a_hand_built_network():
    """Four ReLU units on inputs in [0, 1]:

    unit 0: z = x + 0.1 > 0                    alive
    unit 1: z = -x - 0.1 + 0.5 h < 0            dead (on every sequence)
    unit 2: z = x - 5 + 0.5 h < 0               dead (the input never reaches 5)
    unit 3: z = x - 0.5                         off for the first sequence (all x < 0.5),
                                                on once in the second (x = 0.9 at step 2)
    """
    rec = IRNN(1, 4, activation="relu", batch_first=True)
    model = SequenceModel(rec, 2).double()
    with torch.no_grad():
        rec.weight_ih_l0.copy_(torch.tensor([[1.0], [-1.0], [1.0], [1.0]]))
        rec.bias_ih_l0.copy_(torch.tensor([0.1, -0.1, -5.0, -0.5]))
        rec.bias_hh_l0.zero_()
        rec.weight_hh_l0.copy_(torch.diag(torch.tensor([0.5, 0.5, 0.5, 0.0])))
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.9, 0.2, 0.1]], dtype=torch.float64).unsqueeze(-1)
    _, traces = gradient_flow(elman_net(model, "test"), x, torch.tensor([0, 1]), cross_entropy)
    summary = layer_summary(traces[0], elman_net(model, "test").layers[0])
    assert summary["dead_units"] == [1, 2]
    assert summary["dead_fraction"] == 0.5
    assert summary["dead_fraction_per_sequence"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    # units 1 and 2 always negative, unit 3 negative in 7 of 8 steps, unit 0 never: 23 of 32
    assert summary["negative_fraction"] == pytest.approx(23 / 32)
    assert summary["spectral_radius"] == pytest.approx(0.5)
    assert summary["singular_values"] == pytest.approx([0.5, 0.5, 0.5, 0.0])
    # A dead ReLU unit passes no gradient: dL/dh_t of units 1 and 2 reaches them only through
    # the read-out at the last step, never through the recurrence.
    assert torch.all(traces[0].grad[:-1, :, 1:3] == 0)


def test_epoch_spec():
    assert parse_epoch_spec("1,10,last", 50) == [1, 10, 50]
    assert parse_epoch_spec("every:20, 5", 50) == [5, 20, 40]
    for bad in ("0", "51", "first", "every:0", "1;2"):
        with pytest.raises(ConfigError, match="--diagnose-at"):
            parse_epoch_spec(bad, 50)


def test_bad_diagnose_at_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "5", "--diagnose-at", "1,9"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--diagnose-at: '9' is not an epoch between 1 and 5" in line


def test_fixed_batch_is_seeded_and_leaves_the_global_rng_alone():
    split = (torch.arange(50).float().reshape(50, 1, 1), torch.arange(50))
    state = torch.get_rng_state()
    a, b = fixed_batch(split, 10, seed=3), fixed_batch(split, 10, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.indices == b.indices == sorted(a.indices) and len(set(a.indices)) == 10
    assert a.indices != fixed_batch(split, 10, seed=4).indices
    assert torch.equal(a.y, torch.tensor(a.indices))


def test_lstm_is_refused_clearly():
    model = SequenceModel(nn.LSTM(2, 4, batch_first=True), 3)
    batch = fixed_batch((torch.randn(5, 4, 2), torch.zeros(5, dtype=torch.long)), 5, 0)
    with pytest.raises(ConfigError, match="irnn diagnose supports .* LSTM 'recurrent' does not fit"):
        diagnose_model(model, cross_entropy, batch)


# ---------------------------------------------------------------------------- end to end
TINY = dict(task="smnist", pixels_per_step=28, hidden=8, epochs=3, batch_size=50, lr=3e-3, optimizer="adam",
            limit_train=200, limit_test=60, threads=1)
RUN_FILES = {"summary.json", "grad_norm.png", "hidden_norm.png", "units.png", "preactivations.png", "spectrum.png"}


def test_diagnose_at_writes_files_and_does_not_change_the_run(tmp_path):
    plain = train(TrainConfig(**TINY), tmp_path / "plain", progress=False, log=lambda s: None)
    logs = []
    out = tmp_path / "diag"
    diagnosed = train(TrainConfig(**TINY, diagnose_at="1,last"), out, progress=False, log=logs.append)
    timing = {"seconds", "train_seconds", "seq_per_sec"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in diagnosed] == \
           [{k: v for k, v in r.items() if k not in timing} for r in plain]
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    assert {p.name for p in (out / "checkpoints").iterdir()} == {"epoch_001.pt", "epoch_003.pt"}
    assert {p.name for p in (out / "diagnostics").iterdir()} == RUN_FILES | {"epoch_001.json", "epoch_003.json"}
    record = json.loads((out / "diagnostics" / "epoch_003.json").read_text())
    (layer,) = record["layers"]
    assert record["epoch"] == 3 and record["time_steps"] == 28 and record["batch"]["size"] == 60
    assert len(layer["grad_norm"]) == len(layer["hidden_norm"]) == 28 and len(layer["singular_values"]) == 8
    assert len(layer["preact_quantiles"]["values"]) == len(layer["preact_quantiles"]["q"])
    summary = json.loads((out / "diagnostics" / "summary.json").read_text())
    assert summary["epochs"] == [1, 3] and summary["records"] == ["epoch_001.json", "epoch_003.json"]
    assert any("diagnostics written" in line for line in logs)


def test_irnn_diagnose_cli_single_runs_and_comparison(tmp_path, capsys):
    relu, elu = tmp_path / "relu", tmp_path / "elu"
    train(TrainConfig(**dict(TINY, epochs=2), act="relu", diagnose_at="1"), relu, progress=False, log=lambda s: None)
    train(TrainConfig(**dict(TINY, epochs=1), act="elu"), elu, progress=False, log=lambda s: None)

    assert main(["diagnose", str(relu), "--epochs", "1", "best", "--batch-size", "20"]) == 0
    record = json.loads((relu / "diagnostics" / "epoch_001.json").read_text())
    assert record["batch"]["size"] == 20 and record["source"] == "checkpoints/epoch_001.pt"

    assert main(["diagnose", str(relu), str(elu), "-o", str(tmp_path / "cmp")]) == 0
    compare = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["epoch"] for r in compare["runs"]] == [2, 1]  # each run's last epoch
    assert [r["label"].split()[0] for r in compare["runs"]] == ["act=relu", "act=elu"]
    assert (tmp_path / "cmp" / "grad_norm_compare.png").stat().st_size > 0
    assert (elu / "diagnostics" / "epoch_001.json").is_file()

    assert main(["diagnose", str(elu), "--epochs", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no weights for epoch '7'; available: 1 (last) (best)" in err[0]


def test_language_model_trains_with_path_sgd_and_is_diagnosed_on_stream_windows(tmp_path):
    """The LanguageModel (one-hot input, per-step read-out, a token stream as validation split):
    Path-SGD reads its structure and sequence length, the diagnostics cut bptt-long windows."""
    config = TrainConfig(task="shakespeare", model="irnn", act="relu", hidden=16, bptt=20, batch_size=8,
                         optimizer="pathsgd", lr=0.05, epochs=2, limit_train=5000, limit_test=2000, threads=1,
                         diagnose_at="last")
    history = train(config, tmp_path / "lm", progress=False, log=lambda s: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    record = json.loads((tmp_path / "lm" / "diagnostics" / "epoch_002.json").read_text())
    assert record["batch"]["window"] == record["time_steps"] == 20 and record["batch"]["size"] == 100
    assert len(record["layers"][0]["grad_norm"]) == 20
