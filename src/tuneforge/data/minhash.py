"""MinHash signatures and LSH banding for near-duplicate detection, in vectorised numpy.

Texts are hashed a batch at a time: words (or characters) become 64-bit hashes, consecutive
tokens are chained into shingle hashes, and every permutation is applied to every shingle as one
matrix operation. :class:`LshIndex` holds what near dedup keeps in memory: band tables as sorted
numpy runs and the signatures of the kept texts, never the texts.

Hashing is integer arithmetic, identical on every machine and in every process (no salted
``hash()``), so local and Spark runs make the same decisions.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_U64 = np.uint64
_U32_MAX = np.uint32(0xFFFFFFFF)
# Murmur3 64-bit finaliser constants and the multiplier that chains tokens into a shingle.
_FMIX_C1 = _U64(0xFF51AFD7ED558CCD)
_FMIX_C2 = _U64(0xC4CEB9FE1A85EC53)
_CHAIN = _U64(0x9E3779B97F4A7C15)
# Shingles per MinHash block: 128 permutations x 8192 shingles of uint32 is 4 MB.
_BLOCK = 8192


def _near_char(code: int) -> str | int | None:
    """What :func:`normalize_near` makes of a code point: None, a space or the code point.

    Punctuation is deleted (None); whitespace and control characters become a space.
    """
    # Planes 4-16 hold no punctuation or whitespace (unassigned, tags, private use).
    if code >= 0x40000:
        return code
    category = unicodedata.category(chr(code))
    if category[0] == "P":
        return None
    if category in ("Cc", "Zs", "Zl", "Zp") or chr(code).isspace():
        return " "
    return code


class _NearTable(dict[int, str | int | None]):
    """The ``str.translate`` table of :func:`normalize_near`, filled in as code points turn up.

    Filled for all of Unicode up front it costs half a second in every process, more than near
    dedup of ten thousand ASCII documents (which never consult it) takes.
    """

    def __missing__(self, code: int) -> str | int | None:
        value = self[code] = _near_char(code)
        return value


@functools.cache
def _tables() -> tuple[dict[int, Any], bytes, bytes]:
    """Translation tables: punctuation is deleted, whitespace and control characters become spaces.

    Returns the full Unicode ``str.translate`` table, a 256-byte table for ASCII text, and the
    ASCII punctuation bytes to delete.
    """
    ascii_map = bytes(32 if _near_char(b) == " " else b for b in range(256))
    ascii_delete = bytes(b for b in range(128) if _near_char(b) is None)
    return _NearTable(), ascii_map, ascii_delete


def normalize_near(text: str) -> str:
    """The form near dedup shingles: NFC, casefolded, no punctuation, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().translate(_tables()[0]).split())


def shingles(text: str, size: int = 5, kind: Literal["word", "char"] = "word") -> list[str]:
    """The shingles :class:`NearDedup` hashes, as strings (for references and exact Jaccard).

    A text shorter than ``size`` tokens is one shingle; an empty text has none.
    """
    norm = normalize_near(text)
    tokens: Sequence[str] = norm.split() if kind == "word" else norm
    if not tokens:
        return []
    glue = " " if kind == "word" else ""
    starts = range(max(len(tokens) - size + 1, 1))
    return [glue.join(tokens[i : i + size]) for i in starts]


@functools.cache
def lsh_params(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5
) -> tuple[int, int]:
    """Bands and rows per band that minimise the weighted LSH error at ``threshold``.

    A pair with Jaccard ``s`` becomes a candidate with probability ``1 - (1 - s**r)**b``. As in
    datasketch, the false-positive error is that probability integrated over ``[0, threshold]``,
    the false-negative error its complement integrated over ``[threshold, 1]``; the pair
    ``(b, r)`` with ``b * r <= num_perm`` minimising their weighted sum wins.
    """
    bands, rows = np.meshgrid(np.arange(1, num_perm + 1), np.arange(1, num_perm + 1))
    ok = bands * rows <= num_perm
    b, r = bands[ok].astype(float)[:, None], rows[ok].astype(float)[:, None]
    below, above = np.linspace(0.0, threshold, 201), np.linspace(threshold, 1.0, 201)
    fp = np.trapezoid(1 - (1 - below**r) ** b, below, axis=1)
    fn = np.trapezoid((1 - above**r) ** b, above, axis=1)
    best = int(np.argmin(false_positive_weight * fp + (1 - false_positive_weight) * fn))
    return int(b[best, 0]), int(r[best, 0])


def _fmix64(h: np.ndarray) -> np.ndarray:
    """Murmur3's finaliser, in place: a bijection on uint64 that spreads every input bit."""
    h ^= h >> _U64(33)
    h *= _FMIX_C1
    h ^= h >> _U64(33)
    h *= _FMIX_C2
    h ^= h >> _U64(33)
    return h


def _word_tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash every word of every text, in order; return the hashes and the word count per text."""
    table, ascii_map, ascii_delete = _tables()
    parts = []
    for text in texts:
        text = unicodedata.normalize("NFC", text).casefold()
        if text.isascii():
            parts.append(text.encode("ascii").translate(ascii_map, ascii_delete))
        else:
            parts.append(text.translate(table).encode("utf-8"))
    # Texts are joined by a space, so no word spans two texts; 8 zero bytes pad the last load.
    buf = b" ".join(parts) + bytes(8)
    data = np.frombuffer(buf, dtype=np.uint8)[:-8]
    # Word starts and ends are where "inside a word" flips, with a space assumed on either side.
    inside = np.zeros(len(data) + 2, dtype=bool)
    np.not_equal(data, 32, out=inside[1:-1])
    edges = np.flatnonzero(inside[1:] != inside[:-1])
    starts, ends = edges[0::2], edges[1::2]
    text_starts = np.cumsum([0] + [len(p) + 1 for p in parts])
    counts = np.diff(np.searchsorted(starts, text_starts))
    return _pack_words(buf, starts, ends - starts), counts


def _pack_words(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A word's hash is its bytes packed eight at a time (exact for short words), then mixed."""
    # Every byte offset viewed as a little-endian uint64: loads the 8 bytes starting there.
    loads = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    masks = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [2**64 - 1], dtype=_U64)
    hashes = _fmix64(loads[starts] & masks[np.minimum(lengths, 8)])
    long_words = np.flatnonzero(lengths > 8)
    step = 8
    while long_words.size:
        rest = lengths[long_words] - step
        piece = loads[starts[long_words] + step] & masks[np.minimum(rest, 8)]
        hashes[long_words] = _fmix64(hashes[long_words] * _CHAIN + piece)
        long_words = long_words[rest > 8]
        step += 8
    return hashes


def _char_tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of every normalised text (single spaces), mixed, and the count per text."""
    norms = [normalize_near(text) for text in texts]
    codes = np.frombuffer("".join(norms).encode("utf-32-le"), dtype=np.uint32)
    return _fmix64(codes.astype(_U64)), np.array([len(n) for n in norms], dtype=np.int64)


def _shingle_hashes(
    tokens: np.ndarray, counts: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every run of ``size`` tokens inside one text, and the count per text.

    ``tokens`` are the texts' tokens back to back, ``counts`` how many belong to each text. A
    text with fewer than ``size`` tokens contributes one shingle of all its tokens.
    """
    first = np.cumsum(counts) - counts
    per_doc = np.where(counts > 0, np.maximum(counts - size + 1, 1), 0)
    starts = np.repeat(first - (np.cumsum(per_doc) - per_doc), per_doc) + np.arange(per_doc.sum())
    # Chain every window of the token stream, then keep the windows that start inside a text.
    windows = max(len(tokens) - size + 1, 0)
    chained = tokens[:windows].copy()
    for t in range(1, size):
        chained *= _CHAIN
        chained += tokens[t : t + windows]
    short_counts = counts[(counts > 0) & (counts < size)]
    if not short_counts.size:
        h = chained[starts]
    else:
        short = np.repeat(counts < size, per_doc)
        h = np.empty(len(starts), dtype=_U64)
        h[~short] = chained[starts[~short]]
        h[short] = _chain_short(tokens, starts[short], short_counts, size)
    return (_fmix64(h) >> _U64(32)).astype(np.uint32), per_doc


def _chain_short(
    tokens: np.ndarray, starts: np.ndarray, counts: np.ndarray, size: int
) -> np.ndarray:
    """Chain all tokens of texts shorter than one shingle (rare, so gathered one by one)."""
    h = np.zeros(len(starts), dtype=_U64)
    for t in range(size - 1):
        inside = t < counts
        h[inside] = h[inside] * _CHAIN + tokens[starts[inside] + t]
    return h


@dataclass(frozen=True)
class MinHasher:
    """MinHash signatures of texts, computed for a whole batch at once.

    Each shingle's 32-bit hash ``x`` is permuted by ``a * x + b mod 2**32`` (``a`` odd, so a
    bijection; the inputs are already mixed) for ``num_perm`` pairs ``(a, b)`` drawn from
    ``seed``: one outer product per block of shingles, then a minimum per text.

    Attributes:
        num_perm: Permutations, i.e. signature length.
        shingle: ``word`` (word n-grams) or ``char`` (character n-grams).
        shingle_size: Tokens per shingle.
        seed: Seed of the permutations; signatures compare only under the same seed.
    """

    num_perm: int = 128
    shingle: Literal["word", "char"] = "word"
    shingle_size: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shingle not in ("word", "char"):
            raise ValueError(f"shingle must be 'word' or 'char', got {self.shingle!r}")
        if self.shingle_size < 1 or self.num_perm < 2:
            raise ValueError("shingle_size must be >= 1 and num_perm >= 2")

    @functools.cached_property
    def _permutations(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**32, self.num_perm, dtype=np.uint32) | np.uint32(1)
        return a, rng.integers(0, 2**32, (self.num_perm, 1), dtype=np.uint32)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), num_perm)`` uint32 signatures; a text without shingles gets all ones."""
        return self.signatures_and_counts(texts)[0]

    def signatures_and_counts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Signatures and each text's shingle count (zero for an empty text)."""
        tokenize = _word_tokens if self.shingle == "word" else _char_tokens
        x, counts = _shingle_hashes(*tokenize(texts), self.shingle_size)
        a, b = self._permutations
        sigs = np.full((len(texts), self.num_perm), _U32_MAX, dtype=np.uint32)
        docs = np.flatnonzero(counts)
        ends = np.cumsum(counts)[docs]
        starts = ends - counts[docs]
        # Fixed windows of shingles, computed in one reused buffer (a fresh multi-megabyte array
        # per window costs page faults); a text spanning windows takes the minimum of its parts.
        buffer = np.empty((self.num_perm, _BLOCK), np.uint32)
        for lo in range(0, len(x), _BLOCK):
            hi = min(lo + _BLOCK, len(x))
            block = buffer[:, : hi - lo]
            np.multiply.outer(a, x[lo:hi], out=block)
            block += b
            inside = slice(np.searchsorted(ends, lo, "right"), np.searchsorted(starts, hi))
            parts = np.minimum.reduceat(block, np.maximum(starts[inside], lo) - lo, axis=1).T
            sigs[docs[inside]] = np.minimum(sigs[docs[inside]], parts)
        return sigs, counts


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(len(sigs), bands)`` uint64 keys: a band's rows hashed together, salted with its number.

    The salt lets one table hold every band: equal keys mean the same rows of the same band.
    """
    banded = sigs[:, : bands * rows].reshape(len(sigs), bands, rows).astype(_U64)
    chained = banded[:, :, 0].copy()
    for r in range(1, rows):
        chained *= _CHAIN
        chained += banded[:, :, r]
    return _fmix64(chained + np.arange(bands, dtype=_U64) * _FMIX_C2)


class _SortedRuns:
    """A multimap from uint64 keys to uint32 values in sorted numpy runs (12 bytes an entry).

    Runs merge while the newest is at least half as long as the one before it, as in a
    log-structured merge tree: O(log n) runs to search, each entry re-sorted O(log n) times.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def query(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every stored entry whose key equals ``keys[i]``: ``i`` and the entry's value."""
        found: list[np.ndarray] = [np.empty(0, np.int64)]
        values: list[np.ndarray] = [np.empty(0, np.uint32)]
        for stored, vals in self.runs:
            lo = np.searchsorted(stored, keys, side="left")
            hits = np.searchsorted(stored, keys, side="right") - lo
            if hits.any():
                found.append(np.repeat(np.arange(len(keys)), hits))
                values.append(vals[_ranges(lo, hits)])
        return np.concatenate(found), np.concatenate(values)

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not keys.size:
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order].astype(np.uint32)))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (new_keys, new_vals), (old_keys, old_vals) = self.runs.pop(), self.runs.pop()
            keys, vals = np.concatenate([old_keys, new_keys]), np.concatenate([old_vals, new_vals])
            order = np.argsort(keys, kind="stable")
            self.runs.append((keys[order], vals[order]))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``range(starts[i], starts[i] + lengths[i])`` for every ``i``."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


class LshIndex:
    """Band tables and signatures of the kept texts; decides a whole batch at once.

    A text is a duplicate when it shares a band with a kept text and their signatures agree on
    at least ``needed`` rows; it then points at the agreeing kept text (most rows, then earliest).
    Texts are kept in order, so within a batch the first occurrence wins too.
    """

    _BLOCK_ROWS = 4096

    def __init__(self, bands: int, rows: int, num_perm: int, needed: int) -> None:
        self.bands, self.rows, self.num_perm, self.needed = bands, rows, num_perm, needed
        self.tables = _SortedRuns()
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def add_batch(self, sigs: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decide a batch; index the kept texts that have shingles, in order.

        Returns:
            For every text, the index of the kept text it duplicates (-1 when kept; kept texts
            are numbered from 0 in the order they were indexed) and how many rows agree.
        """
        keys = band_keys(sigs, self.bands, self.rows)
        rep, agree = np.full(len(sigs), -1, np.int64), np.zeros(len(sigs), np.int64)
        # Texts without shingles share the all-ones signature but are never compared.
        live = np.flatnonzero(counts > 0)
        self._match_kept(keys, sigs, live, rep, agree)
        self._match_batch(keys, sigs, live, rep, agree)
        kept = live[rep[live] == -1]
        number = np.full(len(sigs), -1, np.int64)
        number[kept] = self.size + np.arange(len(kept))
        within = rep <= -2
        rep[within] = number[-rep[within] - 2]
        self._store(keys[kept], sigs[kept])
        return rep, agree

    def _match_kept(
        self,
        keys: np.ndarray,
        sigs: np.ndarray,
        live: np.ndarray,
        rep: np.ndarray,
        agree: np.ndarray,
    ) -> None:
        """Point texts at the best agreeing kept text from earlier batches."""
        where, kept = self.tables.query(keys[live].ravel())
        if not where.size:
            return
        pairs = np.unique(live[where // self.bands] << 32 | kept.astype(np.int64))
        docs, kept = pairs >> 32, pairs & 0xFFFFFFFF
        counts = np.count_nonzero(sigs[docs] == self._rows(kept), axis=1)
        # Most agreeing rows first, then the earliest kept text; the first row per text wins.
        order = np.lexsort((kept, -counts, docs))
        docs, kept, counts = docs[order], kept[order], counts[order]
        first = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        best = first[counts[first] >= self.needed]
        rep[docs[best]], agree[docs[best]] = kept[best], counts[best]

    def _match_batch(
        self,
        keys: np.ndarray,
        sigs: np.ndarray,
        live: np.ndarray,
        rep: np.ndarray,
        agree: np.ndarray,
    ) -> None:
        """Compare texts sharing a band within the batch, in order (keep the first occurrence).

        A text already matched to an earlier batch moves to a text of this batch only if that one
        agrees on more rows. A duplicate points at batch position ``p`` as ``-p - 2`` until kept
        texts are numbered.
        """
        if len(live) < 2:
            return
        flat = keys[live].ravel()
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        shared = (
            np.r_[False, ordered[1:] == ordered[:-1]] | np.r_[ordered[:-1] == ordered[1:], False]
        )
        members = np.unique(live[order[shared] // self.bands])
        table: dict[int, list[int]] = {}
        for doc in members.tolist():
            doc_keys = keys[doc].tolist()
            candidates = sorted({c for k in doc_keys for c in table.get(k, ())})
            if candidates:
                counts = np.count_nonzero(sigs[candidates] == sigs[doc], axis=1)
                best = int(np.argmax(counts))
                if counts[best] >= max(self.needed, agree[doc] + 1):
                    rep[doc], agree[doc] = -candidates[best] - 2, counts[best]
            if rep[doc] == -1:
                for k in doc_keys:
                    table.setdefault(k, []).append(doc)

    def _store(self, keys: np.ndarray, sigs: np.ndarray) -> None:
        numbers = np.arange(self.size, self.size + len(sigs))
        self.tables.insert(keys.ravel(), np.repeat(numbers, self.bands))
        while len(sigs):
            at = self.size % self._BLOCK_ROWS
            if at == 0:
                self.blocks.append(np.empty((self._BLOCK_ROWS, self.num_perm), np.uint32))
            take = min(len(sigs), self._BLOCK_ROWS - at)
            self.blocks[-1][at : at + take] = sigs[:take]
            sigs, self.size = sigs[take:], self.size + take

    def _rows(self, numbers: np.ndarray) -> np.ndarray:
        """Signatures of kept texts by number (gathered block by block)."""
        out = np.empty((len(numbers), self.num_perm), np.uint32)
        block = numbers // self._BLOCK_ROWS
        for b in np.unique(block).tolist():
            hit = block == b
            out[hit] = self.blocks[b][numbers[hit] % self._BLOCK_ROWS]
        return out
