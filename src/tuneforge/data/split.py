"""Deterministic, seeded, grouped train / validation / test split."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from tuneforge.data.sample import Sample

SPLITS = ("train", "val", "test")
SPLIT_GROUP = "split_group"  # meta key: samples naming the same group share a split


def split_samples(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    """Split samples so that every variant of one prompt lands in the same split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` in file order within each split.
    """
    ranks = [group_rank(sample, seed) for sample in samples]
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    assigned = assign_splits(ranks, val_fraction, test_fraction)
    for sample, split in zip(samples, assigned, strict=True):
        out[split].append(sample)
    return out


def group_rank(sample: Sample, seed: int) -> bytes:
    """The seeded hash of a sample's group: equal within a group.

    The group is ``meta["split_group"]`` when the sample names one (the pairs a teacher
    wrote from one chunk, the conversations and pairs of one OpenAssistant tree), else
    its non-assistant text, so that every variant of one prompt shares a split.
    """
    named = sample.meta.get(SPLIT_GROUP)
    key = named if isinstance(named, str) and named else sample.prompt_key()
    return hashlib.sha256(f"{seed}\0{key}".encode()).digest()


def assign_splits(
    ranks: Sequence[bytes],
    val_fraction: float,
    test_fraction: float,
    pinned: Sequence[str | None] | None = None,
) -> list[str]:
    """The split of each sample, given each sample's :func:`group_rank`.

    A sample whose ``pinned`` entry names a split goes there (a source given as the
    validation set); the fractions apply to the others.

    Groups are ordered by rank and cut by sample counts (test first, then
    validation), so the result depends only on the samples' content and the
    seed, not on their order, and a group never straddles two splits. Only the
    ranks are needed, so a streaming caller can hold 32 bytes per sample
    instead of the samples.
    """
    if pinned is not None and any(pinned):
        free = [index for index, split in enumerate(pinned) if not split]
        chosen = iter(assign_splits([ranks[i] for i in free], val_fraction, test_fraction))
        return [split or next(chosen) for split in pinned]
    groups: dict[bytes, list[int]] = defaultdict(list)
    for index, rank in enumerate(ranks):
        groups[rank].append(index)
    total = len(ranks)
    want = {"test": round(total * test_fraction), "val": round(total * val_fraction)}
    taken = {"test": 0, "val": 0}
    assigned = ["train"] * total
    for rank in sorted(groups):
        split = next((s for s in ("test", "val") if taken[s] < want[s]), "train")
        if split == "train":
            break
        taken[split] += len(groups[rank])
        for index in groups[rank]:
            assigned[index] = split
    return assigned
