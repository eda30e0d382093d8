"""Weight initialisers, by name.

Keras and PyTorch mean different things by similar names, so each one is spelled out here
(``fan_in``/``fan_out`` of a ``(out, in)`` weight are ``in``/``out``):

``identity``
    ``gain * I`` (square weights only). Le, Jaitly & Hinton (2015)'s IRNN recurrent init.
``orthogonal``
    a random orthogonal matrix times ``gain`` (``torch.nn.init.orthogonal_``).
``glorot_normal``
    untruncated normal, mean 0, std ``gain * sqrt(2 / (fan_in + fan_out))``. This is Keras 1's
    ``glorot_normal``, the one the original ``mnist_irnn`` example used; Keras 2+ truncates at two
    standard deviations and rescales, and PyTorch calls the untruncated one ``xavier_normal_``.
``glorot_uniform``
    ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))`` (Keras's default, PyTorch's
    ``xavier_uniform_``).
``uniform``
    ``U(-1/sqrt(H), 1/sqrt(H))`` with ``H`` the layer's hidden size: what ``torch.nn.RNN``
    does to every weight and bias by default (``gain`` is ignored).
``normal``
    normal, mean 0, std ``gain * 0.001`` (Le et al.'s input-to-hidden init for the adding problem).
``zeros``
    all zeros (biases only, sensibly).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

INIT_NAMES = ("identity", "orthogonal", "glorot_normal", "glorot_uniform", "uniform", "normal", "zeros")


@torch.no_grad()
def init_weight_(weight: torch.Tensor, name: str, gain: float = 1.0, hidden_size: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``weight`` in place with the named initialisation (see the module docstring)."""
    if name not in INIT_NAMES:
        raise ConfigError(f"unknown initialiser {name!r}; choose one of {', '.join(INIT_NAMES)}")
    if name == "zeros":
        return weight.zero_()
    if name == "uniform":
        bound = 1.0 / math.sqrt(hidden_size if hidden_size else weight.shape[0])
        return weight.uniform_(-bound, bound, generator=generator)
    if weight.dim() != 2:
        raise ConfigError(f"initialiser {name!r} needs a matrix, got shape {tuple(weight.shape)}")
    fan_out, fan_in = weight.shape
    if name == "identity":
        if fan_in != fan_out:
            raise ConfigError(f"identity init needs a square weight, got {fan_out}x{fan_in}")
        weight.zero_()
        return weight.fill_diagonal_(gain)
    if name == "orthogonal":
        # Orthogonalise a Gaussian draw (QR with sign fix), as torch.nn.init.orthogonal_ does,
        # but through our generator so runs are reproducible without touching the global RNG.
        flat = torch.randn(max(fan_out, fan_in), min(fan_out, fan_in), generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(flat)
        q = q * torch.sign(torch.diagonal(r))
        if fan_out < fan_in:
            q = q.t()
        return weight.copy_(gain * q[:fan_out, :fan_in])
    if name == "glorot_normal":
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
        return weight.normal_(0.0, std, generator=generator)
    if name == "glorot_uniform":
        a = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return weight.uniform_(-a, a, generator=generator)
    # normal
    return weight.normal_(0.0, gain * 0.001, generator=generator)
