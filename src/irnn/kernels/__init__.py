"""Recurrence kernels behind :class:`irnn.IRNN`.

:func:`elman` is the single entry point the layer calls. It picks, per call:

* ``fused``: the compiled CPU kernel (:mod:`irnn.kernels.fused`) for float32/float64 CPU tensors
  and every activation with a kernel code;
* ``cudnn``: ``torch``'s own fused RNN for relu/tanh on CUDA tensors;
* ``reference``: the autograd loop (:mod:`irnn.kernels.reference`) for everything else.

``backend="reference"`` (or the environment variable ``IRNN_BACKEND=reference``) forces the
slow path, which tests use as ground truth.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from ..errors import ConfigError
from ..models.activations import Activation
from .reference import elman_reference

BACKENDS = ("auto", "fused", "cudnn", "reference")


def elman(
    x: torch.Tensor,
    h0: torch.Tensor,
    weight_ih: Optional[torch.Tensor],
    weight_hh: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Activation,
    return_sequence: bool = True,
    backend: str = "auto",
) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """One Elman layer over a time-major sequence; see :func:`elman_reference` for the maths."""
    backend = resolve_backend(x, activation, backend)
    if backend == "fused":
        from .fused import elman_fused

        return elman_fused(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)
    if backend == "cudnn":
        from .cudnn import elman_cudnn

        return elman_cudnn(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)
    return elman_reference(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)


def resolve_backend(x: torch.Tensor, activation: Activation, backend: str = "auto") -> str:
    """The backend :func:`elman` will use: ``backend`` itself, or for ``auto`` the value of
    ``$IRNN_BACKEND`` if set, else the fastest one that supports this input and activation."""
    if backend == "auto":
        backend = os.environ.get("IRNN_BACKEND", "auto")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown recurrence backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return _fastest_backend(x, activation) if backend == "auto" else backend


def _fastest_backend(x: torch.Tensor, activation: Activation) -> str:
    if x.is_cuda:
        return "cudnn" if activation.name in ("relu", "tanh") else "reference"
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and activation.kernel_code is not None:
        try:
            from .fused import fused_available
        except ImportError:  # a partial install without the kernel module
            return "reference"
        if fused_available():
            return "fused"
    return "reference"
