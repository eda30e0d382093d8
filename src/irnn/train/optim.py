"""Optimizers and the learning-rate schedule.

The schedule is torch's ``ReduceLROnPlateau`` on the validation metric: when it has not
improved for ``lr_patience`` epochs the rate is multiplied by ``lr_factor`` (never below
``min_lr``). That is the seed experiment's "lower the rate when accuracy doesn't change much".
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """RMSprop (the Keras example's; Keras's rho=0.9, eps=1e-7 are used), Adam, or SGD with momentum."""
    params = list(params)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-7, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}")


def make_scheduler(config, optimizer, higher_is_better: bool):
    """Plateau schedule on the validation metric."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if higher_is_better else "min", factor=config.lr_factor,
        patience=config.lr_patience, min_lr=config.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Multiply every group's learning rate by ``factor``; return the new rate of the first group."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
    return optimizer.param_groups[0]["lr"]
