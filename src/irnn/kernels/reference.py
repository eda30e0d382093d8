"""The reference Elman recurrence: a plain autograd loop over time.

It is the definition every fast path is tested against, and the fallback for configurations
the fused kernel does not cover (CUDA with ELU, user callables, gelu, dtypes other than
float32/float64).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..models.activations import Activation


def elman_reference(
    x: torch.Tensor,
    h0: torch.Tensor,
    weight_ih: Optional[torch.Tensor],
    weight_hh: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Activation,
    return_sequence: bool = True,
) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Run ``h_t = f(x_t W_ih^T + bias + h_{t-1} W_hh^T)`` for t = 0..T-1.

    Args:
        x: time-major input ``(T, B, I)``; if ``weight_ih`` is None, ``x`` is already the
            input projection and ``I == H``.
        h0: initial state ``(B, H)``.
        weight_ih: ``(H, I)`` or None.
        weight_hh: ``(H, H)``.
        bias: ``(H,)`` (the sum of nn.RNN's two biases) or None.
        activation: the pointwise activation.
        return_sequence: if False, return ``(None, h_T)`` and keep no per-step states
            beyond what autograd needs.

    Returns:
        ``(output, h_last)`` with output ``(T, B, H)`` (or None) and h_last ``(B, H)``.
    """
    xp = x if weight_ih is None else torch.matmul(x, weight_ih.t())
    if bias is not None:
        xp = xp + bias
    h = h0
    outputs = []
    w_t = weight_hh.t()
    for t in range(xp.shape[0]):
        h = activation(torch.addmm(xp[t], h, w_t))
        if return_sequence:
            outputs.append(h)
    output = torch.stack(outputs) if return_sequence else None
    return output, h
