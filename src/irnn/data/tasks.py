"""Tasks: what to learn, how to score it, and where the data comes from.

A :class:`Task` owns its data splits (train / validation / test), its loss, and the metric it
reports. The trainer, ``irnn plot`` and ``irnn compare`` only talk to this interface, so adding a
task means adding a subclass and a line in :data:`TASKS`.

Metric values are stored under ``train_<metric>``, ``val_<metric>`` and ``test_<metric>`` in
``metrics.jsonl``; accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

Split = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class TaskData:
    """The three splits of a task, each ``(inputs, targets)``, plus facts recorded with the run."""

    train: Split
    val: Split
    test: Split
    info: Dict[str, object]


class Task:
    """Base class: a sequence classification task scored by accuracy.

    Subclasses set ``input_size``/``output_size`` and implement :meth:`load`; regression or
    per-step tasks override :meth:`loss` and :meth:`metric_sum` too.
    """

    name = "task"
    metric = "acc"  # key suffix in metrics.jsonl
    higher_is_better = True
    # Metric values that `irnn compare` / `irnn report` time the first reaching of (epochs and
    # seconds); recorded in the run's resolved info so that reports need not import the task.
    thresholds: Tuple[float, ...] = ()
    per_step = False
    input_size = 1
    output_size = 10
    unit = "seq"  # what a split's items are: progress bars and the `<unit>_per_sec` epoch record
    default_eval_batch_size = 1000  # when --eval-batch-size is not given

    def __init__(self, config):
        self.config = config
        self.setup()

    def setup(self) -> None:
        """Derive sizes from the config (called on construction)."""

    # -- data -----------------------------------------------------------------
    def load(self) -> TaskData:
        raise NotImplementedError

    def train_batches(self, split: Split, batch_size: int, generator: torch.Generator) -> Iterator[Split]:
        """Shuffled minibatches of the training split (the order comes from ``generator``)."""
        x, y = split
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]

    def eval_batches(self, split: Split, batch_size: int) -> Iterator[Split]:
        x, y = split
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    def batch_items(self, x: torch.Tensor) -> int:
        """How many items (``unit``) batch ``x`` holds: the trainer weights losses and throughput by it."""
        return len(x)

    # -- model and scoring ----------------------------------------------------
    def forward(self, model: nn.Module, x: torch.Tensor, state=None):
        """Run the model on one batch; return ``(output, state)``.

        ``state`` is carried from batch to batch within an epoch (and detached by the trainer
        between batches): language models use it for truncated BPTT; other tasks ignore it.
        """
        return model(x), None

    def make_model(self) -> nn.Module:
        from ..models.sequence import SequenceModel, make_recurrent

        c = self.config
        rec = make_recurrent(c.model, self.input_size, c.hidden, c.layers, activation=c.act,
                             activation_param=c.act_param, recurrent_init=c.recurrent_init,
                             recurrent_gain=c.recurrent_gain, input_init=c.input_init, dropout=c.dropout)
        return SequenceModel(rec, self.output_size, per_step=self.per_step)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch (what is minimised)."""
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def metric_sum(self, output: torch.Tensor, target: torch.Tensor) -> Tuple[float, int]:
        """(sum of the metric over items, number of items); accuracy by default."""
        pred = output.argmax(-1)
        return float((pred == target).sum()), target.numel()

    def metric_value(self, total: float, count: int) -> float:
        """Turn a summed metric into the reported value (the mean by default; perplexity overrides)."""
        return total / max(count, 1)

    def format_metric(self, value: float) -> str:
        return f"{100 * value:.2f}%" if self.metric == "acc" else f"{value:.4f}"


class SequentialMNIST(Task):
    """MNIST, one pixel per step in row-major order (784 steps); ``pmnist`` permutes the pixels."""

    name = "smnist"
    variant = "mnist"
    permuted = False
    thresholds = (0.90, 0.95, 0.97)

    def setup(self) -> None:
        if self.config.seq_len is not None:
            raise ConfigError(f"--seq-len does not apply to {self.name} (its length is 784 / --pixels-per-step)")
        self.input_size = self.config.pixels_per_step

    def load(self) -> TaskData:
        from . import mnist

        c = self.config
        arrays = mnist.load_mnist(c.data_dir, variant=self.variant)
        perm = mnist.pixel_permutation(c.perm_seed) if self.permuted else None
        train_idx, val_idx = mnist.train_val_split(len(arrays.train_labels), c.val_size)
        if c.limit_train:
            train_idx = train_idx[:c.limit_train]
        if c.limit_test:
            val_idx = val_idx[:c.limit_test]

        def split(images, labels, idx=None):
            if idx is not None:
                images, labels = images[idx], labels[idx]
            x = mnist.to_sequences(images, permutation=perm, normalize=c.normalize)
            x = x.reshape(len(x), -1, c.pixels_per_step)
            return x, torch.as_tensor(labels, dtype=torch.long)

        test_images, test_labels = arrays.test_images, arrays.test_labels
        if c.limit_test:
            test_images, test_labels = test_images[:c.limit_test], test_labels[:c.limit_test]
        info = {"data_source": arrays.source, "n_train": len(train_idx), "n_val": len(val_idx),
                "n_test": len(test_labels)}
        if self.permuted:
            info["perm_seed"] = c.perm_seed
            info["permutation_head"] = perm[:8].tolist()
        return TaskData(split(arrays.train_images, arrays.train_labels, train_idx),
                        split(arrays.train_images, arrays.train_labels, val_idx),
                        split(test_images, test_labels), info)


class PermutedMNIST(SequentialMNIST):
    name = "pmnist"
    permuted = True
    thresholds = (0.80, 0.85, 0.90)  # Le et al. 2015 report 82% for the IRNN


class SequentialFashionMNIST(SequentialMNIST):
    """Fashion-MNIST through the sequential-MNIST pipeline (same sizes, splits and options)."""

    name = "sfmnist"
    variant = "fashion"
    thresholds = (0.80, 0.85, 0.90)


# Generated and language-modelling tasks live in their own modules; they import Task from here,
# so they are imported last.
from .synthetic import AddingTask, CopyTask  # noqa: E402
from .lm import LanguageModelTask  # noqa: E402

TASKS: Dict[str, Callable[..., Task]] = {
    "smnist": SequentialMNIST,
    "pmnist": PermutedMNIST,
    "sfmnist": SequentialFashionMNIST,
    "adding": AddingTask,
    "copy": CopyTask,
    "ptb-word": LanguageModelTask,
    "ptb-char": LanguageModelTask,
    "shakespeare": LanguageModelTask,
    "text:PATH": LanguageModelTask,  # any text file: --task text:corpus.txt
}
TASK_NAMES = tuple(TASKS)


def make_task(config) -> Task:
    """The task named by ``config.task``."""
    try:
        cls = TASKS["text:PATH" if config.task.startswith("text:") else config.task]
    except KeyError:
        raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASK_NAMES)}") from None
    return cls(config)
