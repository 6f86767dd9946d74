"""Negative log-likelihood of labelled token rows: reply loss on the test split, retention text.

Rows come from the one rendering function (``render_chat`` for conversations,
``render_text`` for raw text), so the eval loss is the training loss, token for
token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tuneforge.console import progress
from tuneforge.data.render import render_chat_batch, render_text
from tuneforge.data.sample import Message
from tuneforge.train.loss import IGNORE_INDEX, token_logps


@torch.no_grad()
def row_nll(
    model: Any,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int,
    label: str | None = None,
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, labelled tokens) per ``(ids, labels)`` row.

    Rows are right-padded in batches of similar length; a row with no labelled token
    gives ``(0.0, 0)``.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    found: dict[int, tuple[float, int]] = {}
    with progress() as bar:
        task = bar.add_task(label or "likelihood", total=len(rows), info="", visible=bool(label))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(rows[i][0]) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long, device=dev)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long, device=dev)
            mask = torch.zeros((len(chunk), width), dtype=torch.long, device=dev)
            for row, index in enumerate(chunk):
                size = len(rows[index][0])
                ids[row, :size] = torch.tensor(rows[index][0])
                labels[row, :size] = torch.tensor(rows[index][1])
                mask[row, :size] = 1
            logps = token_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
            for row, index in enumerate(chunk):
                found[index] = (-float(logps[row].sum()), int(counts[row]))
            bar.update(task, advance=len(chunk))
    model.train(was_training)
    return [found[i] for i in range(len(rows))]


def reply_rows(
    tokenizer: Any,
    conversations: Sequence[tuple[list[Message], list[dict] | None]],
    *,
    max_length: int | None,
    template: str | None,
) -> list[tuple[list[int], list[int]]]:
    """Token rows whose labels cover the final assistant reply, as in training."""
    rendered = render_chat_batch(
        tokenizer,
        conversations,
        max_length=max_length,
        train_on="last_assistant",
        template=template,
    )
    return [(r.input_ids, r.labels) for r in rendered]


def text_rows(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[tuple[list[int], ...]]:
    """One row per text (cut to ``max_tokens``), every token labelled, as in pre-training."""
    rows = []
    for text in texts:
        pieces = render_text(tokenizer, text, max_tokens)
        if pieces:
            rows.append((pieces[0].input_ids, pieces[0].labels))
    return rows


def mean_nll(values: Sequence[tuple[float, int]]) -> float:
    """Token-weighted mean negative log-likelihood (the loss); 0 for no tokens."""
    tokens = sum(n for _, n in values)
    return sum(s for s, _ in values) / tokens if tokens else 0.0
