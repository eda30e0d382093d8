"""Language-modelling tasks: ``--task ptb-word | ptb-char | shakespeare | text:PATH``.

The corpora (files, tokens, vocabularies, splits) are in :mod:`irnn.data.text`, the model in
:mod:`irnn.models.language`; this module turns them into a :class:`~irnn.data.tasks.Task` for the
ordinary trainer, and samples text from a finished run (``irnn sample``).

**Batching.** A split's token ids are laid out as ``B`` parallel streams (``B`` is
``--batch-size`` for training and the evaluation batch size for validation and test): stream
``b`` is the ``b``-th contiguous ``1/B`` of the split, and the fewer than ``B`` tokens left over
at the end are dropped. Each batch holds the next ``--bptt`` columns of the streams: inputs
``(B, bptt)`` (the last batch may be shorter) and targets, the tokens one position later. A batch
therefore continues every stream exactly where the previous batch stopped, so the state the model
ends a batch with is the right one to start the next: the trainer carries it over, detached
(truncated backpropagation through time), and starts from zeros at the beginning of every
epoch and of every evaluation. Streams are never shuffled; the order is the text's.

**Evaluation.** Validation and test run with ``--eval-batch-size`` streams (default 10) and the
state carried from the first token of each stream to its last, so every token except the first
of each stream is predicted from all the text before it in its stream. ``--eval-batch-size 1``
is the exact one-stream protocol (Zaremba et al.'s test evaluation) and costs more time.

**Metrics.** Computed from the log-likelihood summed over every predicted token of the split,
then divided once by the token count: perplexity ``exp(-sum ln p / N)`` at word level (``ppl``),
bits per character ``-sum log2 p / N`` at char level (``bpc``); lower is better. The loss the
optimiser minimises is the mean cross-entropy per token, in nats, so ``train_loss`` and
``val_loss`` are ``ln(ppl)`` or ``bpc * ln 2``. Throughput is logged as ``tokens_per_sec``.

**Quick runs.** ``--limit-train N`` keeps the first ``N`` tokens of the training split and
``--limit-test N`` the first ``N`` of validation and test. The vocabulary is still built from
the whole training split, so the model has the same shape with and without them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, RunDirError
from ..models.language import LanguageModel, check_input_options, generate
from .tasks import Split, Task, TaskData
from .text import Vocab, corpus_format, load_corpus

DEFAULT_EVAL_STREAMS = 10


def stream_layout(split: Split, streams: int, what: str = "split") -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``split`` as ``(streams, length)`` matrices, one stream per row.

    Raises:
        ConfigError: the split has fewer tokens than streams.
    """
    inputs, targets = split
    length = len(inputs) // streams
    if length < 1:
        raise ConfigError(f"the {what} has {len(inputs)} tokens to predict, fewer than the {streams} streams "
                          "asked for; lower the batch size or raise --limit-train/--limit-test")
    return inputs[: streams * length].view(streams, length), targets[: streams * length].view(streams, length)


def segments(inputs: torch.Tensor, targets: torch.Tensor, bptt: int) -> Iterator[Split]:
    """Consecutive ``bptt``-column slices of the stream matrices, in order."""
    for start in range(0, inputs.shape[1], bptt):
        yield inputs[:, start:start + bptt], targets[:, start:start + bptt]


class LanguageModelTask(Task):
    """Next-token prediction on a text corpus (see the module docstring).

    The level comes from the task: ``ptb-word`` is word level, ``ptb-char`` char level, and
    ``shakespeare`` and ``text:PATH`` char level unless ``--text-level word``. Word level reports
    perplexity, char level bits per character.
    """

    per_step = True
    higher_is_better = False
    unit = "tokens"
    default_eval_batch_size = DEFAULT_EVAL_STREAMS

    def setup(self) -> None:
        c = self.config
        self.name = c.task
        self.fmt = corpus_format(c.task, c.text_level)
        self.level = "word" if self.fmt == "word" else "char"
        self.metric = "ppl" if self.level == "word" else "bpc"
        # A learned embedding of size --hidden at word level (Zaremba et al.); one-hot vectors at
        # char level, where the first layer's input weights already are an embedding.
        self.embed = c.embed if c.embed is not None else (c.hidden if self.level == "word" else 0)
        check_input_options(c.hidden, self.embed, c.tie_weights)  # now, not after loading the data
        self.vocab: Optional[Vocab] = None  # known once load() has read the training split

    # -- data -----------------------------------------------------------------
    def load(self) -> TaskData:
        c = self.config
        corpus = load_corpus(c.task, c.data_dir, level=c.text_level)
        self.vocab = corpus.vocab
        train = corpus.train[: c.limit_train] if c.limit_train else corpus.train
        valid, test = ((ids[: c.limit_test] if c.limit_test else ids) for ids in (corpus.valid, corpus.test))
        # Targets are the inputs shifted by one token.
        splits = [(ids[:-1], ids[1:]) for ids in (train, valid, test)]
        eval_streams = c.eval_batch_size or self.default_eval_batch_size
        for what, split, streams in (("training split", splits[0], c.batch_size),
                                     ("validation split", splits[1], eval_streams),
                                     ("test split", splits[2], eval_streams)):
            stream_layout(split, streams, what)  # refuse now rather than at the first batch
        info = {
            "data_source": corpus.source, "level": self.level, "text_format": self.fmt,
            "vocab_size": len(corpus.vocab), "embed": self.embed, "bptt": c.bptt, "eval_streams": eval_streams,
            "n_train": len(splits[0][0]), "n_val": len(splits[1][0]), "n_test": len(splits[2][0]),
            **corpus.info,
        }
        return TaskData(*splits, info)

    def train_batches(self, split: Split, batch_size: int, generator: torch.Generator) -> Iterator[Split]:
        # ``generator`` is not used: the streams must run in text order for the carried state.
        return segments(*stream_layout(split, batch_size, "training split"), self.config.bptt)

    def eval_batches(self, split: Split, batch_size: int) -> Iterator[Split]:
        return segments(*stream_layout(split, batch_size), self.config.bptt)

    def batch_items(self, x: torch.Tensor) -> int:
        return x.numel()  # tokens

    # -- model and scoring ----------------------------------------------------
    def build_model(self, vocab_size: int) -> nn.Module:
        """The configured :class:`~irnn.models.language.LanguageModel` for ``vocab_size`` tokens."""
        c = self.config
        return LanguageModel(vocab_size, c.model, c.hidden, c.layers, embed=self.embed, dropout=c.dropout,
                             tie_weights=c.tie_weights, activation=c.act, activation_param=c.act_param,
                             recurrent_init=c.recurrent_init, recurrent_gain=c.recurrent_gain,
                             input_init=c.input_init)

    def make_model(self) -> nn.Module:
        if self.vocab is None:
            raise RuntimeError("call load() before make_model(): the vocabulary sizes the model")
        model = self.build_model(len(self.vocab))
        model.vocabulary = self.vocab.to_dict()
        return model

    def forward(self, model: nn.Module, x: torch.Tensor, state=None):
        return model(x, state)

    def metric_sum(self, output: torch.Tensor, target: torch.Tensor) -> Tuple[float, int]:
        """(negative log-likelihood in nats summed over the tokens, number of tokens)."""
        nll = F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum")
        return float(nll), target.numel()

    def metric_value(self, total: float, count: int) -> float:
        mean_nll = total / max(count, 1)
        if self.metric == "bpc":
            return mean_nll / math.log(2)
        return math.exp(mean_nll) if mean_nll < 700 else math.inf  # exp overflows a float above ~709

    def format_metric(self, value: float) -> str:
        return f"{value:.2f}" if self.metric == "ppl" else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Sampling from a finished run
# --------------------------------------------------------------------------------------------


def sample_from_run(run_dir, prime: str = "", length: int = 200, temperature: float = 1.0,
                    seed: Optional[int] = None, checkpoint: str = "best") -> str:
    """Text from the language model of a run: ``prime`` followed by ``length`` sampled tokens.

    Args:
        run_dir: a run directory of a language-model task.
        prime: text to read before sampling (every character or word must be in the vocabulary);
            empty: start as at the beginning of a line.
        temperature: softmax temperature, > 0; 0 always takes the most likely token.
        seed: seed of the sampling; None draws a fresh one.
        checkpoint: ``best`` (best validation score, ``best.pt``) or ``last`` (``checkpoint.pt``).

    Raises:
        ConfigError: bad arguments, an unknown token in ``prime``, or not a language-model run.
        RunDirError: no run or no checkpoint in ``run_dir``.
    """
    from ..report.runs import load_run
    from ..train.config import TrainConfig
    from .tasks import make_task

    if not isinstance(length, int) or length < 1:
        raise ConfigError(f"-n must be a positive number of tokens (got {length!r})")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"--temperature must be >= 0 (got {temperature}); 0 always takes the most likely token")
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"--checkpoint must be best or last (got {checkpoint!r})")
    run = load_run(run_dir)
    task = make_task(TrainConfig.from_dict(run.config))
    if not isinstance(task, LanguageModelTask):
        raise ConfigError(f"{run_dir} is a {run.config.get('task')} run; irnn sample needs a language-model run "
                          "(ptb-word, ptb-char, shakespeare or text:PATH)")
    model = task.build_model(run.resolved["vocab_size"])
    model.load_state_dict(_saved_weights(Path(run_dir), checkpoint))
    vocab = Vocab.from_dict(model.vocabulary)

    try:
        context = vocab.encode_text(prime)
    except ConfigError as exc:
        raise ConfigError(f"--prime: {exc}") from None
    if not context:  # start as after a line end
        if vocab.line_end_id is None:
            raise ConfigError("this vocabulary has no line-end token to start from; give a --prime")
        context = [vocab.line_end_id]
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    new = generate(model, context, length, temperature, generator)
    return vocab.decode((context if prime else []) + new)


def _saved_weights(run_dir: Path, which: str) -> dict:
    from ..train.checkpoint import load_checkpoint
    from ..train.loop import BEST_FILE, CHECKPOINT_FILE

    if which == "last":
        return load_checkpoint(run_dir / CHECKPOINT_FILE)["model"]
    path = run_dir / BEST_FILE
    if not path.is_file():
        raise RunDirError(f"{path} does not exist: the run has not finished an epoch yet "
                          "(or use --checkpoint last for its initial weights)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise RunDirError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc
