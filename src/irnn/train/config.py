"""Training configuration: one dataclass holds every setting of a run.

The command line (``irnn train``), sweep specs and presets are all built from :class:`TrainConfig`'s
fields, so a setting is declared once, here, with its help text. A run directory's
``config.json`` is this dataclass plus the library versions and resolved values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..errors import ConfigError
from ..models.activations import ACTIVATION_NAMES
from ..models.inits import INIT_NAMES

OPTIMIZERS = ("rmsprop", "adam", "sgd", "pathsgd")
MODELS = ("irnn", "lstm", "gru", "rnn")


def _opt(default, help, choices=None, flag=None):
    """A dataclass field carrying its command-line help (and choices)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are a ReLU IRNN-100 on sequential MNIST."""

    task: str = _opt("smnist", "task: smnist, pmnist, sfmnist, adding, copy, ptb-word, ptb-char, shakespeare or text:PATH")
    model: str = _opt("irnn", "recurrent model", MODELS)
    act: str = _opt("relu", "IRNN activation", ACTIVATION_NAMES)
    act_param: Optional[float] = _opt(None, "activation parameter: ELU alpha (default 1) or leaky-ReLU slope (0.01)")
    hidden: int = _opt(100, "hidden units per layer")
    layers: int = _opt(1, "recurrent layers")
    dropout: float = _opt(0.0, "dropout between recurrent layers (language models: also on the input and before "
                               "the softmax, as Zaremba et al. 2014)")
    recurrent_init: str = _opt("identity", "IRNN recurrent-weight initialiser", INIT_NAMES)
    recurrent_gain: float = _opt(1.0, "scale of the recurrent initialiser (identity: the diagonal value)")
    input_init: str = _opt("glorot_normal", "IRNN input-weight initialiser", INIT_NAMES)
    epochs: int = _opt(50, "training epochs")
    batch_size: int = _opt(32, "training batch size")
    eval_batch_size: Optional[int] = _opt(None, "batch size for validation and test (default: the task's; 1000, "
                                                "language models 10 streams)")
    optimizer: str = _opt("rmsprop", "optimizer", OPTIMIZERS)
    lr: float = _opt(1e-4, "initial learning rate")
    momentum: float = _opt(0.9, "momentum (sgd and pathsgd only)")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    clip: float = _opt(1.0, "gradient-norm clipping threshold (0 disables)")
    pathsgd_unroll: Optional[int] = _opt(None, "Path-SGD: time steps of the scaling pass (default: the task's sequence length)")
    pathsgd_every: int = _opt(1, "Path-SGD: recompute the path scaling kappa every K steps")
    lr_factor: float = _opt(0.5, "multiply the learning rate by this when validation stalls (or as --lr-decay-after says)")
    lr_decay_after: Optional[int] = _opt(None, "fixed schedule instead of the plateau one: multiply the rate by "
                                               "--lr-factor after this epoch and after every later one (Zaremba et al.)")
    lr_patience: int = _opt(3, "epochs without validation improvement before lowering the rate")
    min_lr: float = _opt(1e-7, "the rate is never lowered below this")
    max_rollbacks: int = _opt(3, "on a non-finite loss, roll back to the last checkpoint with a lower rate at most this often")
    seed: int = _opt(0, "seed for weights and data order")
    perm_seed: int = _opt(0, "seed of the fixed pixel permutation (pmnist)")
    seq_len: Optional[int] = _opt(None, "sequence length T of the adding and copy tasks "
                                        "(default: adding 200, copy 100)")
    data_seed: int = _opt(0, "seed of the generated training, validation and test sequences (adding, copy)")
    bptt: int = _opt(35, "language models: truncated-BPTT segment length in tokens (the state is carried, "
                         "detached, from segment to segment)")
    text_level: Optional[str] = _opt(None, "language models: tokens of shakespeare and text:PATH (default: char; "
                                           "ptb-word and ptb-char fix their own)", ("char", "word"))
    embed: Optional[int] = _opt(None, "language models: input embedding size, 0 for one-hot input "
                                      "(default: --hidden at word level, one-hot at char level)")
    tie_weights: bool = _opt(False, "language models: use the input embedding as the softmax weights (needs --embed = --hidden)")
    pixels_per_step: int = _opt(1, "MNIST pixels fed per time step (1: 784 steps; 28: row by row, 28 steps)")
    normalize: bool = _opt(False, "standardise pixels with MNIST's mean/std instead of plain [0, 1]")
    val_size: int = _opt(5000, "validation sequences: MNIST images carved from the end of the training set; "
                                "adding/copy: generated")
    limit_train: Optional[int] = _opt(None, "use only the first N training sequences (language models: tokens; quick runs)")
    limit_test: Optional[int] = _opt(None, "use only the first N validation and test sequences (language models: tokens)")
    data_dir: Optional[str] = _opt(None, "folder with the dataset files (default: $IRNN_DATA, cache, download)")
    device: str = _opt("cpu", "cpu or cuda", ("cpu", "cuda"))
    threads: Optional[int] = _opt(None, "CPU threads (default: torch's default)")
    deterministic: bool = _opt(False, "ask torch for deterministic algorithms (CUDA needs it; CPU kernels already are)")
    tensorboard: bool = _opt(False, "also write TensorBoard event files")
    diagnose_at: Optional[str] = _opt(None, "write gradient-flow diagnostics and keep the weights at these epochs, "
                                            "e.g. 1,10,last or every:5 (see docs/diagnostics.md)")

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first bad setting; return self."""
        from ..data.tasks import TASK_NAMES  # late import: tasks import models

        if self.task not in TASK_NAMES and not self.task.startswith("text:"):
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASK_NAMES)}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:  # None: the default is resolved later
                raise ConfigError(f"--{_flag(f.name)}: unknown value {value!r}; choose one of {', '.join(choices)}")
        positive = ("hidden", "layers", "epochs", "batch_size", "val_size", "pixels_per_step",
                    "pathsgd_every", "bptt")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer (got {value!r})")
        for name in ("limit_train", "limit_test", "threads", "seq_len", "pathsgd_unroll", "eval_batch_size",
                     "lr_decay_after"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{_flag(name)} must be a positive integer (got {value!r})")
        for name in ("lr", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--{_flag(name)} must be a positive number (got {value!r})")
        for name in ("clip", "weight_decay", "momentum", "recurrent_gain"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{_flag(name)} must be a number >= 0 (got {value!r})")
        if 784 % self.pixels_per_step:
            raise ConfigError(f"--pixels-per-step must divide 784 (got {self.pixels_per_step}); try 1, 4, 7, 16, 28")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"--lr-factor must be between 0 and 1 (got {self.lr_factor})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if self.lr_patience < 0 or self.max_rollbacks < 0:
            raise ConfigError("--lr-patience and --max-rollbacks must be >= 0")
        # Resolving the activation checks its parameter (e.g. ELU alpha > 0).
        from ..models.activations import get_activation

        get_activation(self.act, self.act_param)
        if self.diagnose_at is not None:
            from ..diagnostics import parse_epoch_spec  # late import: diagnostics read run directories

            parse_epoch_spec(self.diagnose_at, self.epochs)
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Build from a mapping, refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Settings that may differ between a run and its resumption without changing its result.
RESUMABLE_DIFFERENCES = frozenset({"epochs", "data_dir", "tensorboard", "diagnose_at"})


def _flag(name: str) -> str:
    return name.replace("_", "-")


def config_fields():
    """The dataclass fields, for building command lines and checking sweep specs."""
    return dataclasses.fields(TrainConfig)
