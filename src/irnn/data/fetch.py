"""What every dataset loader shares: the cache folder, raw-or-gzip reading, checksums, atomic
cache writes, one-line error summaries, and :func:`resolve_files`, the chain that takes files
from the cache or else from fetch sources in order.

The loaders (:mod:`irnn.data.mnist`, :mod:`irnn.data.text`) decide where to look and what each
file must hash to; this module only does the mechanics, the same way for every dataset.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, NamedTuple, Sequence, Tuple

from irnn.errors import DataError

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
            stacklevel=5,  # the caller of the public loader; see resolve_files
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


# --------------------------------------------------------------------------------------------
# The source chain: cache first, then each fetch source in order
# --------------------------------------------------------------------------------------------

# fetch(names, workdir, progress) -> ({name: file it obtained, raw or .gz}, [one line per problem])
Fetch = Callable[[list, Path, bool], tuple]

# verify(name, path) -> (what the loader keeps, the raw bytes to cache); raises BadFile.
Verify = Callable[[str, Path], tuple]


@dataclass(frozen=True)
class Source:
    """One place :func:`resolve_files` can fetch files from, tried in the order given.

    ``fetch(names, workdir, progress)`` gets the names still missing, an empty private temporary
    folder and the progress-bar flag. It returns ``({name: file it obtained, raw or .gz},
    [one line per problem])`` and may return files it was not asked for (a whole archive); those
    are verified and cached too. It may also raise: the error becomes one line of the report.
    """

    label: str  # names the source in ``used`` and in the failure message
    fetch: Fetch
    provides: Collection[str] | None = None  # the names it can have; None: any, always tried
    # True: a download, skipped when downloads are off, whose verified files are cached.
    # False: a local copy (e.g. a system package), always tried and read in place, never copied.
    download: bool = True


class Resolved(NamedTuple):
    """What :func:`resolve_files` found."""

    files: dict[str, Any]  # name -> what verify kept for it, in the order the names were asked
    used: dict[str, list[str]]  # source label -> names it supplied, in the order they were used


def resolve_files(
    names: Sequence[str],
    verify: Verify,
    sources: Sequence[Source],
    cache: Path,
    *,
    download: bool,
    progress: bool,
    failure_headline: Callable[[list[str]], str],
) -> Resolved:
    """Every file in ``names``, each verified, from the cache or else the sources in order.

    1. The cache folder: ``cache/name``, else ``cache/name.gz``, re-verified on every load. A bad
       cached copy is deleted with a warning, so the sources below replace it.
    2. Each source in ``sources``, in order, for the names still missing; a source whose
       ``provides`` holds none of them is passed over, and download sources are skipped when
       ``download`` is False. Each runs in its own temporary folder. Every file it returns is
       checked with ``verify`` and, for a download, installed in ``cache`` atomically.

    A folder the user named is not a step here: the loaders read it themselves, since any
    problem in it is an error rather than a reason to try the next source.

    Args:
        names: the file names wanted.
        verify: ``verify(name, path)`` reads the file at ``path``, raises :class:`BadFile` unless
            it is exactly the published ``name`` (SHA-256 of its raw content), and returns
            ``(what the loader keeps, the raw bytes to cache)``.
        sources: where to fetch missing files from, in the order to try them.
        cache: this dataset's cache folder; created when the first file is installed.
        download: whether downloads are allowed.
        progress: passed to every source's ``fetch`` (show download progress bars).
        failure_headline: given the names still missing, the start of the error's first line:
            what cannot be found and what to do about it.

    Returns:
        The verified files and which source supplied which of them.

    Raises:
        DataError: some files are still missing after every source. Its first line is
            ``failure_headline`` (plus ", or allow downloads" when ``download`` is False); one
            line per source tried follows, saying why it did not supply the files.

    Warnings (a bad cached file, an unwritable cache) name the caller of the public loader,
    which must be two calls above this function (loader -> private helper -> resolve_files).
    """
    files = _read_cache(names, verify, cache)
    used: dict[str, list[str]] = {f"cache {cache}": list(files)} if files else {}
    tried: list[str] = []
    missing = [name for name in names if name not in files]
    if missing:
        tried.append(f"cache {cache}: no valid copy of {', '.join(missing)}")

    for source in sources:
        if not missing:
            break
        if source.download and not download:
            continue
        if source.provides is not None and not set(missing) & set(source.provides):
            continue  # e.g. a mirror of the word-level files when char-level ones are wanted
        with tempfile.TemporaryDirectory(prefix="irnn-fetch-") as tmp:
            try:
                got, problems = source.fetch(list(missing), Path(tmp), progress)
            except Exception as e:  # a failing source must not hide the ones after it
                got, problems = {}, [brief(e)]
            for name, path in got.items():
                try:
                    kept, raw = verify(name, path)
                except BadFile as bad:
                    problems.append(str(bad))
                    continue
                if source.download:
                    install_in_cache(cache, name, raw)  # also the files not asked for (an archive)
                if name in missing:
                    files[name] = kept
                    used.setdefault(source.label, []).append(name)
        if problems or source.label not in used:
            tried.append(f"{source.label}: {'; '.join(problems) or 'provided nothing'}")
        missing = [name for name in names if name not in files]
        if problems and missing and progress:
            # Say so as it happens: the download library's own "Downloading ..." lines would
            # otherwise read as success before the next source is tried.
            print(f"irnn: {source.label} failed ({'; '.join(problems)[:200]}); trying the next source",
                  file=sys.stderr)

    if not download:
        tried.append("download: skipped (download=False)")
    if missing:
        lines = "\n".join(f"  - {line}" for line in tried)
        raise DataError(
            f"{failure_headline(missing)}{'' if download else ', or allow downloads'}. "
            f"Sources tried:\n{lines}"
        )
    return Resolved({name: files[name] for name in names}, used)


def _read_cache(names: Sequence[str], verify: Verify, cache: Path) -> dict[str, Any]:
    """The cached files that verify; bad ones are deleted with a warning so they get replaced."""
    files = {}
    for name in names:
        for path in (cache / name, cache / f"{name}.gz"):
            if not path.is_file():
                continue
            try:
                files[name], _ = verify(name, path)
                break
            except BadFile as bad:
                warnings.warn(f"discarding bad cached file: {bad}; fetching it again", stacklevel=5)
                with contextlib.suppress(OSError):
                    path.unlink()
    return files


def extract_members(archive: Path, members: Dict[str, str], workdir: Path, label: str) -> Tuple[Dict[str, Path], List[str]]:
    """Copy the named regular files out of a ``.tar.gz`` into ``workdir``.

    ``members`` maps a member path inside the archive to the file name to write. Members are looked
    up by exact name and written under our own names, so the archive never decides a path on disk.
    Returns the files written and one problem line per member that is missing or not a file.
    """
    got: Dict[str, Path] = {}
    problems: List[str] = []
    with tarfile.open(archive, "r:gz") as tar:
        found = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        for member_name, out_name in members.items():
            member = found.get(member_name)
            source = tar.extractfile(member) if member is not None and member.isfile() else None
            if source is None:
                problems.append(f"{member_name} is not a file in {label}")
                continue
            with source, open(workdir / out_name, "wb") as out:
                shutil.copyfileobj(source, out)
            got[out_name] = workdir / out_name
    return got, problems
