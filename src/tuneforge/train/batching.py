"""Batches from tokenized rows: seeded order, dynamic padding."""

from __future__ import annotations

import torch

from tuneforge.train.loss import IGNORE_INDEX


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    """A seeded permutation of row indices, different each epoch, equal across runs."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_rows, generator=generator).tolist()


def collate(
    input_ids: list[list[int]], labels: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest row; padding is masked out of attention and loss."""
    width = max(len(row) for row in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    lab = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(zip(input_ids, labels, strict=True)):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        lab[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}
