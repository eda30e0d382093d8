"""Pointwise activations for recurrent layers.

An :class:`Activation` bundles the torch function used by the reference loop with a small
integer code that the fused recurrence kernel understands. Every built-in activation is
monotone, so its derivative can be recovered exactly from its *output*; the fused kernel
therefore stores only the hidden states (which the layer returns anyway), never the
pre-activations. Activations without a kernel code (``gelu``, user callables) run on the
reference autograd loop.

Derivatives from the output ``y``:

=============  ======================================  ========================
name           f(x)                                    f'(x) written in y
=============  ======================================  ========================
identity       x                                       1
relu           max(x, 0)                               1 if y > 0 else 0
tanh           tanh(x)                                 1 - y^2
elu(alpha)     x if x > 0 else alpha (e^x - 1)         1 if y > 0 else y + alpha
leaky_relu(s)  x if x > 0 else s x    (s >= 0)         1 if y > 0 else s
selu           scale * elu(x, alpha), fixed constants  scale if y > 0 else y + scale*alpha
softplus       log(1 + e^x)                            1 - e^(-y)
=============  ======================================  ========================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from ..errors import ConfigError

# Integer codes shared with kernels/fused.cpp; keep the two lists in step.
KERNEL_CODES = {
    "identity": 0,
    "relu": 1,
    "tanh": 2,
    "elu": 3,
    "leaky_relu": 4,
    "selu": 5,
    "softplus": 6,
}

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# name -> (default parameter or None, what the parameter means)
_BUILTIN = {
    "identity": (None, None),
    "relu": (None, None),
    "tanh": (None, None),
    "elu": (1.0, "alpha"),
    "leaky_relu": (0.01, "negative slope"),
    "selu": (None, None),
    "softplus": (None, None),
    "gelu": (None, None),
}

ACTIVATION_NAMES = tuple(_BUILTIN)


@dataclass(frozen=True)
class Activation:
    """A pointwise activation: its name, parameter, torch function and kernel code.

    ``kernel_code`` is ``None`` when the fused kernel cannot run it (gelu, callables).
    """

    name: str
    param: Optional[float]
    fn: Callable[[torch.Tensor], torch.Tensor]
    kernel_code: Optional[int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def describe(self) -> str:
        """Short label such as ``elu(alpha=1.0)`` for logs and plots."""
        if self.param is None:
            return self.name
        return f"{self.name}({_BUILTIN[self.name][1].split()[-1]}={self.param:g})"


def get_activation(
    activation: Union[str, Callable[[torch.Tensor], torch.Tensor], Activation],
    param: Optional[float] = None,
) -> Activation:
    """Resolve a name (with optional parameter) or a callable into an :class:`Activation`.

    ``param`` is ELU's alpha or leaky ReLU's negative slope; other names take none.
    """
    if isinstance(activation, Activation):
        return activation
    if callable(activation):
        if param is not None:
            raise ConfigError("an activation parameter only goes with a named activation")
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(f"callable:{name}", None, activation, None)
    if not isinstance(activation, str) or activation not in _BUILTIN:
        raise ConfigError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATION_NAMES)} or pass a callable"
        )
    default, meaning = _BUILTIN[activation]
    if default is None and param is not None:
        raise ConfigError(f"activation {activation!r} takes no parameter (got {param})")
    p = default if param is None else float(param)
    if p is not None and not math.isfinite(p):
        raise ConfigError(f"{activation} {meaning} must be finite (got {p})")
    code = KERNEL_CODES.get(activation)
    if activation == "elu":
        if p <= 0:
            raise ConfigError(f"elu alpha must be > 0 (got {p})")
        fn = _partial(F.elu, alpha=p)
    elif activation == "leaky_relu":
        if p < 0:
            # A negative slope makes the function non-monotone, so the kernel's
            # derivative-from-output trick no longer holds: use the reference loop.
            code = None
        fn = _partial(F.leaky_relu, negative_slope=p)
    else:
        fn = {
            "identity": _identity,
            "relu": torch.relu,
            "tanh": torch.tanh,
            "selu": torch.selu,
            "softplus": F.softplus,
            "gelu": F.gelu,
        }[activation]
    return Activation(activation, p, fn, code)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _partial:
    """A picklable ``functools.partial`` with a readable repr (used for checkpoints/configs)."""

    def __init__(self, fn, **kwargs):
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, x):
        return self.fn(x, **self.kwargs)

    def __repr__(self):
        return f"{self.fn.__name__}({', '.join(f'{k}={v}' for k, v in self.kwargs.items())})"
