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

OPTIMIZERS = ("rmsprop", "adam", "sgd")
MODELS = ("irnn", "lstm", "gru", "rnn")


def _opt(default, help, choices=None, flag=None):
    """A dataclass field carrying its command-line help (and choices)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are a ReLU IRNN-100 on sequential MNIST."""

    task: str = _opt("smnist", "task to train on (see `irnn tasks`)")
    model: str = _opt("irnn", "recurrent model", MODELS)
    act: str = _opt("relu", "IRNN activation", ACTIVATION_NAMES)
    act_param: Optional[float] = _opt(None, "activation parameter: ELU alpha (default 1) or leaky-ReLU slope (0.01)")
    hidden: int = _opt(100, "hidden units per layer")
    layers: int = _opt(1, "recurrent layers")
    dropout: float = _opt(0.0, "dropout between recurrent layers")
    recurrent_init: str = _opt("identity", "IRNN recurrent-weight initialiser", INIT_NAMES)
    recurrent_gain: float = _opt(1.0, "scale of the recurrent initialiser (identity: the diagonal value)")
    input_init: str = _opt("glorot_normal", "IRNN input-weight initialiser", INIT_NAMES)
    epochs: int = _opt(50, "training epochs")
    batch_size: int = _opt(32, "training batch size")
    eval_batch_size: int = _opt(1000, "batch size for validation and test")
    optimizer: str = _opt("rmsprop", "optimizer", OPTIMIZERS)
    lr: float = _opt(1e-4, "initial learning rate")
    momentum: float = _opt(0.9, "SGD momentum (sgd only)")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    clip: float = _opt(1.0, "gradient-norm clipping threshold (0 disables)")
    lr_factor: float = _opt(0.5, "multiply the learning rate by this when validation stalls")
    lr_patience: int = _opt(3, "epochs without validation improvement before lowering the rate")
    min_lr: float = _opt(1e-7, "the rate is never lowered below this")
    max_rollbacks: int = _opt(3, "on a non-finite loss, roll back to the last checkpoint with a lower rate at most this often")
    seed: int = _opt(0, "seed for weights and data order")
    perm_seed: int = _opt(0, "seed of the fixed pixel permutation (pmnist)")
    pixels_per_step: int = _opt(1, "MNIST pixels fed per time step (1: 784 steps; 28: row by row, 28 steps)")
    normalize: bool = _opt(False, "standardise pixels with MNIST's mean/std instead of plain [0, 1]")
    val_size: int = _opt(5000, "validation images carved from the end of the training set")
    limit_train: Optional[int] = _opt(None, "use only the first N training sequences (quick runs)")
    limit_test: Optional[int] = _opt(None, "use only the first N validation and test sequences")
    data_dir: Optional[str] = _opt(None, "folder with the dataset files (default: $IRNN_DATA, cache, download)")
    device: str = _opt("cpu", "cpu or cuda", ("cpu", "cuda"))
    threads: Optional[int] = _opt(None, "CPU threads (default: torch's default)")
    deterministic: bool = _opt(False, "ask torch for deterministic algorithms (CUDA needs it; CPU kernels already are)")
    tensorboard: bool = _opt(False, "also write TensorBoard event files")

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first bad setting; return self."""
        from ..data.tasks import TASK_NAMES  # late import: tasks import models

        if self.task not in TASK_NAMES and not self.task.startswith("text:"):
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASK_NAMES)}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"--{_flag(f.name)}: unknown value {value!r}; choose one of {', '.join(choices)}")
        positive = ("hidden", "layers", "epochs", "batch_size", "eval_batch_size", "val_size", "pixels_per_step")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer (got {value!r})")
        for name in ("limit_train", "limit_test", "threads"):
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
RESUMABLE_DIFFERENCES = frozenset({"epochs", "data_dir", "tensorboard"})


def _flag(name: str) -> str:
    return name.replace("_", "-")


def config_fields():
    """The dataclass fields, for building command lines and checking sweep specs."""
    return dataclasses.fields(TrainConfig)
