"""Path-SGD: kappa by autograd equals kappa by enumerating every path, the path norm and the update
respect node-wise rescaling of a ReLU network, and the optimizer trains a small task.

The rescaling used throughout, for hidden unit ``j`` of recurrent layer ``l`` and ``c > 0``:

* incoming weights x c: row ``j`` of ``W_ih_l``, ``b_ih_l[j]``, ``b_hh_l[j]``, and row ``j`` of ``W_hh_l``;
* outgoing weights x 1/c: column ``j`` of ``W_hh_l``, and column ``j`` of the next layer's ``W_ih``
  (or of the read-out ``W_ho`` for the top layer).

The recurrent matrix is both incoming and outgoing, so it is conjugated, ``W_hh -> D W_hh D^-1``
(its diagonal entry ``W_hh[j, j]`` is unchanged). Then ``h_t -> D h_t`` at every step for a
positively homogeneous activation (ReLU), and the output is unchanged. Rescaling only
``W_ih``, the biases and ``W_ho`` (leaving ``W_hh`` alone) is *not* a symmetry of a recurrent net:
the test below checks that it changes the function.
"""

import copy
import math

import pytest
import torch
from torch import nn

from irnn import IRNN
from irnn.cli import main
from irnn.errors import ConfigError
from irnn.models.elman_net import elman_net
from irnn.models.language import LanguageModel
from irnn.models.sequence import SequenceModel
from irnn.train import TrainConfig, train
from irnn.train.pathsgd import PathSGD, path_norm, path_scaling


class TinyLM(nn.Module):
    """The language-model layout Path-SGD must accept: embedding -> IRNN -> Linear, no ``per_step``."""

    def __init__(self, vocab, emb, hidden, layers=1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.rnn = IRNN(emb, hidden, layers, batch_first=True, recurrent_init="uniform", bias_init="uniform")
        self.drop = nn.Dropout(0.1)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.decoder(self.drop(self.rnn(self.embedding(tokens))[0]))


def tiny_model(act="relu", inputs=2, hidden=2, layers=1, classes=2, per_step=False, seed=0):
    """A float64 IRNN classifier with every weight and bias random (none zero, W_hh not diagonal)."""
    torch.manual_seed(seed)
    rec = IRNN(inputs, hidden, layers, act, batch_first=True, recurrent_init="uniform", input_init="glorot_uniform",
               bias_init="uniform")
    return SequenceModel(rec, classes, per_step=per_step).double()


@torch.no_grad()
def randomized(model):
    """``model`` with every parameter uniform in [-1, 1] (no zero biases, no identity W_hh)."""
    torch.manual_seed(0)
    for p in model.parameters():
        p.uniform_(-1, 1)
    return model


# ---------------------------------------------------------------------------- brute force
def enumerate_paths(model, steps):
    """Every input->output path of the unrolled network, as a tuple of (parameter name, index) edges.

    Sources are the input features at each step (or, with an embedding, the vocabulary entries,
    all "on") and the bias units; sinks are the read-out's outputs at the last step, or at every
    step for a per-step model. Written from the definition, independently of the autograd pass.
    """
    net = elman_net(model, "test")
    name = {id(p): n for n, p in model.named_parameters()}
    top = len(net.layers) - 1

    def into_input(s, k):  # paths ending at input feature k of step s
        if net.embedding is None:
            return [()]
        return [((name[id(net.embedding.weight)], (v, k)),) for v in range(net.embedding.num_embeddings)]

    memo = {}

    def into_unit(l, s, j):  # paths ending at hidden unit j of layer l at step s
        if (l, s, j) in memo:
            return memo[(l, s, j)]
        layer = net.layers[l]
        paths = [((name[id(b)], (j,)),) for b in layer.biases()]
        below = layer.weight_ih.shape[1]
        for k in range(below):
            edge = (name[id(layer.weight_ih)], (j, k))
            sources = into_input(s, k) if l == 0 else into_unit(l - 1, s, k)
            paths += [p + (edge,) for p in sources]
        if s > 0:
            for i in range(layer.hidden_size):
                edge = (name[id(layer.weight_hh)], (j, i))
                paths += [p + (edge,) for p in into_unit(l, s - 1, i)]
        memo[(l, s, j)] = paths
        return paths

    paths = []
    for s in (range(steps) if net.per_step else [steps - 1]):
        for o in range(net.head.out_features):
            paths.append(((name[id(net.head.bias)], (o,)),))
            for j in range(net.layers[top].hidden_size):
                edge = (name[id(net.head.weight)], (o, j))
                paths += [p + (edge,) for p in into_unit(top, s, j)]
    return paths


def brute_force_kappa(model, steps):
    """kappa_i = 1/2 * sum over paths, over each occurrence of weight i on the path, of the product
    of the squared weights of the path's other edges."""
    w2 = {n: p.detach().double().square() for n, p in model.named_parameters()}
    kappa = {n: torch.zeros_like(v) for n, v in w2.items()}
    for path in enumerate_paths(model, steps):
        for pos, (n, idx) in enumerate(path):
            others = math.prod(float(w2[m][i]) for q, (m, i) in enumerate(path) if q != pos)
            kappa[n][idx] += 0.5 * others
    return kappa


def autograd_kappa(model, steps):
    net = elman_net(model, "test")
    by_id = path_scaling(net, steps)
    return {n: by_id[p] for n, p in model.named_parameters()}


@pytest.mark.parametrize("build, steps", [
    (lambda: tiny_model(hidden=3), 3),
    (lambda: tiny_model(hidden=2, layers=2), 2),
    (lambda: tiny_model(hidden=2, per_step=True), 3),
    (lambda: TinyLM(vocab=3, emb=2, hidden=2).double(), 2),
    (lambda: randomized(LanguageModel(3, "irnn", hidden=2, tie_weights=True).double()), 2),
], ids=["1-layer-H3-T3", "2-layers-T2", "per-step-T3", "embedding-lm-T2", "tied-language-model-T2"])
def test_kappa_by_autograd_equals_brute_force_over_paths(build, steps):
    model = build()
    expected = brute_force_kappa(model, steps)
    got = autograd_kappa(model, steps)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=0, msg=name)


def test_path_norm_is_the_sum_over_paths_of_squared_weight_products():
    model = tiny_model(hidden=3)
    w2 = {n: p.detach().double().square() for n, p in model.named_parameters()}
    brute = sum(math.prod(float(w2[n][i]) for n, i in path) for path in enumerate_paths(model, 3))
    assert path_norm(model, 3) == pytest.approx(brute, rel=1e-12)


# ---------------------------------------------------------------------------- rescaling
@torch.no_grad()
def rescale_unit(model, layer, unit, c, conjugate_recurrent=True):
    """Scale hidden ``unit`` of ``layer`` by ``c`` (see the module docstring). With
    ``conjugate_recurrent=False`` the recurrent matrix is left alone: the naive, wrong version."""
    rec, top = model.recurrent, layer == model.recurrent.num_layers - 1
    getattr(rec, f"weight_ih_l{layer}")[unit, :] *= c
    getattr(rec, f"bias_ih_l{layer}")[unit] *= c
    getattr(rec, f"bias_hh_l{layer}")[unit] *= c
    if conjugate_recurrent:
        w_hh = getattr(rec, f"weight_hh_l{layer}")
        w_hh[unit, :] *= c
        w_hh[:, unit] /= c
    outgoing = model.head.weight if top else getattr(rec, f"weight_ih_l{layer + 1}")
    outgoing[:, unit] /= c


RESCALINGS = [(0, 1, 3.7), (1, 0, 0.25)]  # (layer, unit, c) in a 2-layer net


def rescaled_copy(model, conjugate_recurrent=True):
    twin = copy.deepcopy(model)
    for layer, unit, c in RESCALINGS:
        rescale_unit(twin, layer, unit, c, conjugate_recurrent)
    return twin


def factors(model):
    """The elementwise factor the rescaling applies to each parameter (rescale a model of ones)."""
    ones = copy.deepcopy(model)
    with torch.no_grad():
        for p in ones.parameters():
            p.fill_(1.0)
    for layer, unit, c in RESCALINGS:
        rescale_unit(ones, layer, unit, c)
    return [p.detach().clone() for p in ones.parameters()]


@torch.no_grad()
def test_path_norm_and_function_are_invariant_under_node_rescaling_of_a_relu_rnn():
    model = tiny_model(inputs=3, hidden=4, layers=2, classes=3)
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    twin = rescaled_copy(model)
    torch.testing.assert_close(twin(x), model(x), rtol=1e-12, atol=1e-12)
    assert path_norm(twin, 6) == pytest.approx(path_norm(model, 6), rel=1e-12)
    # The weights did change, substantially.
    assert max(float((a - b).abs().max()) for a, b in zip(model.parameters(), twin.parameters())) > 0.1
    # Leaving W_hh alone is not a symmetry of a recurrent net: the function and path norm move.
    naive = rescaled_copy(model, conjugate_recurrent=False)
    assert float((naive(x) - model(x)).abs().max()) > 1e-3
    assert path_norm(naive, 6) != pytest.approx(path_norm(model, 6), rel=1e-3)


def _one_step(model, x, y, make_optimizer):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    make_optimizer(model).step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)]


def test_path_sgd_update_maps_exactly_under_rescaling_and_sgd_does_not():
    model = tiny_model(inputs=3, hidden=4, layers=2, classes=3)
    twin = rescaled_copy(model)
    x, y = torch.randn(8, 5, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    scale = factors(model)

    # Raw Path-SGD (ratio 1): the twin's step is the rescaled step, so the twins stay twins.
    raw = lambda m: PathSGD(m, lr=0.05, unroll=5, step_ratio=1.0)
    d_model, d_twin = _one_step(model, x, y, raw), _one_step(twin, x, y, raw)
    for d, e, f in zip(d_model, d_twin, scale):
        torch.testing.assert_close(e, f * d, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(twin(x), model(x), rtol=1e-10, atol=1e-12)

    # Plain SGD from the same two points: the two functions part ways (at first order in lr).
    model = tiny_model(inputs=3, hidden=4, layers=2, classes=3)
    twin = rescaled_copy(model)
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.05)
    _one_step(model, x, y, sgd), _one_step(twin, x, y, sgd)
    assert float((twin(x) - model(x)).detach().abs().max()) > 1e-3


def test_first_step_ratio_changes_the_length_of_the_update_never_its_direction():
    model = tiny_model(inputs=3, hidden=4, layers=2, classes=3)
    twin = rescaled_copy(model)
    x, y = torch.randn(8, 5, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    normalised = lambda m: PathSGD(m, lr=0.05, unroll=5)  # step_ratio="first"
    d_model, d_twin = _one_step(model, x, y, normalised), _one_step(twin, x, y, normalised)
    mapped = torch.cat([(f * d).flatten() for d, f in zip(d_model, factors(model))])
    other = torch.cat([e.flatten() for e in d_twin])
    alpha = float(other @ mapped / (mapped @ mapped))
    assert alpha > 0
    torch.testing.assert_close(other, alpha * mapped, rtol=1e-9, atol=1e-14)


def test_first_step_is_as_long_as_the_sgd_step():
    model = tiny_model(hidden=3)
    x, y = torch.randn(4, 5, 2, dtype=torch.float64), torch.randint(0, 2, (4,))
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grad_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    PathSGD(model, lr=0.1, unroll=5).step()
    step_norm = math.sqrt(sum(float((p.detach() - b).square().sum()) for p, b in zip(model.parameters(), before)))
    assert step_norm == pytest.approx(0.1 * grad_norm, rel=1e-9)


# ---------------------------------------------------------------------------- optimizer plumbing
def test_unroll_defaults_to_the_length_of_the_first_batch():
    model = tiny_model()
    opt = PathSGD(model, lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(2, 7, 2, dtype=torch.float64)), torch.tensor([0, 1])).backward()
    assert opt.unroll == 7
    opt.step()
    model(torch.randn(2, 3, 2, dtype=torch.float64))  # later batches do not change it
    assert opt.unroll == 7
    lm = LanguageModel(5, "irnn", hidden=4, embed=0)  # (B, T) token ids, one-hot inside
    opt = PathSGD(lm, lr=0.1)
    lm(torch.randint(0, 5, (3, 9)))
    assert opt.unroll == 9


def test_resumed_optimizer_continues_exactly():
    """kappa (reused for kappa_every steps), the ratio and the step count travel in state_dict()."""
    x, y = torch.randn(4, 5, 2, dtype=torch.float64), torch.randint(0, 2, (4,))

    def steps(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    straight = tiny_model(hidden=3)
    opt = PathSGD(straight, lr=0.1, momentum=0.5, unroll=5, kappa_every=3)
    steps(straight, opt, 4)
    state = (copy.deepcopy(straight.state_dict()), copy.deepcopy(opt.state_dict()))
    steps(straight, opt, 3)

    resumed = tiny_model(hidden=3, seed=1)
    resumed.load_state_dict(state[0])
    opt2 = PathSGD(resumed, lr=0.1, momentum=0.5, unroll=5, kappa_every=3)
    opt2.load_state_dict(state[1])
    steps(resumed, opt2, 3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_unsupported_models_are_refused_by_name():
    lstm = SequenceModel(nn.LSTM(2, 4, batch_first=True), 3)
    with pytest.raises(ConfigError, match="LSTM 'recurrent' does not fit"):
        PathSGD(lstm, lr=0.1)
    with pytest.raises(ConfigError, match="Linear '0' does not fit"):
        PathSGD(nn.Sequential(nn.Linear(2, 2)), lr=0.1)
    with pytest.raises(ConfigError, match="has no Linear read-out"):
        PathSGD(nn.Sequential(IRNN(2, 2)), lr=0.1)
    with pytest.raises(ConfigError, match="step_ratio"):
        PathSGD(tiny_model(), lr=0.1, step_ratio="last")


def test_cli_refuses_path_sgd_for_an_lstm_in_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--optimizer", "pathsgd", "--model", "lstm",
                 "--pixels-per-step", "28", "--limit-train", "50", "--limit-test", "20", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Path-SGD supports [embedding ->] IRNN/RNN -> Linear networks; the model's LSTM" in line
    assert not (tmp_path / "run").exists()


def test_trains_row_by_row_mnist(tmp_path):
    config = TrainConfig(task="smnist", pixels_per_step=28, hidden=64, optimizer="pathsgd", lr=0.02, momentum=0.9,
                         epochs=3, batch_size=32, limit_train=2000, limit_test=500, threads=1)
    history = train(config, tmp_path / "run", progress=False, log=lambda s: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.5  # chance is 0.1
