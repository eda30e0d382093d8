"""torch's own fused Elman RNN (cuDNN on CUDA) behind the :func:`elman` interface.

Used for relu/tanh on CUDA tensors. ``torch._VF.rnn_relu``/``rnn_tanh`` is the op
``torch.nn.RNN`` itself calls, so the numbers are nn.RNN's; it also runs on CPU (torch's native
loop), which is how the tests check it. The layer passes one summed bias; nn.RNN's op wants two,
so the second is a zero tensor (its gradient is discarded, the summed bias gets the full one).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..models.activations import Activation
from .reference import elman_reference


def elman_cudnn(
    x: torch.Tensor,
    h0: torch.Tensor,
    weight_ih: Optional[torch.Tensor],
    weight_hh: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Activation,
    return_sequence: bool = True,
) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Same contract as :func:`elman_reference`, via torch's fused RNN op.

    Falls back to the reference loop where that op does not apply: activations other than
    relu/tanh, and ``weight_ih=None`` (the op always applies an input weight).
    """
    if weight_ih is None or activation.name not in ("relu", "tanh"):
        return elman_reference(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)
    op = torch._VF.rnn_relu if activation.name == "relu" else torch._VF.rnn_tanh
    params = [weight_ih, weight_hh] if bias is None else [weight_ih, weight_hh, bias, torch.zeros_like(bias)]
    # cuDNN keeps its backward workspace only in training mode, so "train" means "autograd is recording".
    inputs = (x, h0, weight_ih, weight_hh, bias)
    train = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    output, h_n = op(x, h0.unsqueeze(0), params, bias is not None, 1, 0.0, train, False, False)
    return (output if return_sequence else None), h_n[0]
