"""Text for the two language models: corpora, a character vocabulary with on-the-fly one-hot
batches (first edition), and word-level vectorisation as Keras's TextVectorization (second edition).
"""
import collections
import json
import math
import os
import re
import sysconfig
import tarfile
from pathlib import Path

import numpy as np

from ..download import DownloadError, atomic_write, datasets_dir, fetch, shared_data_dir

NIETZSCHE_URL = "https://s3.amazonaws.com/text-datasets/nietzsche.txt"
# Keras's examples fetch this file without a hash, and the shared copy is lower-cased (so its bytes
# differ from the canonical file's): a download is checked by its length in characters only, the
# "corpus length: 600893" that the book prints.
NIETZSCHE_CHARS = 600_893


# ---------------------------------------------------------------------------------------------
# corpora

def _read_text(path, caller):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: no such text file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{caller}: {path} is not UTF-8 text ({e}); re-encode it as UTF-8") from None


def load_text_corpus(path=None, download=True, lower=True):
    """The text of a .txt file, lower-cased as the book does (`lower=False` keeps the case).

    Without `path`: Nietzsche's *Beyond Good and Evil* from `$MICROGRAD_GEN_DATA/text/nietzsche.txt`,
    the data-set cache (`download.datasets_dir() / "text"`), or a download into that cache.
    """
    if path is None:
        cache = datasets_dir() / "text" / "nietzsche.txt"
        shared = shared_data_dir()
        candidates = ([shared / "text" / "nietzsche.txt"] if shared else []) + [cache]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if not download:
                raise FileNotFoundError(
                    f"load_text_corpus: nietzsche.txt not found in {', '.join(map(str, candidates))}; "
                    f"download it from {NIETZSCHE_URL} to {cache}")
            path = fetch(NIETZSCHE_URL, cache)
            text = _read_text(path, "load_text_corpus")
            if len(text) != NIETZSCHE_CHARS:
                path.unlink()
                raise DownloadError(f"load_text_corpus: {NIETZSCHE_URL} gave {len(text)} characters, "
                                    f"expected {NIETZSCHE_CHARS}; the file was removed")
    text = _read_text(path, "load_text_corpus")
    return text.lower() if lower else text


def python_stdlib_corpus(max_chars=1_000_000):
    """A corpus every machine has: the Python standard library's own .py sources, concatenated.

    Files are taken in sorted order of their path inside the library (site-packages excluded), so
    the result is the same on every run of the same Python version; the text is cut at `max_chars`.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [Path(folder, n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    parts, total = [], 0
    for name in sorted(files):
        try:
            source = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately mis-encoded
        parts.append(source if source.endswith("\n") else source + "\n")
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not parts:
        raise FileNotFoundError(f"python_stdlib_corpus: no .py files under {root}")
    return "".join(parts)[:max_chars]


# ---------------------------------------------------------------------------------------------
# characters (first edition)

class CharVocabulary:
    """Characters and their indices; `chars`, `char_indices`, `indices_char` as the book names them."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.char_indices = {c: i for i, c in enumerate(self.chars)}
        if len(self.char_indices) != len(self.chars):
            raise ValueError("CharVocabulary: the characters must be distinct")
        self.indices_char = dict(enumerate(self.chars))
        points = np.array([ord(c) for c in self.chars], np.int64)
        self._order = np.argsort(points)
        self._sorted_points = points[self._order]

    @classmethod
    def from_text(cls, text):
        """The sorted distinct characters of `text`, as `sorted(list(set(text)))` in the book."""
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        """int64 indices of the characters of `text`."""
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        pos = np.searchsorted(self._sorted_points, codes).clip(0, max(len(self.chars) - 1, 0))
        unknown = self._sorted_points[pos] != codes if len(self.chars) else np.ones(codes.shape, bool)
        if unknown.any():
            bad = sorted({chr(c) for c in codes[unknown]})
            raise ValueError(f"CharVocabulary.encode: characters not in the vocabulary: {bad[:10]!r}")
        return self._order[pos]

    def decode(self, indices):
        return "".join(self.indices_char[int(i)] for i in np.asarray(indices).ravel())

    def save(self, path):
        data = json.dumps({"chars": self.chars}, ensure_ascii=False)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(data, encoding="utf-8"))

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])


def char_windows(text, maxlen=60, step=3):
    """The book's overlapping windows, as offsets: `(starts, next_chars)` where window k is
    `text[starts[k]:starts[k] + maxlen]` and `next_chars[k]` (a string) is the character after it."""
    starts = np.arange(0, len(text) - maxlen, step, dtype=np.int64)
    return starts, "".join(text[i + maxlen] for i in starts)


def _positive(caller, **values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{caller}: {name} must be a whole number >= 1, got {value!r}")


def check_char_corpus(text, maxlen=60, step=3, batch_size=128):
    """Raise ValueError, before any training, unless `text` gives at least one full batch of
    windows: `batch_size` windows of `maxlen` characters, one every `step`, each followed by the
    character to predict. (A shorter corpus used to train a whole epoch and then fail when the
    sampler drew a seed window.)"""
    _positive("char_batches", maxlen=maxlen, step=step, batch_size=batch_size)
    windows = len(range(0, len(text) - maxlen, step))
    if windows < batch_size:
        needed = maxlen + (batch_size - 1) * step + 1
        raise ValueError(
            f"char_batches: a corpus of {len(text):,} characters gives {windows} "
            f"window{'s' if windows != 1 else ''} of "
            f"maxlen={maxlen} (one every step={step} characters), fewer than one batch of "
            f"{batch_size}; it needs at least {needed:,} characters, or a smaller batch size")


class CharBatches:
    """One-hot batches of character windows, built batch by batch (never for the whole corpus).

    Iterating gives one epoch of `(x, y)`: x float32 (B, maxlen, len(vocab)) one-hot windows and
    y int64 (B,) the index of each window's next character; the last batch may be smaller.
    """

    def __init__(self, text, vocab, maxlen=60, step=3, batch_size=128, shuffle=True, seed=None):
        check_char_corpus(text, maxlen, step, batch_size)
        self.vocab = vocab
        self.maxlen = int(maxlen)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self.ids = vocab.encode(text)                                            # (len(text),)
        self.starts = np.arange(0, len(text) - self.maxlen, step, dtype=np.int64)

    def __len__(self):
        return math.ceil(len(self.starts) / self.batch_size)

    def __iter__(self):
        order = self._rng.permutation(len(self.starts)) if self.shuffle else np.arange(len(self.starts))
        eye = np.eye(len(self.vocab), dtype=np.float32)
        offsets = np.arange(self.maxlen)
        for begin in range(0, len(order), self.batch_size):
            starts = self.starts[order[begin:begin + self.batch_size]]
            window = self.ids[starts[:, None] + offsets]                           # (B, maxlen)
            yield eye[window], self.ids[starts + self.maxlen]                      # (B, maxlen, V), (B,)


def char_batches(text, vocab, maxlen=60, step=3, batch_size=128, shuffle=True, seed=None):
    """A `CharBatches` over `text`: iterate it once per epoch."""
    return CharBatches(text, vocab, maxlen=maxlen, step=step, batch_size=batch_size, shuffle=shuffle,
                       seed=seed)


# ---------------------------------------------------------------------------------------------
# words (second edition)

# keras.layers.TextVectorization's DEFAULT_STRIP_REGEX
STRIP_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
# tf.strings.lower without an encoding changes ASCII letters only, and tf.strings.split splits on
# ASCII whitespace only; both are copied so that vocabularies match Keras's on non-ASCII text.
# The regex strips ASCII characters only, so str.translate does the same work faster.
_PUNCTUATION = "".join(c for c in map(chr, range(128)) if STRIP_PUNCTUATION.match(c))
_ASCII_LOWER = {ord(c): ord(c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_STANDARDIZE = {
    "lower": _ASCII_LOWER,
    "strip_punctuation": dict.fromkeys(map(ord, _PUNCTUATION)),
    "lower_and_strip_punctuation": {**_ASCII_LOWER, **dict.fromkeys(map(ord, _PUNCTUATION))},
}
_ASCII_WORD = re.compile(r"[^ \t\n\v\f\r]+")
PAD, OOV = "", "[UNK]"


class TextVectorization:
    """keras.layers.TextVectorization with output_mode="int", in plain Python.

    `standardize`: "lower_and_strip_punctuation" (default), "lower", "strip_punctuation", None, or a
    callable str -> str. `split`: "whitespace" (default), "character", None, or a callable
    str -> list of str. `adapt(texts)` keeps the `max_tokens - 2` most frequent tokens, ordered by
    count and then, as Keras does, by the token's UTF-8 bytes in descending order; index 0 is
    padding ("") and 1 is "[UNK]". Calling maps a string to int64 (L,) or a list of strings to
    int64 (N, L), cut or zero-padded to `output_sequence_length` (to the longest text when None).
    """

    def __init__(self, max_tokens=None, output_sequence_length=None,
                 standardize="lower_and_strip_punctuation", split="whitespace", vocabulary=None):
        if max_tokens is not None and max_tokens < 3:
            raise ValueError(f"TextVectorization: max_tokens={max_tokens} leaves no room beside "
                             "the padding and [UNK] tokens")
        if not (standardize in ("lower_and_strip_punctuation", "lower", "strip_punctuation", None)
                or callable(standardize)):
            raise ValueError(f"TextVectorization: unknown standardize={standardize!r}")
        if not (split in ("whitespace", "character", None) or callable(split)):
            raise ValueError(f"TextVectorization: unknown split={split!r}")
        self.max_tokens = max_tokens
        self.output_sequence_length = output_sequence_length
        self.standardize = standardize
        self.split = split
        self._vocabulary = [PAD, OOV]
        self._index = {PAD: 0, OOV: 1}
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    def tokenize(self, text):
        """The standardized, split tokens of one string."""
        if callable(self.standardize):
            text = self.standardize(text)
        elif self.standardize is not None:
            text = text.translate(_STANDARDIZE[self.standardize])
        if self.split == "whitespace":
            return _ASCII_WORD.findall(text)
        if self.split == "character":
            return list(text)
        if callable(self.split):
            return list(self.split(text))
        return [text]

    def adapt(self, texts):
        if isinstance(texts, str):
            raise TypeError("TextVectorization.adapt: expected an iterable of strings, got one string")
        counts = collections.Counter()
        for text in texts:
            counts.update(self.tokenize(text))
        counts.pop(PAD, None)
        counts.pop(OOV, None)
        ranked = sorted(counts, key=lambda t: (counts[t], t.encode("utf-8")), reverse=True)
        if self.max_tokens is not None:
            ranked = ranked[:self.max_tokens - 2]
        self.set_vocabulary(ranked)
        return self

    def set_vocabulary(self, vocabulary):
        """Learned tokens in index order; a leading "" and "[UNK]" are accepted and skipped."""
        vocabulary = list(vocabulary)
        if vocabulary[:2] == [PAD, OOV]:
            vocabulary = vocabulary[2:]
        full = [PAD, OOV] + vocabulary
        if len(set(full)) != len(full):
            repeated = [t for t, c in collections.Counter(full).items() if c > 1]
            raise ValueError(f"TextVectorization.set_vocabulary: repeated tokens {repeated[:10]!r}")
        if self.max_tokens is not None and len(full) > self.max_tokens:
            raise ValueError(f"TextVectorization.set_vocabulary: {len(full)} tokens with the special "
                             f"ones, more than max_tokens={self.max_tokens}")
        self._vocabulary = full
        self._index = {t: i for i, t in enumerate(full)}

    def get_vocabulary(self, include_special_tokens=True):
        return list(self._vocabulary if include_special_tokens else self._vocabulary[2:])

    def vocabulary_size(self):
        return len(self._vocabulary)

    def __call__(self, texts):
        single = isinstance(texts, str)
        rows = [[self._index.get(t, 1) for t in self.tokenize(text)]
                for text in ([texts] if single else texts)]
        length = self.output_sequence_length
        if length is None:
            length = max((len(r) for r in rows), default=0)
        out = np.zeros((len(rows), length), np.int64)
        for i, row in enumerate(rows):
            row = row[:length]
            out[i, :len(row)] = row
        return out[0] if single else out

    def get_config(self):
        for name in ("standardize", "split"):
            if callable(getattr(self, name)):
                raise ValueError(f"TextVectorization: a callable {name} cannot be saved; save the "
                                 "vocabulary (get_vocabulary) and rebuild the layer in code")
        return {"max_tokens": self.max_tokens, "output_sequence_length": self.output_sequence_length,
                "standardize": self.standardize, "split": self.split}

    def save(self, path):
        """Write the settings and the vocabulary as JSON (atomically)."""
        data = json.dumps({"config": self.get_config(), "vocabulary": self._vocabulary},
                          ensure_ascii=False)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(data, encoding="utf-8"))

    @classmethod
    def load(cls, path):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**data["config"], vocabulary=data["vocabulary"])


class TextFiles:
    """The .txt files of a folder tree (sorted by path) or of a tar archive (.tar, .tar.gz, ...,
    read as a stream in archive order), one string each, with "<br />" replaced by a space as the
    book does for IMDB. Iterable any number of times; `limit` stops after that many files."""

    def __init__(self, path, limit=None):
        self.path = Path(path)
        self.limit = limit
        if not self.path.exists():
            raise FileNotFoundError(f"text_files_dataset: no such folder or archive: {path}")

    @staticmethod
    def _clean(data):
        return data.decode("utf-8", errors="replace").replace("<br />", " ")

    def _texts(self):
        if self.path.is_dir():
            for file in sorted(self.path.rglob("*.txt")):
                if file.is_file():
                    yield self._clean(file.read_bytes())
            return
        try:
            tar = tarfile.open(self.path, "r|*")
        except tarfile.ReadError as e:
            raise ValueError(f"text_files_dataset: {self.path} is neither a folder nor a tar archive "
                             f"({e})") from None
        with tar:
            for member in tar:
                if member.isreg() and member.name.endswith(".txt"):
                    yield self._clean(tar.extractfile(member).read())

    def __iter__(self):
        """The texts; raises ValueError at the end when there were none, or all were blank (an
        empty corpus would train on padding alone)."""
        count, blank = 0, 0
        for text in self._texts():
            if self.limit is not None and count >= self.limit:
                break
            count += 1
            blank += not text.strip()
            yield text
        if count == blank:
            found = (f"{count} .txt file{'s' if count != 1 else ''}, all empty" if count
                     else "no .txt files")
            raise ValueError(f"text_files_dataset: {self.path} holds {found}; a corpus needs text")


def text_files_dataset(path, limit=None):
    """A `TextFiles` over a folder tree of .txt files or a tar(.gz) of them, such as aclImdb."""
    return TextFiles(path, limit=limit)


class LMBatches:
    """Language-model batches of vectorized sequences (N, L): iterating gives one epoch of
    `(inputs, targets)`, int64 (B, L - 1) each, targets being the inputs shifted by one token."""

    def __init__(self, token_ids, batch_size=32, shuffle=True, seed=None):
        self.token_ids = np.asarray(token_ids)
        if self.token_ids.ndim != 2 or self.token_ids.shape[1] < 2:
            raise ValueError(f"lm_batches: expected token ids (N, L) with L >= 2; got {self.token_ids.shape}")
        _positive("lm_batches", batch_size=batch_size)
        if len(self.token_ids) < batch_size:
            raise ValueError(f"lm_batches: {len(self.token_ids)} sequences are fewer than one batch "
                             f"of {batch_size}; use more texts or a smaller batch size")
        if not self.token_ids.any():
            raise ValueError(f"lm_batches: the {len(self.token_ids)} sequences hold no token but "
                             "padding (0): the texts are empty, or nothing in them was kept by the "
                             "vectorizer")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)

    def __len__(self):
        return math.ceil(len(self.token_ids) / self.batch_size)

    def __iter__(self):
        n = len(self.token_ids)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for begin in range(0, n, self.batch_size):
            batch = self.token_ids[order[begin:begin + self.batch_size]]
            yield batch[:, :-1], batch[:, 1:]


def lm_batches(token_ids, batch_size=32, shuffle=True, seed=None):
    """An `LMBatches` over `token_ids` (N, L), e.g. `vectorizer(texts)` with L = 100."""
    return LMBatches(token_ids, batch_size=batch_size, shuffle=shuffle, seed=seed)
