"""Generated long-dependency tasks: the adding problem and the copy-memory task.

Both are made of sequences of length ``T`` (``--seq-len``) drawn from a seeded random generator,
so nothing is downloaded and every run can say exactly which sequences it saw.

**Data.** The training, validation and test sets are fixed for a run, generated from
``--data-seed`` (recorded in ``config.json``), each from its own random stream, so changing one
set's size never changes another set. Sets are *prefix-stable*: ``--limit-train 1000`` gives the
first 1,000 sequences of the full 100,000-sequence training set, and ``--limit-test`` the first
sequences of the validation and test sets, as on MNIST. A fixed training set (Le et al. 2015's
protocol) rather than fresh data every epoch keeps an "epoch" meaning the same on every task and
makes a resumed run bit-identical to an uninterrupted one through the trainer's ordinary
checkpoint. ``--seed`` changes the weights and the batch order, not the data; vary
``--data-seed`` to draw other sequences.

Sizes: training ``--limit-train`` (default 100,000), validation ``--val-size`` (default 5,000)
and test 10,000 sequences, the last two capped by ``--limit-test``.

**Baselines.** Each task records in the run's resolved info (``config.json``) what a model that
learned nothing scores, and ``irnn compare`` / ``irnn report`` print it beside the results.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .tasks import Task, TaskData

DEFAULT_N_TRAIN = 100_000
DEFAULT_N_TEST = 10_000
# Independent random streams per split: changing the size of one set leaves the others unchanged.
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def _rng(data_seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([data_seed, _SPLIT_STREAMS[split]])


class GeneratedTask(Task):
    """A task whose splits are generated from ``config.data_seed`` (see the module docstring).

    Subclasses set ``default_seq_len`` and ``min_seq_len`` and implement :meth:`generate` and
    :meth:`baseline`.
    """

    default_seq_len = 100
    min_seq_len = 1

    def setup(self) -> None:
        c = self.config
        self.seq_len = c.seq_len if c.seq_len is not None else self.default_seq_len
        if self.seq_len < self.min_seq_len:
            raise ConfigError(f"--seq-len must be at least {self.min_seq_len} for the {self.name} task "
                              f"(got {self.seq_len})")

    def generate(self, n: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences and their targets; row ``i`` must depend only on the first ``i + 1`` draws."""
        raise NotImplementedError

    def baseline(self) -> dict:
        """What a model that learned nothing scores: a description and ``test_<key>`` values."""
        raise NotImplementedError

    def load(self) -> TaskData:
        c = self.config
        n_train = c.limit_train or DEFAULT_N_TRAIN
        n_val = min(c.val_size, c.limit_test) if c.limit_test else c.val_size
        n_test = min(DEFAULT_N_TEST, c.limit_test) if c.limit_test else DEFAULT_N_TEST
        splits = {name: self.generate(n, _rng(c.data_seed, name))
                  for name, n in (("train", n_train), ("val", n_val), ("test", n_test))}
        info = {"seq_len": self.seq_len, "data_seed": c.data_seed, "data_source": f"generated (numpy {np.__version__})",
                "n_train": n_train, "n_val": n_val, "n_test": n_test, "baseline": self.baseline()}
        return TaskData(splits["train"], splits["val"], splits["test"], info)


class AddingTask(GeneratedTask):
    """The adding problem (Hochreiter & Schmidhuber 1997; as set up in Le et al. 2015).

    Each step carries two channels: a value drawn from U(0, 1) and a marker (0 or 1). Exactly one
    step in the first half (steps ``0 .. T//2 - 1``) and one in the second half are marked; the
    target is the sum of the two marked values, read out after the last step. The loss and the
    metric are the mean squared error. Predicting 1 for every sequence scores
    ``Var(a + b) = 2/12 = 1/6``: a run only learned something once it is clearly below that.
    """

    name = "adding"
    metric = "mse"
    higher_is_better = False
    thresholds = (0.1, 0.01, 0.001)
    input_size = 2
    output_size = 1
    default_seq_len = 200
    min_seq_len = 2  # one marker per half needs two halves

    def generate(self, n: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        T, half = self.seq_len, self.seq_len // 2
        # One draw of T + 2 uniforms per sequence (T values, 2 marker positions) keeps sets prefix-stable.
        u = rng.random((n, T + 2))
        values = u[:, :T]
        first = np.floor(u[:, T] * half).astype(np.int64)
        second = half + np.floor(u[:, T + 1] * (T - half)).astype(np.int64)
        rows = np.arange(n)
        markers = np.zeros((n, T))
        markers[rows, first] = markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1).astype(np.float32)
        y = (values[rows, first] + values[rows, second]).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)

    def baseline(self) -> dict:
        return {"description": "predict 1 for every sequence, analytic 1/6", "test_mse": 1 / 6}

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(-1), target)

    def metric_sum(self, output: torch.Tensor, target: torch.Tensor) -> Tuple[float, int]:
        return float(((output.reshape(-1) - target) ** 2).sum()), target.numel()


class CopyTask(GeneratedTask):
    """The copy-memory task (Hochreiter & Schmidhuber 1997; as set up in Arjovsky et al. 2016).

    Symbols: 0 is the blank, 1-8 the data categories, 9 the delimiter. The input is 10 symbols
    drawn uniformly from 1-8, then ``T - 1`` blanks, the delimiter, and 10 more blanks
    (``T + 20`` steps, one-hot encoded); the target is blank for ``T + 10`` steps and then the 10
    symbols. The model predicts one of the 9 output symbols (the delimiter is never a target) at
    every step, and the loss is the cross-entropy averaged over all ``T + 20`` steps, as in the
    paper, so the memoryless baseline (blanks, then a uniform guess among the 8 categories) scores
    ``10 log 8 / (T + 20)`` on the loss.

    The metric is the accuracy on the 10 recall steps only: on all steps even the baseline would
    score above 97%, since almost every target is a blank. Chance is 1/8.
    """

    name = "copy"
    per_step = True
    thresholds = (0.5, 0.9, 0.99)
    n_symbols = 10  # to remember
    n_categories = 8
    input_size = n_categories + 2  # + blank + delimiter
    output_size = n_categories + 1  # + blank
    delimiter = n_categories + 1
    default_seq_len = 100

    def generate(self, n: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        T, k = self.seq_len, self.n_symbols
        symbols = 1 + np.floor(rng.random((n, k)) * self.n_categories).astype(np.uint8)
        # Stored as uint8 codes (one-hot only per batch, in forward): T = 500 would otherwise
        # need 2 GB for the default training set.
        x = np.zeros((n, T + 2 * k), dtype=np.uint8)
        x[:, :k] = symbols
        x[:, T + k - 1] = self.delimiter
        y = np.zeros((n, T + 2 * k), dtype=np.uint8)
        y[:, T + k:] = symbols
        return torch.from_numpy(x), torch.from_numpy(y)

    def baseline(self) -> dict:
        T, k = self.seq_len, self.n_symbols
        return {"description": f"memoryless at T={T}: blanks, then a uniform guess among the "
                               f"{self.n_categories} symbols",
                "test_loss": k * math.log(self.n_categories) / (T + 2 * k), "test_acc": 1 / self.n_categories}

    def forward(self, model: nn.Module, x: torch.Tensor, state=None):
        return model(F.one_hot(x.long(), self.input_size).float()), None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1).long())

    def metric_sum(self, output: torch.Tensor, target: torch.Tensor) -> Tuple[float, int]:
        recall_pred = output[:, -self.n_symbols:].argmax(-1)
        recall_target = target[:, -self.n_symbols:].long()
        return float((recall_pred == recall_target).sum()), recall_target.numel()
