"""Datasets: MNIST / Fashion-MNIST loading and pixel-sequence helpers."""

from irnn.data.mnist import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_STD,
    SEQ_LEN,
    IdxFile,
    MnistArrays,
    default_cache_dir,
    load_mnist,
    pixel_permutation,
    read_idx,
    to_sequences,
    train_val_split,
)
# The task registry first: task modules such as synthetic.py subclass tasks.Task and are
# imported by it, so importing one of them directly must find the registry loaded.
from irnn.data import tasks as _tasks  # noqa: E402,F401

__all__ = [
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_STD",
    "SEQ_LEN",
    "IdxFile",
    "MnistArrays",
    "default_cache_dir",
    "load_mnist",
    "pixel_permutation",
    "read_idx",
    "to_sequences",
    "train_val_split",
]
