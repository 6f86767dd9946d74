"""Drop or flag training samples that share long n-grams with eval or benchmark data.

A model that saw its test questions during training scores dishonestly well. This
step indexes the n-grams (default 13 tokens, as in the GPT-3 paper) of every eval or
test sample and of user-named benchmark files once, then checks each training sample
against the index.

Tokens are the lower-cased (``casefold``) words of the NFKC-normalised text, with
punctuation, symbols and whitespace as separators, so case, punctuation, full-width
forms and line breaks do not hide an overlap. Each message content, text field or
benchmark string is a separate segment: no n-gram spans two of them.

Short segments: one with fewer than ``n`` tokens but at least ``min_tokens`` (8) is
represented by its whole token sequence. A short eval segment contaminates every
training segment that contains it; a short training segment is caught when it
contains a short eval segment (equality included). A short training segment that is
only a fragment of a long eval segment is not caught: that would need every k-gram
of the eval data indexed for each k in ``[min_tokens, n)``. Segments with fewer than
``min_tokens`` tokens are ignored, since short phrases are shared by chance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuneforge.data.jsonl import json_lines
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats
from tuneforge.errors import ConfigError, DataError

Mode = Literal["drop", "flag"]
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; everything else separates
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every position's coefficient is odd
_LENGTH_SALT = 0xC2B2AE3D27D4EB4F
_MASK64 = (1 << 64) - 1
_EMPTY = np.zeros(0, dtype=np.uint64)


def tokenize(text: str) -> list[str]:
    """Lower-cased words of the NFKC-normalised text, punctuation stripped."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


@lru_cache(maxsize=1 << 18)
def _token_hash(token: str) -> int:
    # A process-independent hash, so that indexes built by different
    # processes (Spark executors) agree; Python's str hash is salted per process.
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _gram_hashes(token_hashes: np.ndarray, k: int) -> np.ndarray:
    """64-bit hashes of every k-gram: a polynomial over token hashes, salted with k."""
    count = len(token_hashes) - k + 1
    if count <= 0:
        return _EMPTY
    acc = token_hashes[:count].copy()
    for j in range(1, k):
        acc *= _BASE  # uint64 arithmetic wraps modulo 2**64, as intended
        acc += token_hashes[j : j + count]
    return acc ^ np.uint64((k * _LENGTH_SALT) & _MASK64)


def _hash_tokens(tokens: list[str]) -> np.ndarray:
    return np.fromiter(map(_token_hash, tokens), dtype=np.uint64, count=len(tokens))


def sample_segments(sample: Sample) -> Iterator[str]:
    """The texts of a sample: each message content (string or text parts) and ``text``.

    Messages are those of the conversation and, for preference samples, of both replies.
    System messages are left out: a task's instructions are shared by its training and
    test samples alike, and overlap there leaks nothing about the answers.
    """
    replies = [*getattr(sample, "chosen", ()), *getattr(sample, "rejected", ())]
    for message in [*sample.messages, *replies]:
        if message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
    if isinstance(sample.text, str):
        yield sample.text


def _strings(value: Any) -> Iterator[str]:
    """Every string anywhere inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def read_benchmark(path: Path) -> Iterator[tuple[str, str]]:
    """``(label, text)`` for every string of a benchmark file.

    ``.jsonl``: every string field of each line (label ``path:line``); ``.json``: every
    string field of each record of a top-level list, or of the whole value otherwise
    (label ``path#record``); ``.txt``: each non-empty line (label ``path:line``).

    Raises:
        DataError: the file is missing, of another type, or not valid JSON.
    """
    if not path.is_file():
        raise DataError(f"benchmark file {path}: not found")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".txt"):
        raise DataError(
            f"benchmark file {path}: unsupported type {suffix!r}; use .jsonl, .json or .txt"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"benchmark file {path}: invalid JSON at line {err.lineno}") from err
        records = data if isinstance(data, list) else [data]
        for i, record in enumerate(records):
            yield from ((f"{path}#{i}", s) for s in _strings(record))
        return
    if suffix == ".txt":
        lines = enumerate(text.splitlines(), start=1)
        yield from ((f"{path}:{number}", line) for number, line in lines if line.strip())
        return
    for place, record in json_lines(text.splitlines(), str(path), prefix="benchmark file "):
        yield from ((place, s) for s in _strings(record))


@dataclass(frozen=True)
class Match:
    """Why a training sample is contaminated: which sources, and one shared n-gram."""

    sources: list[str]
    ngram: str
    matched: int

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "ngram": self.ngram, "matched_ngrams": self.matched}


@dataclass
class NgramIndex:
    """A sorted array of 64-bit n-gram hashes of eval data, each with its source label.

    Memory: 12 bytes per indexed n-gram once frozen (a uint64 hash and an int32 label
    index), about one n-gram per eval token, so 10M eval tokens take ~120 MB; building
    and freezing briefly need about three times that. Hash collisions (64-bit) are
    negligible: ~1e-7 false matches for 1e12 (eval n-gram, training n-gram) pairs.

    Args:
        n: n-gram length in tokens.
        min_tokens: Shortest segment considered, compared on its whole token sequence.
    """

    n: int = 13
    min_tokens: int = 8
    labels: list[str] = field(default_factory=list)
    short_lengths: set[int] = field(default_factory=set)
    _parts: list[tuple[np.ndarray, int]] = field(default_factory=list, repr=False)
    _hashes: np.ndarray = field(default_factory=lambda: _EMPTY, repr=False)
    _owners: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)

    def __post_init__(self) -> None:
        if self.n < 1 or not 1 <= self.min_tokens <= self.n:
            raise ConfigError(
                f"data.decontaminate: need n >= 1 and 1 <= min_tokens <= n "
                f"(got n={self.n}, min_tokens={self.min_tokens})"
            )

    def __len__(self) -> int:
        return len(self._hashes) + sum(len(h) for h, _ in self._parts)

    def add_text(self, text: str, label: str) -> None:
        """Index one eval segment under ``label``."""
        tokens = tokenize(text)
        if len(tokens) < self.min_tokens:
            return
        k = min(len(tokens), self.n)
        if k < self.n:
            self.short_lengths.add(k)
        self._parts.append((_gram_hashes(_hash_tokens(tokens), k), len(self.labels)))
        self.labels.append(label)

    def add_samples(self, samples: Iterable[Sample], prefix: str = "eval") -> None:
        """Index every segment of eval/test samples, labelled ``prefix:<sample id>``."""
        for sample in samples:
            for segment in sample_segments(sample):
                self.add_text(segment, f"{prefix}:{sample.id}")

    def add_file(self, path: Path) -> None:
        """Index a benchmark file (see :func:`read_benchmark`)."""
        for label, text in read_benchmark(path):
            self.add_text(text, label)

    def freeze(self) -> NgramIndex:
        """Merge what was added into the sorted arrays that lookups search."""
        if self._parts:
            hashes = np.concatenate([self._hashes, *(h for h, _ in self._parts)])
            owners = np.concatenate(
                [self._owners, *(np.full(len(h), o, np.int32) for h, o in self._parts)]
            )
            order = np.argsort(hashes, kind="stable")
            self._hashes, self._owners, self._parts = hashes[order], owners[order], []
        return self

    def find(self, segments: Iterable[str]) -> Match | None:
        """The first overlap of any segment with the index, or None.

        Every n-gram of every segment (and every shorter length that a short
        indexed segment has) is looked up in one ``searchsorted`` call, in
        segment order and longest length first, so ``first`` is the earliest hit.
        """
        self.freeze()
        if not len(self._hashes):
            return None
        lengths = sorted({self.n, *self.short_lengths}, reverse=True)
        parts: list[np.ndarray] = []
        owners: list[tuple[list[str], int]] = []  # (tokens, k) of each part
        for segment in segments:
            tokens = tokenize(segment)
            if len(tokens) < self.min_tokens:
                continue
            token_hashes = _hash_tokens(tokens)
            for k in lengths:
                grams = _gram_hashes(token_hashes, k)
                if len(grams):
                    parts.append(grams)
                    owners.append((tokens, k))
        if not parts:
            return None
        grams = np.concatenate(parts)
        low = np.searchsorted(self._hashes, grams)
        hits = np.flatnonzero(self._hashes[np.minimum(low, len(self._hashes) - 1)] == grams)
        if not len(hits):
            return None
        part = int(np.searchsorted(np.cumsum([len(g) for g in parts]), hits[0], side="right"))
        start = int(hits[0]) - sum(len(g) for g in parts[:part])
        tokens, k = owners[part]
        first = " ".join(tokens[start : start + k])
        high = np.searchsorted(self._hashes, grams[hits], side="right")
        sources: dict[str, None] = {}
        self._add_sources(sources, low[hits], high)
        return Match(list(sources), first, len(hits))

    def _add_sources(self, sources: dict[str, None], low: np.ndarray, high: np.ndarray) -> None:
        """Add the labels of index entries ``[low, high)``, up to 10 sources in all."""
        for a, b in zip(low.tolist(), high.tolist(), strict=True):
            for owner in self._owners[a:b].tolist():
                if len(sources) >= 10:
                    return
                sources.setdefault(self.labels[owner])


def build_index(
    eval_samples: Iterable[Sample] = (),
    benchmark_files: Iterable[Path | str] = (),
    n: int = 13,
    min_tokens: int = 8,
) -> NgramIndex:
    """Index eval/test samples and benchmark files once, for :class:`DecontaminateStep`."""
    index = NgramIndex(n=n, min_tokens=min_tokens)
    index.add_samples(eval_samples)
    for path in benchmark_files:
        index.add_file(Path(path))
    return index.freeze()


@dataclass
class DecontaminateStep:
    """Drop (reason ``contaminated``) or flag training samples that overlap the index.

    A :class:`~tuneforge.data.steps.Step`. In ``flag`` mode a contaminated sample is
    kept with ``meta["contamination"]``: the matching sources (benchmark ``file:line``
    or ``eval:<id>``, at most 10), one shared n-gram and the number of shared n-grams.

    Attributes:
        index: What training data must not overlap, from :func:`build_index`.
        mode: ``drop`` or ``flag``.
        counts_by_source: Contaminated samples by first matching source, for the report.
    """

    index: NgramIndex
    mode: Mode = "drop"
    name: str = "decontaminate"
    counts_by_source: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.mode not in ("drop", "flag"):
            raise ConfigError(f"data.decontaminate.mode: {self.mode!r} is not one of drop, flag")
        self.index.freeze()

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            match = self.index.find(sample_segments(sample))
            if match is not None:
                self.counts_by_source[match.sources[0]] += 1
            if match is not None and self.mode == "drop":
                stats.drop(sample, "contaminated")
                continue
            stats.kept += 1
            if match is None:
                yield sample
            else:
                meta = {**sample.meta, "contamination": match.to_json()}
                yield dataclasses.replace(sample, meta=meta)
