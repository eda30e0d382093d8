"""Sequence models behind one interface: a recurrent stack plus a linear read-out.

``--model irnn|lstm|gru|rnn`` picks the recurrent stack: :class:`irnn.IRNN` with any activation,
or torch's ``nn.LSTM``, ``nn.GRU`` and tanh ``nn.RNN`` (with PyTorch's default initialisation)
as the baselines. The read-out sees the last hidden state (classification, regression) or every
hidden state (per-step outputs: copy task, language models).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import ConfigError
from .irnn import IRNN

RECURRENT_KINDS = ("irnn", "lstm", "gru", "rnn")


def make_recurrent(kind: str, input_size: int, hidden_size: int, num_layers: int = 1, *, activation: str = "relu",
                   activation_param: Optional[float] = None, recurrent_init: str = "identity",
                   recurrent_gain: float = 1.0, input_init: str = "glorot_normal", dropout: float = 0.0) -> nn.Module:
    """A batch-first recurrent stack of the given kind (IRNN options only apply to ``irnn``)."""
    if kind == "irnn":
        return IRNN(input_size, hidden_size, num_layers, activation, batch_first=True, dropout=dropout,
                    activation_param=activation_param, recurrent_init=recurrent_init,
                    recurrent_gain=recurrent_gain, input_init=input_init)
    if kind == "lstm":
        return nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if kind == "gru":
        return nn.GRU(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if kind == "rnn":
        return nn.RNN(input_size, hidden_size, num_layers, nonlinearity="tanh", batch_first=True, dropout=dropout)
    raise ConfigError(f"unknown model {kind!r}; choose one of {', '.join(RECURRENT_KINDS)}")


class SequenceModel(nn.Module):
    """Recurrent stack + linear head.

    ``forward(x)`` takes batch-first ``(B, T, I)`` input and returns ``(B, C)`` from the last
    state, or ``(B, T, C)`` when ``per_step`` is set.
    """

    def __init__(self, recurrent: nn.Module, output_size: int, per_step: bool = False):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(recurrent.hidden_size, output_size)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_step:
            return self.head(self.recurrent(x)[0])
        return self.head(self.last_state(x))

    def last_state(self, x: torch.Tensor) -> torch.Tensor:
        """Top layer's final hidden state ``(B, H)``."""
        if isinstance(self.recurrent, IRNN):
            return self.recurrent.final_state(x)[-1]
        _, h_n = self.recurrent(x)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        return h_n[-1]


def recurrent_weight_hh(model: nn.Module, layer: int = 0) -> Optional[torch.Tensor]:
    """The recurrent weight matrix of ``layer`` (for diagnostics), or None."""
    rec = getattr(model, "recurrent", model)
    return getattr(rec, f"weight_hh_l{layer}", None)
