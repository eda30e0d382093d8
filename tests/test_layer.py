"""The IRNN layer: nn.RNN compatibility, activations, initialisers, argument checks."""

import math

import pytest
import torch
from torch import nn

import irnn
from irnn.errors import ConfigError
from irnn.models.activations import ACTIVATION_NAMES, get_activation
from irnn.models.inits import init_weight_


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_state_dict_moves_both_ways_with_nn_rnn(act, backend, batch_first):
    torch.manual_seed(0)
    ref = nn.RNN(3, 8, num_layers=2, nonlinearity=act, batch_first=batch_first)
    ours = irnn.IRNN(3, 8, 2, activation=act, batch_first=batch_first, backend=backend)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 4, 3)
    h0 = torch.randn(2, 5 if batch_first else 4, 8)
    out_ref, h_ref = ref(x, h0)
    out, h = ours(x, h0)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    # gradients agree too
    (out.square().sum() + h.sum()).backward()
    (out_ref.square().sum() + h_ref.sum()).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # and back: an nn.RNN takes the IRNN's state dict
    back = nn.RNN(3, 8, num_layers=2, nonlinearity=act, batch_first=batch_first)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back(x, h0)[0], out, rtol=1e-5, atol=1e-6)


def test_nonlinearity_alias_and_unbatched_input():
    ref = nn.RNN(2, 4, nonlinearity="relu")
    ours = irnn.IRNN(2, 4, nonlinearity="relu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2)  # unbatched (L, H_in)
    out, h = ours(x)
    out_ref, h_ref = ref(x)
    assert out.shape == (6, 4) and h.shape == (1, 4)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h, h_ref)


def test_default_init_is_identity_recurrent_glorot_input_zero_bias():
    torch.manual_seed(0)
    layer = irnn.IRNN(50, 200, activation="elu")
    assert torch.equal(layer.weight_hh_l0, torch.eye(200))
    assert torch.count_nonzero(layer.bias_ih_l0) == 0 and torch.count_nonzero(layer.bias_hh_l0) == 0
    std = layer.weight_ih_l0.std().item()
    assert abs(std - math.sqrt(2 / (50 + 200))) < 0.01
    scaled = irnn.IRNN(1, 5, recurrent_gain=0.5)
    assert torch.equal(scaled.weight_hh_l0, 0.5 * torch.eye(5))


def test_initialisers_draw_documented_distributions():
    g = torch.Generator().manual_seed(0)
    w = torch.empty(300, 300)
    init_weight_(w, "orthogonal", generator=g)
    torch.testing.assert_close(w @ w.t(), torch.eye(300), atol=1e-4, rtol=0)
    init_weight_(w, "uniform", hidden_size=100, generator=g)
    assert w.abs().max() <= 0.1 and w.abs().max() > 0.099
    init_weight_(w, "glorot_uniform", generator=g)
    a = math.sqrt(6 / 600)
    assert w.abs().max() <= a and w.abs().max() > 0.99 * a
    init_weight_(w, "normal", generator=g)
    assert abs(w.std().item() - 0.001) < 1e-4
    with pytest.raises(ConfigError, match="square"):
        init_weight_(torch.empty(3, 4), "identity")
    with pytest.raises(ConfigError, match="unknown initialiser"):
        init_weight_(w, "he")


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_named_activations_match_torch(name):
    x = torch.linspace(-3, 3, 61)
    expected = {
        "identity": x, "relu": torch.relu(x), "tanh": torch.tanh(x), "elu": nn.functional.elu(x),
        "leaky_relu": nn.functional.leaky_relu(x, 0.01), "selu": torch.selu(x),
        "softplus": nn.functional.softplus(x), "gelu": nn.functional.gelu(x),
    }[name]
    torch.testing.assert_close(get_activation(name)(x), expected)


def test_activation_parameters_and_callables():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(get_activation("elu", 0.5)(x), nn.functional.elu(x, alpha=0.5))
    torch.testing.assert_close(get_activation("leaky_relu", 0.2)(x), nn.functional.leaky_relu(x, 0.2))
    custom = get_activation(torch.sin)
    assert custom.kernel_code is None and custom.name == "callable:sin"
    layer = irnn.IRNN(1, 3, activation=torch.sin)
    out, _ = layer(torch.randn(4, 2, 1))
    assert out.shape == (4, 2, 3)
    with pytest.raises(ConfigError, match="unknown activation"):
        get_activation("swishy")
    with pytest.raises(ConfigError, match="takes no parameter"):
        get_activation("relu", 0.1)
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        get_activation("elu", -1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=0, hidden_size=3), "input_size"),
    (dict(input_size=1, hidden_size=-3), "hidden_size"),
    (dict(input_size=1, hidden_size=3, num_layers=0), "num_layers"),
    (dict(input_size=1, hidden_size=3, bidirectional=True), "bidirectional"),
    (dict(input_size=1, hidden_size=3, dropout=1.5), "dropout"),
])
def test_bad_constructor_arguments_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        irnn.IRNN(**kwargs)


def test_bad_forward_inputs_are_refused():
    layer = irnn.IRNN(2, 3)
    with pytest.raises(ConfigError, match="feature size 2"):
        layer(torch.randn(4, 1, 5))
    with pytest.raises(ConfigError, match="hx of shape"):
        layer(torch.randn(4, 1, 2), torch.zeros(2, 1, 3))
