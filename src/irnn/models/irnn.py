"""``IRNN``: an Elman RNN with any pointwise activation, a drop-in for ``torch.nn.RNN``.

It has ``nn.RNN``'s constructor arguments, forward call, return value and parameter names
(``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``), so a state dict
moves between the two in both directions. On top of that it takes any activation and the
initialisers of Le, Jaitly & Hinton (2015): by default the recurrent weight is the identity,
the input weight is Glorot-normal (the Keras ``mnist_irnn`` example's choice) and biases are zero.

Each layer's time loop runs through :func:`irnn.kernels.elman`, which picks the fused CPU kernel,
cuDNN, or the reference autograd loop.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..kernels import elman
from .activations import Activation, get_activation
from .inits import init_weight_


class IRNN(nn.Module):
    """Elman RNN ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with a free choice of ``f``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout: as in ``torch.nn.RNN``.
        activation: a name (``relu``, ``elu``, ``tanh``, ``leaky_relu``, ``selu``, ``softplus``,
            ``gelu``, ``identity``) or any callable. ``nonlinearity=`` is accepted as an alias
            so code written for ``nn.RNN`` runs unchanged.
        activation_param: ELU's alpha (default 1.0) or leaky ReLU's negative slope (default 0.01).
        recurrent_init, recurrent_gain: initialiser of ``weight_hh`` (default ``identity`` x 1.0).
        input_init, input_gain: initialiser of ``weight_ih`` (default ``glorot_normal``).
        bias_init: initialiser of the biases (default ``zeros``; ``uniform`` is nn.RNN's).
        backend: ``auto`` (default), ``fused``, ``cudnn`` or ``reference``.
    See :mod:`irnn.models.inits` for exactly what each initialiser draws.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        activation: Union[str, Callable, Activation] = "relu",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        nonlinearity: Optional[str] = None,
        activation_param: Optional[float] = None,
        recurrent_init: str = "identity",
        recurrent_gain: float = 1.0,
        input_init: str = "glorot_normal",
        input_gain: float = 1.0,
        bias_init: str = "zeros",
        backend: str = "auto",
    ):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (got {value!r})")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1) (got {dropout})")
        if bidirectional:
            raise ConfigError("IRNN is unidirectional; bidirectional=True is not supported")
        if nonlinearity is not None:
            activation = nonlinearity
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = False
        self.activation = get_activation(activation, activation_param)
        self.backend = backend
        self.init_options = dict(recurrent_init=recurrent_init, recurrent_gain=recurrent_gain,
                                 input_init=input_init, input_gain=input_gain, bias_init=bias_init)
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(hidden_size, layer_input, **factory)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(hidden_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(hidden_size, **factory)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Re-draw every weight with the configured initialisers."""
        o = self.init_options
        for layer in range(self.num_layers):
            init_weight_(getattr(self, f"weight_ih_l{layer}"), o["input_init"], o["input_gain"], self.hidden_size, generator)
            init_weight_(getattr(self, f"weight_hh_l{layer}"), o["recurrent_init"], o["recurrent_gain"], self.hidden_size, generator)
            if self.bias:
                for kind in ("ih", "hh"):
                    init_weight_(getattr(self, f"bias_{kind}_l{layer}"), o["bias_init"], 1.0, self.hidden_size, generator)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, activation={self.activation.describe()}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    def forward(self, input: torch.Tensor, hx: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Same call and result as ``nn.RNN.forward``: returns ``(output, h_n)``."""
        output, h_n = self._run(input, hx, return_sequence=True)
        return output, h_n

    def final_state(self, input: torch.Tensor, hx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Only ``h_n`` (``(num_layers, N, H)``): the top layer keeps no per-step states.

        Classifiers use this; under ``torch.no_grad()`` a one-layer net evaluates long
        sequences without ever holding ``T x N x H`` numbers.
        """
        return self._run(input, hx, return_sequence=False)[1]

    def _run(self, input, hx, return_sequence):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise ConfigError("IRNN does not take PackedSequence input; pad the batch instead")
        if input.dim() not in (2, 3):
            raise ConfigError(f"IRNN expects a 2-D (unbatched) or 3-D input, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ConfigError(f"IRNN expects input feature size {self.input_size}, got {input.shape[-1]}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        batch = x.shape[1]
        if hx is None:
            hx = x.new_zeros(self.num_layers, batch, self.hidden_size)
        elif unbatched:
            hx = hx.unsqueeze(1)
        if hx.shape != (self.num_layers, batch, self.hidden_size):
            raise ConfigError(f"IRNN expects hx of shape {(self.num_layers, batch, self.hidden_size)}, got {tuple(hx.shape)}")
        finals = []
        for layer in range(self.num_layers):
            top = layer == self.num_layers - 1
            bias = None
            if self.bias:
                bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
            x, h_last = elman(x, hx[layer], getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                              bias, self.activation, return_sequence=return_sequence or not top, backend=self.backend)
            finals.append(h_last)
            if not top and self.dropout and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
        h_n = torch.stack(finals)
        if unbatched:
            h_n = h_n.squeeze(1)
            if x is not None:
                x = x.squeeze(1)
        elif x is not None and self.batch_first:
            x = x.transpose(0, 1)
        return x, h_n
