"""Optimizers and the learning-rate schedule.

The schedule is torch's ``ReduceLROnPlateau`` on the validation metric: when it has not
improved for ``lr_patience`` epochs the rate is multiplied by ``lr_factor`` (never below
``min_lr``). That is the seed experiment's "lower the rate when accuracy doesn't change much".
With ``lr_decay_after`` set, :class:`FixedDecay` replaces it: Zaremba et al.'s (2014) language-model
schedule, which multiplies the rate by ``lr_factor`` after every epoch from that one on.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def make_optimizer(config, params, model=None) -> torch.optim.Optimizer:
    """RMSprop (the Keras example's; Keras's rho=0.9, eps=1e-7 are used), Adam, SGD with momentum, or
    Path-SGD (:mod:`irnn.train.pathsgd`; it reads the structure of ``model``, so it needs it)."""
    if config.optimizer == "pathsgd":
        from .pathsgd import PathSGD

        if model is None:
            raise ConfigError("the pathsgd optimizer needs the model, not only its parameters")
        return PathSGD(model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                       unroll=config.pathsgd_unroll, kappa_every=config.pathsgd_every)
    params = list(params)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-7, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}")


class FixedDecay:
    """Multiply the rate by ``factor`` after epoch ``after`` and after every later epoch (never
    below ``min_lr``), whatever the validation score does.

    It offers what the trainer uses of ``ReduceLROnPlateau``: ``step(metric)`` once per epoch (the
    metric is ignored), ``state_dict`` and ``load_state_dict``. It scales the current rate, so a
    rate cut made by a rollback after a non-finite loss stays in force.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, after: int, factor: float, min_lr: float):
        self.optimizer, self.after, self.factor, self.min_lr = optimizer, after, factor, min_lr
        self.epochs_done = 0

    def step(self, metric=None) -> None:
        self.epochs_done += 1
        if self.epochs_done >= self.after:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = state["epochs_done"]


def make_scheduler(config, optimizer, higher_is_better: bool):
    """Plateau schedule on the validation metric, or the fixed decay when ``lr_decay_after`` is set."""
    if config.lr_decay_after is not None:
        return FixedDecay(optimizer, config.lr_decay_after, config.lr_factor, config.min_lr)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if higher_is_better else "min", factor=config.lr_factor,
        patience=config.lr_patience, min_lr=config.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Multiply every group's learning rate by ``factor``; return the new rate of the first group."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
    return optimizer.param_groups[0]["lr"]
