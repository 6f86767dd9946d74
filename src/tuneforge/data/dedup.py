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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

from tuneforge.data.minhash import LshIndex, MinHasher, lsh_params
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
EXCERPT_CHARS = 120


def normalize_exact(text: str) -> str:
    """The form exact dedup compares: NFC, casefolded, whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


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
        self.duplicates.append(sample.id)
        if len(self.examples) < max_examples:
            excerpt = " ".join(text[: EXCERPT_CHARS * 4].split())[:EXCERPT_CHARS]
            self.examples.append(DuplicateExample(sample.id, round(similarity, 4), excerpt))

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
            digest = hashlib.blake2b(normalize_exact(text).encode(), digest_size=16).digest()
            representative = first.get(digest)
            if representative is None:
                first[digest] = sample.id
                stats.kept += 1
                yield sample
                continue
            stats.dropped[EXACT_DUPLICATE] += 1
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
        needed = math.ceil(self.threshold * self.num_perm - 1e-9)
        index = LshIndex(self.bands, self.rows, self.num_perm, needed)
        kept_ids: list[str] = []
        stream = iter(samples)
        while batch := list(islice(stream, self.batch_size)):
            texts = [s.content_key() for s in batch]
            sigs, counts = self.hasher.signatures_and_counts(texts)
            reps, agrees = index.add_batch(sigs, counts)
            for sample, text, rep, agree, count in zip(
                batch, texts, reps.tolist(), agrees.tolist(), counts.tolist(), strict=True
            ):
                stats.seen += 1
                if rep < 0:
                    if count:
                        kept_ids.append(sample.id)
                    stats.kept += 1
                    yield sample
                    continue
                stats.dropped[NEAR_DUPLICATE] += 1
                cluster = self.clusters.setdefault(rep, DuplicateCluster(kept_ids[rep]))
                cluster.add(sample, text, agree / self.num_perm, self.max_examples)
