"""Deterministic, seeded, grouped train / validation / test split."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from tuneforge.data.sample import Sample


def split_samples(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    """Split samples so that every variant of one prompt lands in the same split.

    Groups (samples sharing their non-assistant text) are ordered by a seeded
    hash, then cut by sample counts. The result depends only on the samples'
    content and the seed, not on their order in the file.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` in file order within each split.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[sample.prompt_key()].append(index)
    order = sorted(groups, key=lambda key: _rank(key, seed))
    total = len(samples)
    want = {"test": round(total * test_fraction), "val": round(total * val_fraction)}
    assigned: dict[int, str] = {}
    taken = {"test": 0, "val": 0}
    for key in order:
        split = next((s for s in ("test", "val") if taken[s] < want[s]), "train")
        if split != "train":
            taken[split] += len(groups[key])
        for index in groups[key]:
            assigned[index] = split
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for index, sample in enumerate(samples):
        out[assigned[index]].append(sample)
    return out


def _rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()
