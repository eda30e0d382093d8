"""Language modelling end to end: contiguous batching and the carried, detached state, perplexity
and bits per character from the summed log-likelihood, parameter counts and the matched-size
presets, a small char model that learns, `irnn sample`, and bad input refused."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import pytest
import torch
from torch import nn

from irnn.cli import main
from irnn.data.lm import LanguageModelTask, segments, stream_layout
from irnn.data.tasks import make_task
from irnn.data.text import load_corpus
from irnn.errors import ConfigError
from irnn.models.language import LanguageModel, count_parameters, matched_hidden
from irnn.sweep import load_preset
from irnn.train import TrainConfig, evaluate, read_metrics, train
from irnn.train.optim import FixedDecay

PTB_CHAR_VOCAB = 51  # 49 symbols, the line end and <unk>; test_text.py checks it on the data
QUIET = dict(progress=False, log=lambda line: None)
# A char model on the first 100k characters of Tiny Shakespeare that learns in a few seconds: an
# ELU-IRNN (through the fused engine) with orthogonal recurrent weights, which keep the carried
# state bounded (identity weights let it grow with the length of the stream).
QUICK = dict(task="shakespeare", model="irnn", act="elu", recurrent_init="orthogonal", hidden=128, bptt=50,
             batch_size=32, optimizer="adam", lr=3e-3, epochs=3, limit_train=100_000, limit_test=10_000, threads=1)


# ---------------------------------------------------------------------------- batching
def test_batches_are_contiguous_streams_with_targets_shifted_by_one():
    ids = torch.arange(103)
    inputs, targets = stream_layout((ids[:-1], ids[1:]), streams=4)
    assert inputs.shape == (4, 25)  # 102 // 4: the last 2 tokens are dropped
    assert torch.equal(inputs[1], torch.arange(25, 50))  # stream b is the b-th quarter of the text
    batches = list(segments(inputs, targets, bptt=7))
    assert [x.shape[1] for x, _ in batches] == [7, 7, 7, 4]
    for (x, y), (x_next, _) in zip(batches, batches[1:]):
        assert torch.equal(y, x + 1)
        assert torch.equal(x_next[:, 0], x[:, -1] + 1)  # batch k+1 starts where batch k ended
    with pytest.raises(ConfigError, match="fewer than the 200 streams"):
        stream_layout((ids[:-1], ids[1:]), streams=200)


@pytest.mark.parametrize("kind", ["irnn", "lstm"])
def test_carried_state_makes_segments_equal_to_one_pass(kind):
    torch.manual_seed(0)
    model = LanguageModel(20, kind, hidden=8, layers=2, embed=6).eval()
    tokens = torch.randint(0, 20, (3, 12))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :5])
    second, _ = model(tokens[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_trainer_carries_the_state_detached_from_segment_to_segment(monkeypatch, tmp_path):
    seen = []
    original = LanguageModelTask.forward

    def recording_forward(self, model, x, state=None):
        output, new_state = original(self, model, x, state)
        if torch.is_grad_enabled():  # training batches only
            seen.append((state, new_state))
        return output, new_state

    monkeypatch.setattr(LanguageModelTask, "forward", recording_forward)
    config = TrainConfig(**dict(QUICK, epochs=1, hidden=8, batch_size=4, bptt=10, limit_train=400, limit_test=200))
    train(config, tmp_path / "run", **QUIET)
    assert len(seen) == 10 and seen[0][0] is None  # 399 // 4 = 99 steps per stream, 10 segments
    for (_, returned), (passed, _) in zip(seen, seen[1:]):
        assert returned.requires_grad and not passed.requires_grad  # detached: BPTT stops here
        assert torch.equal(passed, returned)  # ... but the values carry on


# ---------------------------------------------------------------------------- metrics
class Uniform(nn.Module):
    """Equal logits for every token: perplexity V, log2(V) bits per token."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens, state=None):
        return torch.zeros(*tokens.shape, self.vocab_size), state


def test_uniform_model_scores_perplexity_v_and_log2_v_bits():
    ids = torch.randint(0, 50, (1001,))
    split = (ids[:-1], ids[1:])
    word = make_task(TrainConfig(task="ptb-word"))
    loss, ppl = evaluate(word, Uniform(50), split, 7, "cpu")
    assert ppl == pytest.approx(50, rel=1e-5) and loss == pytest.approx(math.log(50), rel=1e-5)  # float32 sums
    char = make_task(TrainConfig(task="shakespeare"))
    assert evaluate(char, Uniform(64), split, None, "cpu")[1] == pytest.approx(6.0, rel=1e-5)  # 10 streams


def test_perplexity_comes_from_the_summed_log_likelihood_not_a_mean_over_batches():
    task = make_task(TrainConfig(task="ptb-word"))
    batches = [(torch.randn(2, 1, 5), torch.randint(0, 5, (2, 1))), (torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4)))]
    sums = [task.metric_sum(out, target) for out, target in batches]
    total, count = sum(s for s, _ in sums), sum(c for _, c in sums)
    nll = torch.cat([nn.functional.cross_entropy(o.reshape(-1, 5), t.reshape(-1), reduction="none") for o, t in batches])
    assert count == 10 and task.metric_value(total, count) == pytest.approx(float(nll.mean().exp()), rel=1e-6)


# ---------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("kind", ["irnn", "rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers,embed,tie", [(1, 0, False), (2, 6, False), (2, None, True)])
def test_parameter_count_formula_matches_the_built_model(kind, layers, embed, tie):
    model = LanguageModel(17, kind, hidden=6, layers=layers, embed=embed, tie_weights=tie)
    assert count_parameters(kind, 17, 6, layers, embed, tie) == sum(p.numel() for p in model.parameters())
    if tie:
        assert model.decoder.weight is model.encoder.weight


def test_ptb_char_preset_compares_models_at_matched_parameter_counts():
    runs = load_preset("ptb-char").runs()
    assert sorted((r.config.model, r.config.act if r.config.model == "irnn" else "") for r in runs) == [
        ("gru", ""), ("irnn", "elu"), ("irnn", "relu"), ("lstm", "")]
    reference = count_parameters("lstm", PTB_CHAR_VOCAB, 1000, 1, embed=0)
    assert reference == 4_263_051
    for run in runs:
        c = run.config
        assert c.task == "ptb-char" and c.layers == 1 and c.embed is None  # char level: one-hot input
        count = count_parameters(c.model, PTB_CHAR_VOCAB, c.hidden, c.layers, embed=0)
        assert c.hidden == matched_hidden(c.model, reference, PTB_CHAR_VOCAB, embed=0)
        assert abs(count - reference) / reference < 1e-3, (c.model, c.hidden, count)


def test_zaremba_small_preset():
    (run,) = load_preset("ptb-word-small").runs()
    c = run.config
    assert (c.model, c.layers, c.hidden, c.embed, c.dropout, c.epochs) == ("lstm", 2, 200, 200, 0.0, 13)
    assert count_parameters("lstm", 10_000, 200, 2, 200) == 4_653_200
    # Zaremba's lr 1 and clip 5 for a loss summed over a segment, for irnn's per-token mean loss.
    assert (c.optimizer, c.momentum, c.lr, c.clip) == ("sgd", 0.0, 1.0 * c.bptt, 5.0 / c.bptt)
    assert (c.lr_decay_after, c.lr_factor) == (4, 0.5)


def test_fixed_decay_halves_after_epoch_k_and_survives_a_checkpoint():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = FixedDecay(optimizer, after=2, factor=0.5, min_lr=0.1)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        schedule.step(123.0)  # the validation score is ignored
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.125, 0.1]
    copy = FixedDecay(optimizer, after=2, factor=0.5, min_lr=0.1)
    copy.load_state_dict(schedule.state_dict())
    assert copy.epochs_done == 6


# ---------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "shakespeare"
    history = train(TrainConfig(**QUICK), out, **QUIET)
    return out, history


def test_small_char_model_learns_well_below_the_unigram_entropy(char_run):
    out, history = char_run
    counts = Counter(load_corpus("shakespeare").train.tolist())
    n = sum(counts.values())
    unigram_bits = -sum(c / n * math.log2(c / n) for c in counts.values())  # 4.78 bits
    final = history[-1]
    assert final["val_bpc"] < unigram_bits - 1.0, (final["val_bpc"], unigram_bits)
    assert final["val_loss"] == pytest.approx(final["val_bpc"] * math.log(2), rel=1e-6)  # both per token
    assert final["tokens_per_sec"] > 0
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert (resolved["metric"], resolved["higher_is_better"], resolved["vocab_size"]) == ("bpc", False, 66)
    assert (resolved["n_train"], resolved["eval_streams"], resolved["embed"]) == (99_999, 10, 0)


def test_irnn_sample_end_to_end(char_run, capsys):
    out = str(char_run[0])
    assert main(["sample", out, "--prime", "ROMEO:", "-n", "80", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 80 + 1  # + print's newline
    assert main(["sample", out, "--prime", "ROMEO:", "-n", "80", "--seed", "3"]) == 0
    assert capsys.readouterr().out == text  # a seed makes it reproducible
    assert main(["sample", out, "-n", "30", "--temperature", "0", "--checkpoint", "last"]) == 0
    assert len(capsys.readouterr().out) == 31


def test_irnn_sample_refuses_bad_input(char_run, capsys, tmp_path):
    out = str(char_run[0])
    for args, message in [(["--prime", "ROMEO€"], "--prime: character(s) '€' not in the model's vocabulary"),
                          (["-n", "0"], "-n must be a positive number"),
                          (["--temperature", "-1"], "--temperature must be >= 0")]:
        assert main(["sample", out, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    other = tmp_path / "adding-run"
    shutil.copytree(out, other)
    record = json.loads((other / "config.json").read_text())
    record["config"]["task"] = "adding"
    (other / "config.json").write_text(json.dumps(record))
    assert main(["sample", str(other)]) == 2
    assert "is a adding run; irnn sample needs a language-model run" in capsys.readouterr().err


def test_word_level_run_reports_perplexity_and_samples_words(tmp_path, capsys):
    out = tmp_path / "ptb"
    config = TrainConfig(task="ptb-word", model="lstm", hidden=16, layers=2, dropout=0.2, bptt=20, batch_size=10,
                         optimizer="sgd", momentum=0.0, lr=20.0, clip=0.25, lr_decay_after=1, epochs=2,
                         limit_train=4000, limit_test=1000, tie_weights=True, threads=1)
    history = train(config, out, **QUIET)
    assert [r["lr"] for r in history] == [20.0, 10.0]  # fixed decay after epoch 1
    assert history[-1]["val_ppl"] == pytest.approx(math.exp(history[-1]["val_loss"]), rel=1e-6)
    assert history[-1]["val_ppl"] < 2000  # of 10,000 words
    assert main(["sample", str(out), "--prime", "the company", "-n", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the company ")
    assert main(["sample", str(out), "--prime", "the qwertyuiop"]) == 2
    assert "word(s) 'qwertyuiop' not in the model's vocabulary" in capsys.readouterr().err


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    config = TrainConfig(**dict(QUICK, hidden=16, dropout=0.1, layers=2, epochs=2, limit_train=3000, limit_test=500))
    straight = train(config, tmp_path / "straight", **QUIET)
    train(config.replace(epochs=1), tmp_path / "killed", **QUIET)
    resumed = train(config, tmp_path / "killed", resume=True, **QUIET)
    timing = {"seconds", "train_seconds", "tokens_per_sec"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(straight) == strip(read_metrics(tmp_path / "killed"))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,message", [
    (["--task", "ptb-word", "--text-level", "char"], "ptb-word is word level; use --task ptb-char"),
    (["--task", "text:no-such-file.txt"], "no-such-file.txt does not exist"),
    (["--task", "shakespeare", "--bptt", "0"], "--bptt must be a positive integer"),
    (["--task", "shakespeare", "--tie-weights"], "--tie-weights uses the embedding as the softmax weights"),
    (["--task", "shakespeare", "--embed", "-3"], "--embed must be an integer >= 0"),
    (["--task", "shakespeare", "--limit-train", "10", "--batch-size", "32"], "fewer than the 32 streams"),
])
def test_train_refuses_bad_language_model_options_in_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
