"""Training: configuration, the loop, optimizers and schedules, checkpoints."""

from .config import TrainConfig
from .loop import evaluate, read_metrics, read_run_config, train

__all__ = ["TrainConfig", "train", "evaluate", "read_metrics", "read_run_config"]
