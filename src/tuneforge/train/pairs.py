"""Rows of the preference objectives and the micro-batches made from them.

The data stage writes ``pairs/<split>.parquet`` (reward, dpo, orpo, simpo),
``unpaired/<split>.parquet`` (kto) and ``prompts/<split>.parquet`` (grpo, rloo).
Each loads as :class:`Columns` (the same ``len``/``take`` interface as
:class:`tuneforge.train.rows.Rows`, so :class:`~tuneforge.train.rows.MicroBatches`
walks them in the same seeded, resumable order) and is collated here.

A pair micro-batch holds the chosen rows first, then the rejected rows, in one
padded batch: one forward pass scores both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from tuneforge.train.batching import collate

FOLDER = {"pairs": "pairs", "unpaired": "unpaired", "prompts": "prompts"}


@dataclass
class Columns:
    """A table held as Python lists, one entry per row."""

    data: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def take(self, indices: list[int]) -> Columns:
        return Columns({name: [column[i] for i in indices] for name, column in self.data.items()})

    def __getitem__(self, name: str) -> list[Any]:
        return self.data[name]

    def with_column(self, name: str, values: list[Any]) -> Columns:
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(self)} rows")
        return Columns({**self.data, name: values})


def load_columns(data_dir: Path, kind: str, split: str) -> Columns:
    """The ``pairs``, ``unpaired`` or ``prompts`` rows of a split (empty when the file is absent).

    Raises:
        FileNotFoundError: the training split's file is missing (the data stage ran
            for another objective).
    """
    path = Path(data_dir) / FOLDER[kind] / f"{split}.parquet"
    if not path.is_file():
        if split == "train":
            raise FileNotFoundError(
                f"{path} is missing: the data stage did not write {kind} rows for this objective"
            )
        return Columns({})
    return Columns(pq.read_table(path).to_pydict())


def collate_pairs(rows: Columns, pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows in one right-padded batch, plus per-pair extras.

    ``margin`` is the pairs' own margin; ``reference`` (``[2 * pairs]``) the
    reference log-probs when they have been computed.
    """
    ids = rows["chosen_input_ids"] + rows["rejected_input_ids"]
    labels = rows["chosen_labels"] + rows["rejected_labels"]
    batch = collate(ids, labels, pad_id)
    batch["margin"] = torch.tensor(rows.data.get("margin") or [0.0] * len(rows), dtype=torch.float)
    if "reference_chosen" in rows.data:
        batch["reference"] = torch.tensor(
            rows["reference_chosen"] + rows["reference_rejected"], dtype=torch.float
        )
    return batch


def collate_unpaired(rows: Columns, pad_id: int) -> dict[str, torch.Tensor]:
    """Unpaired rows (KTO) with their ``desirable`` flags and reference log-probs."""
    batch = collate(rows["input_ids"], rows["labels"], pad_id)
    batch["desirable"] = torch.tensor(rows["label"], dtype=torch.bool)
    if "reference" in rows.data:
        batch["reference"] = torch.tensor(rows["reference"], dtype=torch.float)
    return batch


def pair_count(batch: dict[str, torch.Tensor]) -> int:
    """Pairs (or unpaired samples) in a collated micro-batch."""
    if "desirable" in batch:
        return int(batch["desirable"].numel())
    return int(batch["margin"].numel())
