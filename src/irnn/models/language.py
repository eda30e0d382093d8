"""Recurrent language models: token in, a softmax over the vocabulary out, at every step.

:class:`LanguageModel` is an input layer (a learned embedding, or one-hot vectors), a recurrent
stack from :func:`~irnn.models.sequence.make_recurrent` (IRNN with any activation, LSTM, GRU or
tanh RNN) and a linear softmax layer, optionally tied to the embedding (Press & Wolf 2017).

Dropout follows Zaremba et al. (2014): it is applied to the non-recurrent connections only, that
is the input of the first layer, the connections between layers (inside the stack), and the top
layer's output before the softmax; never to the state carried from step to step.

Initialisation: embedding and softmax weights uniform in [-0.1, 0.1], softmax bias zero
(Zaremba et al.'s choice); the recurrent stack keeps its own initialisers (IRNN: identity
recurrent and Glorot-normal input weights; LSTM, GRU, RNN: PyTorch's uniform(+-1/sqrt(H))).

:func:`count_parameters` gives a model's size from its shape without building it, and
:func:`matched_hidden` finds the hidden size at which one kind of model has as many parameters
as another: that is how the char-level PTB presets compare models at equal size.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .sequence import RECURRENT_KINDS, make_recurrent

# Weight blocks per layer: an LSTM has 4 gates, each with its own W_ih, W_hh, b_ih and b_hh.
GATES = {"irnn": 1, "rnn": 1, "gru": 3, "lstm": 4}
INIT_RANGE = 0.1


class LanguageModel(nn.Module):
    """Next-token model: ``forward(tokens, state)`` returns per-step logits and the final state.

    Args:
        vocab_size: number of token types (input and output).
        kind: ``irnn``, ``lstm``, ``gru`` or ``rnn`` (tanh).
        hidden, layers: size of the recurrent stack.
        embed: embedding size; 0 feeds one-hot vectors instead; None means ``hidden``.
        dropout: Zaremba-style dropout probability (see the module docstring).
        tie_weights: use the embedding matrix as the softmax weights (needs ``embed == hidden``).
        **recurrent_options: passed to :func:`make_recurrent` (``activation``, ``recurrent_init``, ...).
    """

    def __init__(self, vocab_size: int, kind: str = "lstm", hidden: int = 200, layers: int = 1, *,
                 embed: Optional[int] = None, dropout: float = 0.0, tie_weights: bool = False, **recurrent_options):
        super().__init__()
        embed = hidden if embed is None else embed
        check_input_options(hidden, embed, tie_weights)
        self.vocab_size, self.embed, self.tie_weights = vocab_size, embed, tie_weights
        self.encoder = nn.Embedding(vocab_size, embed) if embed else None
        # The stack applies dropout between its layers only; torch warns if asked to with one layer.
        self.recurrent = make_recurrent(kind, embed or vocab_size, hidden, layers,
                                        dropout=dropout if layers > 1 else 0.0, **recurrent_options)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab_size)
        if self.encoder is not None:
            nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.uniform_(self.decoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        # The vocabulary (``Vocab.to_dict()``), set by the task. It is saved with the weights (see
        # get_extra_state), so a checkpoint alone can turn ids back into text.
        self.vocabulary: Optional[dict] = None

    def forward(self, tokens: torch.Tensor, state=None):
        """``tokens``: int64 ``(B, T)``. Returns logits ``(B, T, vocab_size)`` and the state after
        step ``T`` (``(layers, B, H)``, or ``(h, c)`` for an LSTM), to pass to the next call."""
        if self.encoder is not None:
            inputs = self.encoder(tokens)
        else:
            inputs = F.one_hot(tokens, self.vocab_size).to(self.decoder.weight.dtype)
        output, state = self.recurrent(self.drop(inputs), state)
        return self.decoder(self.drop(output)), state

    def get_extra_state(self):
        return {"vocabulary": self.vocabulary}

    def set_extra_state(self, state) -> None:
        self.vocabulary = state["vocabulary"]


def check_input_options(hidden: int, embed: int, tie_weights: bool) -> None:
    """Raise :class:`ConfigError` unless the embedding options fit together."""
    if not isinstance(embed, int) or isinstance(embed, bool) or embed < 0:
        raise ConfigError(f"--embed must be an integer >= 0, 0 for one-hot input (got {embed!r})")
    if tie_weights and embed != hidden:
        got = "one-hot input" if embed == 0 else f"--embed {embed}"
        raise ConfigError(f"--tie-weights uses the embedding as the softmax weights, so it needs an "
                          f"embedding of size --hidden ({hidden}); got {got}")


def count_parameters(kind: str, vocab_size: int, hidden: int, layers: int = 1, embed: Optional[int] = None,
                     tie_weights: bool = False) -> int:
    """The number of parameters of ``LanguageModel(vocab_size, kind, hidden, layers, embed=...)``,
    from the shapes alone (``embed`` as in :class:`LanguageModel`)."""
    if kind not in GATES:
        raise ConfigError(f"unknown model {kind!r}; choose one of {', '.join(RECURRENT_KINDS)}")
    embed = hidden if embed is None else embed
    total = vocab_size * embed  # the embedding table; none for one-hot input
    for layer in range(layers):
        inputs = (embed or vocab_size) if layer == 0 else hidden
        total += GATES[kind] * hidden * (inputs + hidden + 2)  # W_ih, W_hh, b_ih, b_hh per gate
    total += vocab_size if tie_weights else hidden * vocab_size + vocab_size  # softmax (bias only if tied)
    return total


def matched_hidden(kind: str, target: int, vocab_size: int, layers: int = 1, embed: Optional[int] = None,
                   tie_weights: bool = False) -> int:
    """The hidden size at which a ``kind`` model's :func:`count_parameters` is closest to ``target``."""
    def count(hidden: int) -> int:
        return count_parameters(kind, vocab_size, hidden, layers, embed, tie_weights)

    # The count grows with the hidden size: bracket the target, then bisect for the first size at
    # or above it; the answer is that size or the one below.
    high = 1
    while count(high) < target:
        high *= 2
    low = 1
    while low < high:
        mid = (low + high) // 2
        if count(mid) < target:
            low = mid + 1
        else:
            high = mid
    return min({max(low - 1, 1), low}, key=lambda h: (abs(count(h) - target), h))


@torch.no_grad()
def generate(model: LanguageModel, context: Sequence[int], length: int, temperature: float = 1.0,
             generator: Optional[torch.Generator] = None) -> List[int]:
    """``length`` token ids sampled one at a time after the model has read ``context``.

    Each token is drawn from ``softmax(logits / temperature)`` with ``generator``;
    ``temperature == 0`` takes the most likely token instead (no randomness).
    """
    if not context:
        raise ConfigError("generation needs at least one context token")
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device

    def pick(logits: torch.Tensor) -> int:
        if temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.double() / temperature, -1)  # double: low temperatures stay finite
        return int(torch.multinomial(probs, 1, generator=generator))

    logits, state = model(torch.tensor([list(context)], device=device))
    tokens: List[int] = []
    for _ in range(length):
        tokens.append(pick(logits[0, -1].cpu()))
        logits, state = model(torch.tensor([[tokens[-1]]], device=device), state)
    model.train(was_training)
    return tokens
