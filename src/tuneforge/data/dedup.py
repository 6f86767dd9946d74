"""Exact and near-duplicate removal that keeps the first occurrence and records the clusters.

* :class:`ExactDedup` hashes the normalised content (NFC, casefold, collapsed whitespace).
* :class:`NearDedup` estimates Jaccard similarity over word or character shingles with MinHash
  and finds candidates with LSH banding. It streams: one pass, holding only the band tables and
  the signatures of the samples it kept, never the samples themselves. A candidate is dropped
  only when its estimated Jaccard with a kept sample reaches the threshold, so LSH collisions
  cost time, never precision.

Both are steps (see :mod:`tuneforge.data.steps`) and record, for every kept representative, the
samples dropped as its duplicates; :func:`largest_clusters` picks the ones the report shows.

The hashing and the index live in :mod:`tuneforge.data.minhash`.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

import numpy as np

from tuneforge.data.minhash import LshIndex, MinHasher, lsh_params
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
EXCERPT_CHARS = 120


def normalize_exact(text: str) -> str:
    """The form exact dedup compares: NFC, casefolded, whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


# Lower-cases ASCII letters and turns every whitespace character (as str.split sees it) into a
# space: ASCII text's normalize_exact, bar collapsing space runs, in one bytes.translate.
_ASCII_FOLD = bytes(
    32 if chr(b).isspace() else ord(chr(b).casefold()) if b < 128 else b for b in range(256)
)


def exact_digest(text: str) -> bytes:
    """The 16-byte key exact dedup compares: a BLAKE2b digest of :func:`normalize_exact`."""
    return hashlib.blake2b(_exact_bytes(text), digest_size=16).digest()


def _exact_bytes(text: str) -> bytes:
    """``normalize_exact(text).encode()``; for ASCII text without splitting it into words."""
    if not text.isascii():
        return normalize_exact(text).encode()
    data = text.encode("ascii").translate(_ASCII_FOLD)
    while b"  " in data:  # each pass halves every run of spaces
        data = data.replace(b"  ", b" ")
    return data.strip(b" ")


def excerpt(text: str) -> str:
    """The excerpt of a duplicate a cluster shows: the first words, whitespace collapsed."""
    return " ".join(text[: EXCERPT_CHARS * 4].split())[:EXCERPT_CHARS]


@dataclass
class DuplicateExample:
    """One dropped duplicate: its id, similarity to the representative, and an excerpt."""

    id: str
    similarity: float
    excerpt: str


@dataclass
class DuplicateCluster:
    """A kept representative and the ids of the samples dropped as its duplicates.

    ``examples`` holds the first few duplicates with an excerpt of their text.
    """

    representative: str
    duplicates: list[str] = field(default_factory=list)
    examples: list[DuplicateExample] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Members, the representative included."""
        return 1 + len(self.duplicates)

    def add(self, sample: Sample, text: str, similarity: float, max_examples: int) -> None:
        self.add_id(sample.id, text, similarity, max_examples)

    def add_id(
        self, sample_id: str, text: str, similarity: float, max_examples: int
    ) -> DuplicateExample | None:
        """Record a duplicate by id; returns the example made for it, if it is one of the first."""
        self.duplicates.append(sample_id)
        if len(self.examples) >= max_examples:
            return None
        example = DuplicateExample(sample_id, round(similarity, 4), excerpt(text))
        self.examples.append(example)
        return example

    def to_json(self) -> dict[str, Any]:
        return {
            "representative": self.representative,
            "size": self.size,
            "duplicates": list(self.duplicates),
            "examples": [vars(e) for e in self.examples],
        }


def largest_clusters(clusters: Iterable[DuplicateCluster], n: int = 10) -> list[DuplicateCluster]:
    """The ``n`` largest clusters, biggest first; ties keep the order the clusters were found."""
    return sorted(clusters, key=lambda c: c.size, reverse=True)[:n]


@dataclass
class ExactDedup:
    """Drop samples whose normalised content equals an earlier sample's (``exact_duplicate``).

    Punctuation still counts. Memory: a 16-byte digest and the id of every kept sample.
    """

    name: str = "exact_dedup"
    max_examples: int = 3
    clusters: dict[bytes, DuplicateCluster] = field(default_factory=dict, init=False)

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        self.clusters = {}
        first: dict[bytes, str] = {}
        for sample in samples:
            stats.seen += 1
            text = sample.content_key()
            digest = exact_digest(text)
            representative = first.get(digest)
            if representative is None:
                first[digest] = sample.id
                stats.kept += 1
                yield sample
                continue
            stats.drop(sample, EXACT_DUPLICATE)
            cluster = self.clusters.setdefault(digest, DuplicateCluster(representative))
            cluster.add(sample, text, 1.0, self.max_examples)


@dataclass
class NearDedup:
    """Drop samples whose estimated Jaccard with a kept sample reaches ``threshold``.

    Attributes:
        threshold: Jaccard similarity of shingle sets at which a sample is a near duplicate.
        num_perm: MinHash permutations (signature length).
        shingle: ``word`` or ``char`` shingles.
        shingle_size: Tokens per shingle.
        false_positive_weight: Weight of LSH false positives against false negatives when
            choosing bands. Low, because candidates are verified: a false positive costs one
            signature comparison, a false negative costs recall.
        batch_size: Samples hashed together (the stream is consumed in batches of this size).
        max_examples: Duplicates per cluster kept with an excerpt for the report.
        seed: Seed of the MinHash permutations.
    """

    threshold: float = 0.8
    num_perm: int = 128
    shingle: Literal["word", "char"] = "word"
    shingle_size: int = 5
    false_positive_weight: float = 0.1
    batch_size: int = 1024
    max_examples: int = 3
    seed: int = 1
    name: str = "near_dedup"
    clusters: dict[int, DuplicateCluster] = field(default_factory=dict, init=False)
    hasher: MinHasher = field(init=False, repr=False)
    bands: int = field(init=False)
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.hasher = MinHasher(self.num_perm, self.shingle, self.shingle_size, self.seed)
        self.bands, self.rows = lsh_params(
            self.threshold, self.num_perm, self.false_positive_weight
        )

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        self.clusters = {}
        decider = self.decider()
        stream = iter(samples)
        while batch := list(islice(stream, self.batch_size)):
            texts = [s.content_key() for s in batch]
            sigs, counts = self.hasher.signatures_and_counts(texts)
            decisions = decider.decide([s.id for s in batch], sigs, counts)
            for sample, text, decision in zip(batch, texts, decisions, strict=True):
                self.tally(decision, sample.id, text, stats, sample)
                if decision.rep < 0:
                    yield sample

    def decider(self) -> NearDecider:
        """A fresh keep-first decider with this step's LSH parameters."""
        needed = math.ceil(self.threshold * self.num_perm - 1e-9)
        return NearDecider(LshIndex(self.bands, self.rows, self.num_perm, needed), self.num_perm)

    def tally(
        self,
        decision: NearDecision,
        sample_id: str,
        text: str,
        stats: StepStats,
        sample: Sample | None = None,
    ) -> DuplicateExample | None:
        """Count one decided sample and file a duplicate under its representative's cluster.

        Args:
            decision: What near dedup decided for the sample.
            sample_id: The sample's id.
            text: The sample's text, for a duplicate's excerpt ("" to fill it in later).
            stats: The step's books.
            sample: The sample itself, handed to ``stats.on_drop`` when it is dropped; None
                where only its id is at hand (Spark).

        Returns:
            The example made for a duplicate (its excerpt comes from ``text``), or None when the
            sample is kept or its cluster already shows ``max_examples``.
        """
        stats.seen += 1
        if decision.rep < 0:
            stats.kept += 1
            return None
        stats.drop(sample, NEAR_DUPLICATE)
        cluster = self.clusters.setdefault(decision.rep, DuplicateCluster(decision.rep_id))
        return cluster.add_id(sample_id, text, decision.similarity, self.max_examples)


@dataclass(frozen=True)
class NearDecision:
    """What near dedup decided for one sample.

    Attributes:
        rep: Number of the kept sample it duplicates (kept samples with shingles are numbered
            from 0 in order); -1 when it is kept.
        rep_id: Id of that kept sample ("" when kept).
        similarity: Share of agreeing signature rows with it (0 when kept).
    """

    rep: int
    rep_id: str = ""
    similarity: float = 0.0


KEPT = NearDecision(-1)


@dataclass
class NearDecider:
    """The keep-first decision over MinHash signatures, one batch at a time, in stream order.

    The local step and the Spark executor both decide through this class, the latter on
    signatures computed elsewhere, so their decisions are the same by construction.
    Memory: the band tables and the signatures of the kept samples, plus their ids.
    """

    index: LshIndex
    num_perm: int
    kept_ids: list[str] = field(default_factory=list)

    def decide(
        self, ids: Sequence[str], sigs: np.ndarray, counts: np.ndarray
    ) -> list[NearDecision]:
        """Decide the next batch: ``ids``, their ``sigs`` and shingle ``counts``, in order."""
        reps, agrees = self.index.add_batch(sigs, counts)
        out: list[NearDecision] = []
        for sample_id, rep, agree, count in zip(
            ids, reps.tolist(), agrees.tolist(), counts.tolist(), strict=True
        ):
            if rep < 0:
                if count:
                    self.kept_ids.append(sample_id)
                out.append(KEPT)
            else:
                out.append(NearDecision(rep, self.kept_ids[rep], agree / self.num_perm))
        return out
