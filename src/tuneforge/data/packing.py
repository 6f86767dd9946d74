"""Padding-free packing: several rendered samples share one fixed-length row.

Rows are filled by best-fit-decreasing bin packing. Inside a row each sample
keeps its own position ids (restarting at 0) and may attend only to its own
earlier tokens: :func:`block_causal_mask` builds the 4-D block-diagonal causal
mask that enforces this on every attention backend that takes a mask (eager,
SDPA). Position ids alone are not enough: with a 2-D padding mask, SDPA and
eager attention let a sample see the samples packed before it. Flash-attention
kernels take the position ids instead of the mask (they derive the sample
boundaries from where positions restart).

A sample's first token would otherwise be "predicted" from the previous
sample's last token, because the loss shifts labels by one
(:func:`tuneforge.train.loss.token_loss_sum`); its label is set to IGNORE_INDEX,
which loses nothing: unpacked, the first token is never a target either. So the
packed loss equals the sum of the unpacked per-sample losses.

Samples longer than a row are rejected, not cut, and counted: a cut sample would
train on a reply with its end-of-turn token missing, teaching the model to stop
mid-answer. Render with ``max_length`` or raise the row length to keep them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tuneforge.train.loss import IGNORE_INDEX


@dataclass
class PackedRow:
    """One row of samples laid end to end.

    Attributes:
        input_ids: The samples' token ids, concatenated (no padding).
        labels: Their labels, with each sample's first label set to IGNORE_INDEX.
        position_ids: Positions restarting at 0 at every sample.
        lengths: Each sample's length, in row order (the sample boundaries).
        samples: Each sample's index in the packed input, in row order.
        capacity: The row length the samples were packed into.
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    lengths: list[int]
    samples: list[int]
    capacity: int

    @property
    def boundaries(self) -> list[tuple[int, int]]:
        """(start, end) of each sample in the row."""
        spans, start = [], 0
        for length in self.lengths:
            spans.append((start, start + length))
            start += length
        return spans


@dataclass
class Packing:
    """The packed rows and the samples that did not fit in a row."""

    rows: list[PackedRow]
    seq_len: int
    too_long: list[int] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        return packing_efficiency(self.rows)


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin-pack items by best-fit-decreasing: longest first, each into the fullest bin it fits.

    Args:
        lengths: Item sizes, each between 1 and ``capacity``.
        capacity: Bin size.

    Returns:
        The bins as lists of item indices, in placement order; ties go to the earlier item
        and the earlier bin, so the result is deterministic.

    Raises:
        ValueError: an item is empty or larger than a bin.
    """
    for index, size in enumerate(lengths):
        if not 0 < size <= capacity:
            raise ValueError(f"item {index} has size {size}; sizes must be in 1..{capacity}")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted: best fit is a bisect
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, target = free.pop(slot)
        else:
            room, target = capacity, len(bins)
            bins.append([])
        bins[target].append(index)
        bisect.insort(free, (room - size, target))
    return bins


def pack(input_ids: Sequence[list[int]], labels: Sequence[list[int]], seq_len: int) -> Packing:
    """Pack rendered samples into rows of at most ``seq_len`` tokens.

    Args:
        input_ids: Each sample's token ids.
        labels: Each sample's labels, aligned with its ids.
        seq_len: The row length.

    Returns:
        The rows and the indices of samples longer than ``seq_len`` (left out).

    Raises:
        ValueError: a sample is empty or its ids and labels differ in length.
    """
    for index, (ids, labs) in enumerate(zip(input_ids, labels, strict=True)):
        if not ids or len(ids) != len(labs):
            raise ValueError(f"sample {index}: {len(ids)} ids and {len(labs)} labels")
    fits = [i for i, ids in enumerate(input_ids) if len(ids) <= seq_len]
    too_long = [i for i, ids in enumerate(input_ids) if len(ids) > seq_len]
    bins = best_fit_decreasing([len(input_ids[i]) for i in fits], seq_len)
    rows = [_row([fits[j] for j in members], input_ids, labels, seq_len) for members in bins]
    return Packing(rows=rows, seq_len=seq_len, too_long=too_long)


def packing_efficiency(rows: Sequence[PackedRow]) -> float:
    """Real tokens per slot: the share of the rows' capacity that holds sample tokens."""
    slots = sum(row.capacity for row in rows)
    return sum(len(row.input_ids) for row in rows) / slots if slots else 0.0


def block_causal_mask(
    lengths: Sequence[Sequence[int]], width: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive attention mask letting each token see only its own sample's earlier tokens.

    Args:
        lengths: Per row, the lengths of its samples in order; the rest of the row is padding.
        width: The padded row length.
        dtype: The model's dtype (the mask is added to attention scores).

    Returns:
        ``[rows, 1, width, width]``: 0 where attention is allowed, the dtype's most negative
        value elsewhere. Each padding position sees only itself, so no softmax row is empty.
    """
    segments = torch.empty((len(lengths), width), dtype=torch.long)
    for row, sample_lengths in enumerate(lengths):
        ids = torch.repeat_interleave(
            torch.arange(len(sample_lengths)), torch.tensor(sample_lengths, dtype=torch.long)
        )
        used = ids.numel()
        segments[row, :used] = ids
        segments[row, used:] = -1 - torch.arange(width - used)
    same_sample = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    blocked = ~(same_sample & causal)
    mask = torch.zeros(blocked.shape, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[:, None]


def collate_packed(
    rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Stack packed rows into model inputs, padded to the longest row.

    Args:
        rows: Packed rows.
        pad_id: Token id for the padding tail.
        dtype: The model's dtype, for the attention mask.

    Returns:
        ``input_ids``, ``labels`` (IGNORE_INDEX on padding and at sample starts),
        ``position_ids`` and the 4-D ``attention_mask`` from :func:`block_causal_mask`.
    """
    width = max(len(row.input_ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        used = len(row.input_ids)
        ids[index, :used] = torch.tensor(row.input_ids)
        labels[index, :used] = torch.tensor(row.labels)
        positions[index, :used] = torch.tensor(row.position_ids)
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "attention_mask": block_causal_mask([row.lengths for row in rows], width, dtype),
    }


def _row(
    members: list[int],
    input_ids: Sequence[list[int]],
    labels: Sequence[list[int]],
    capacity: int,
) -> PackedRow:
    row = PackedRow([], [], [], [], [], capacity)
    for index in members:
        ids = input_ids[index]
        row.input_ids.extend(ids)
        # The shifted loss would score this token against the previous sample's last one.
        row.labels.extend([IGNORE_INDEX, *labels[index][1:]])
        row.position_ids.extend(range(len(ids)))
        row.lengths.append(len(ids))
        row.samples.append(index)
    return row
