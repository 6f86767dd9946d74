"""Training rows and the resumable, seeded stream of micro-batches over them.

Rows are the data stage's token rows (one sample each, padded per micro-batch)
or its packed rows (several samples per row, with position ids and a
block-diagonal causal mask). Each epoch visits the rows in a seeded order that
depends only on the seed and the epoch number, so the stream's position is two
integers, ``(epoch, offset)``, which a checkpoint stores and a resume seeks to.

Replay mixing adds, to every epoch, a seeded draw of general-domain rows so that
they make up ``fraction`` of the epoch, against catastrophic forgetting.

Under data parallelism every rank walks the same order; a global micro-batch of
``batch_size x world`` rows is cut into one slice per rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from tuneforge.data.packing import PackedRow, collate_packed
from tuneforge.train.batching import collate, epoch_order


@dataclass
class Rows:
    """Token rows; ``lengths`` (the samples in each row) is set for packed rows."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    position_ids: list[list[int]] | None = None
    lengths: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def packed(self) -> bool:
        return self.lengths is not None

    def take(self, indices: list[int]) -> Rows:
        pick = lambda column: [column[i] for i in indices] if column is not None else None  # noqa: E731
        return Rows(
            pick(self.input_ids), pick(self.labels), pick(self.position_ids), pick(self.lengths)
        )

    def concat(self, other: Rows) -> Rows:
        if self.packed != other.packed:
            raise ValueError("cannot mix packed and unpacked rows")
        join = lambda a, b: a + b if a is not None else None  # noqa: E731
        return Rows(
            self.input_ids + other.input_ids,
            self.labels + other.labels,
            join(self.position_ids, other.position_ids),
            join(self.lengths, other.lengths),
        )


def load_rows(data_dir: Path, split: str, packed: bool = False) -> Rows:
    """The data stage's token rows (``tokens/``) or packed rows (``packed/``) of a split."""
    if packed:
        path = data_dir / "packed" / f"{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: prepare the data with data.packing: true")
        table = pq.read_table(path)
        columns = ("input_ids", "labels", "position_ids", "lengths")
        return Rows(*(table.column(name).to_pylist() for name in columns))
    table = pq.read_table(data_dir / "tokens" / f"{split}.parquet")
    return Rows(table.column("input_ids").to_pylist(), table.column("labels").to_pylist())


def collate_rows(rows: Rows, pad_id: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Model inputs for a micro-batch of rows (dynamic padding; 4-D mask when packed)."""
    if not rows.packed:
        return collate(rows.input_ids, rows.labels, pad_id)
    packed = [
        PackedRow(ids, labels, positions, lengths, [], len(ids))
        for ids, labels, positions, lengths in zip(
            rows.input_ids, rows.labels, rows.position_ids, rows.lengths, strict=True
        )
    ]
    return collate_packed(packed, pad_id, dtype)


class MicroBatches:
    """Endless seeded micro-batches with a position that checkpoints can store.

    Args:
        rows: The training rows (:class:`Rows`, or any table with ``len`` and ``take``).
        batch_size: Rows per micro-batch on each rank.
        seed: Fixes every epoch's order.
        pad_id: Padding token id.
        dtype: The model's dtype (for packed rows' attention mask).
        replay: General-domain rows to mix in, or None.
        replay_fraction: Share of each epoch that is replay rows.
        rank: This process's rank; ``world`` is the number of processes.
        collate: Rows -> micro-batch (default: :func:`collate_rows`).
    """

    def __init__(
        self,
        rows: Any,
        batch_size: int,
        seed: int,
        pad_id: int,
        dtype: torch.dtype = torch.float32,
        *,
        replay: Rows | None = None,
        replay_fraction: float = 0.0,
        rank: int = 0,
        world: int = 1,
        collate: Callable[[Any], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if not len(rows):
            raise ValueError("no training rows")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.pad_id, self.dtype, self.rank, self.world = pad_id, dtype, rank, world
        self.replay = replay if replay is not None and len(replay) else None
        self.replay_count = (
            round(len(rows) * replay_fraction / (1 - replay_fraction)) if self.replay else 0
        )
        self.collate = collate or (lambda rows: collate_rows(rows, pad_id, dtype))
        self.epoch, self.offset = 0, 0
        self._order: list[int] | None = None
        self._picks: list[int] = []

    @property
    def per_epoch(self) -> int:
        """Micro-batches per epoch (each spans ``batch_size x world`` rows)."""
        return math.ceil((len(self.rows) + self.replay_count) / (self.batch_size * self.world))

    def seek(self, epoch: int, offset: int) -> None:
        """Continue from micro-batch ``offset`` of ``epoch``, as a resumed run does."""
        self.epoch, self.offset, self._order = epoch, offset, None

    def __iter__(self) -> MicroBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.offset >= self.per_epoch:
            self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        if self._order is None:
            # Indices past the training rows stand for this epoch's replay draws.
            self._order = epoch_order(len(self.rows) + self.replay_count, self.seed, self.epoch)
            self._picks = replay_picks(self, self.epoch) if self.replay is not None else []
        span = self.batch_size * self.world
        chunk = self._order[self.offset * span : (self.offset + 1) * span]
        self.offset += 1
        share = math.ceil(len(chunk) / self.world)
        mine = chunk[self.rank * share : (self.rank + 1) * share] or chunk[-1:]
        return self.collate(self._gather(mine))

    def _gather(self, indices: list[int]) -> Rows:
        train = [i for i in indices if i < len(self.rows)]
        rows = self.rows.take(train)
        extra = [i - len(self.rows) for i in indices if i >= len(self.rows)]
        if extra and self.replay is not None:
            rows = rows.concat(self.replay.take([self._picks[i] for i in extra]))
        return rows


def replay_picks(batches: MicroBatches, epoch: int) -> list[int]:
    """Which replay rows this epoch uses (seeded; with repeats when there are too few)."""
    assert batches.replay is not None
    generator = torch.Generator().manual_seed(batches.seed * 7_919 + epoch + 1)
    size = len(batches.replay)
    if batches.replay_count <= size:
        return torch.randperm(size, generator=generator)[: batches.replay_count].tolist()
    return torch.randint(size, (batches.replay_count,), generator=generator).tolist()
