"""Small helpers every dataset loader shares: the cache folder, raw-or-gzip reading, checksums,
atomic cache writes and one-line error summaries.

The loaders (:mod:`irnn.data.mnist`, :mod:`irnn.data.text`) decide where to look and what each
file must hash to; these helpers only do the mechanics, the same way for every dataset.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tempfile
import warnings
import zlib
from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"


class BadFile(Exception):
    """What is wrong with one file, without advice: each caller knows what the user should do."""


def default_cache_dir() -> Path:
    """The irnn cache root: ``$IRNN_CACHE`` if set, else ``~/.cache/irnn``.

    Datasets live in subfolders, e.g. ``<cache>/mnist`` and ``<cache>/ptb``.
    """
    env = os.environ.get("IRNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "irnn"


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` if present, else ``folder/stem.gz``, else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_decompressed(path: Path) -> bytes:
    """The file's raw content, gunzipped if it starts with the gzip magic bytes.

    Compression is detected from the content, not the file name.

    Raises:
        BadFile: the file is missing, unreadable, or a corrupt or truncated gzip file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadFile(f"{path} does not exist") from None
    except OSError as e:
        raise BadFile(f"cannot read {path} ({e.strerror or e})") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # bad header, CRC error, truncated stream
            raise BadFile(f"{path} is a corrupt or truncated gzip file ({e})") from None
    return data


def check_sha256(raw: bytes, expected: str, path: Path) -> None:
    """Raise :class:`BadFile` unless ``raw`` (read from ``path``) hashes to ``expected``."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected:
        raise BadFile(f"{path} fails its checksum: raw SHA-256 is {digest}, expected {expected}")


def install_in_cache(cache: Path, stem: str, raw: bytes) -> None:
    """Store verified raw bytes as ``cache/stem`` atomically, so readers never see half a file."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=cache)
    except OSError as e:
        # The data is already in memory; only later loads lose out, so warn instead of failing.
        warnings.warn(
            f"cannot write to cache folder {cache} ({e.strerror or e}); set IRNN_CACHE to a "
            f"writable folder to avoid fetching {stem} again",
            stacklevel=4,
        )
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; public data, so a shared cache works
        os.replace(tmp, cache / stem)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    stale_gz = cache / f"{stem}.gz"  # keep one copy per file; the raw one is checked first anyway
    with contextlib.suppress(OSError):
        stale_gz.unlink()


def brief(error: Exception, limit: int = 160) -> str:
    """An exception as one short line (HTTP library messages can run to several hundred chars)."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
