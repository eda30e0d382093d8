"""A structural view of the networks that Path-SGD and the diagnostics take apart.

Both need more than ``model(x)``. Path-SGD runs the same network again with squared weights and
the identity activation (:mod:`irnn.train.pathsgd`); the diagnostics re-run it step by step to
keep every pre-activation and hidden state (:mod:`irnn.diagnostics`). Instead of special-casing
each model class, :func:`elman_net` reads a model's structure once and returns an
:class:`ElmanNet`: the embedding (if any), each recurrent layer's weights and activation, and
the linear read-out.

Supported: a module whose children are, in this order,

* optionally one ``nn.Embedding`` (token input; a language model),
* one recurrent stack: :class:`irnn.IRNN` or ``torch.nn.RNN`` (any number of layers,
  unidirectional),
* one ``nn.Linear`` read-out,

plus any number of ``nn.Dropout`` modules, which these passes treat as the identity (they run
without dropout, like evaluation does). irnn's :class:`~irnn.models.sequence.SequenceModel`
fits, and so does a language model built as "embedding -> IRNN -> Linear". Everything else
(LSTM, GRU, extra layers, parameters outside these modules) is refused with a
:class:`~irnn.errors.ConfigError` naming what is in the way.

The read-out sees every step when the model's ``per_step`` attribute is true and only the last
state otherwise. A model without that attribute is taken to predict at every step: the only
other family of this shape is the language model (:class:`irnn.models.language.LanguageModel`).
Integer input without an embedding is one-hot encoded, as the language model does for
character-level text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from torch import nn

from ..errors import ConfigError
from .activations import Activation, get_activation
from .irnn import IRNN

_IGNORED = (nn.Dropout,)


@dataclass
class ElmanLayer:
    """One recurrent layer ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``; biases may be None."""

    weight_ih: nn.Parameter
    weight_hh: nn.Parameter
    bias_ih: Optional[nn.Parameter]
    bias_hh: Optional[nn.Parameter]
    activation: Activation

    @property
    def hidden_size(self) -> int:
        return self.weight_hh.shape[0]

    def biases(self) -> List[nn.Parameter]:
        return [b for b in (self.bias_ih, self.bias_hh) if b is not None]


@dataclass
class ElmanNet:
    """``[embedding ->] Elman layers -> linear head``, with references to the live parameters."""

    embedding: Optional[nn.Embedding]
    recurrent: nn.Module
    layers: List[ElmanLayer]
    head: nn.Linear
    per_step: bool

    @property
    def input_size(self) -> int:
        """Features entering the first recurrent layer."""
        return self.layers[0].weight_ih.shape[1]

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.recurrent, "batch_first", False))

    def parameters(self) -> List[nn.Parameter]:
        """Every parameter once, in model order (a weight tied between two modules appears once)."""
        found, seen = [], set()
        modules = ([self.embedding] if self.embedding is not None else []) + [self.recurrent, self.head]
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
        return found


def elman_net(model: nn.Module, purpose: str) -> ElmanNet:
    """Read ``model``'s structure; ``purpose`` (e.g. ``"Path-SGD"``) starts any refusal message."""
    embedding, recurrent, head = None, None, None
    for name, child in model.named_children():
        if isinstance(child, _IGNORED):
            continue
        if isinstance(child, nn.Embedding) and embedding is None and recurrent is None:
            embedding = child
        elif isinstance(child, (IRNN, nn.RNN)) and recurrent is None:
            recurrent = child
        elif isinstance(child, nn.Linear) and recurrent is not None and head is None:
            head = child
        else:
            raise ConfigError(f"{purpose} supports [embedding ->] IRNN/RNN -> Linear networks; "
                              f"the model's {type(child).__name__} {name!r} does not fit there")
    if recurrent is None or head is None:
        missing = "recurrent IRNN/RNN layer" if recurrent is None else "Linear read-out after its recurrent layer"
        raise ConfigError(f"{purpose} supports [embedding ->] IRNN/RNN -> Linear networks; "
                          f"the model ({type(model).__name__}) has no {missing}")
    if getattr(recurrent, "bidirectional", False):
        raise ConfigError(f"{purpose} supports unidirectional recurrent layers only")
    net = ElmanNet(embedding, recurrent, _layers(recurrent), head,
                   per_step=bool(getattr(model, "per_step", True)))
    covered = {id(p) for p in net.parameters()}
    stray = [name for name, p in model.named_parameters() if id(p) not in covered]
    if stray:
        raise ConfigError(f"{purpose} cannot account for the parameter(s) {', '.join(stray)} "
                          "outside the embedding, recurrent stack and read-out")
    return net


def _layers(recurrent: nn.Module) -> List[ElmanLayer]:
    # nn.RNN names its activation 'tanh' or 'relu'; IRNN carries a resolved Activation.
    activation = recurrent.activation if isinstance(recurrent, IRNN) else get_activation(recurrent.nonlinearity)
    return [ElmanLayer(getattr(recurrent, f"weight_ih_l{k}"), getattr(recurrent, f"weight_hh_l{k}"),
                       getattr(recurrent, f"bias_ih_l{k}", None), getattr(recurrent, f"bias_hh_l{k}", None),
                       activation)
            for k in range(recurrent.num_layers)]
