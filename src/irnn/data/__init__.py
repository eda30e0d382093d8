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
