"""Replay data: general-domain rows mixed into every epoch against catastrophic forgetting.

The replay file is read with the same readers and rendered with the same
functions as the training data (chat samples through the chat template, text
samples as plain text), then packed like the training rows when packing is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.data.packing import pack
from tuneforge.data.readers import read_dataset
from tuneforge.data.render import render_chat, render_text
from tuneforge.errors import DataError
from tuneforge.train.rows import Rows


def load_replay(config: Config, tokenizer: Any, packed: bool) -> Rows | None:
    """The rendered replay rows, or None when ``train.replay.fraction`` is 0.

    Raises:
        DataError: a fraction without a path, or a replay file with nothing to train on.
    """
    replay, data = config.train.replay, config.data
    if replay.fraction == 0:
        return None
    if not replay.path:
        raise DataError("train.replay.fraction is set but train.replay.path is not")
    if not Path(replay.path).exists():
        raise DataError(f"train.replay.path {replay.path!r}: file not found")
    ids, labels = [], []
    for sample in read_dataset(replay.path).samples:
        if sample.kind == "text":
            pieces = render_text(tokenizer, sample.text or "", data.max_length)
        elif sample.kind == "chat":
            pieces = [
                render_chat(
                    tokenizer,
                    sample.messages,
                    max_length=data.max_length,
                    train_on=data.train_on,
                    tools=sample.tools,
                    template=data.template,
                )
            ]
        else:
            continue
        for piece in pieces:
            if piece.trained_tokens:
                ids.append(piece.input_ids)
                labels.append(piece.labels)
    if not ids:
        raise DataError(f"train.replay.path {replay.path!r}: no chat or text samples to replay")
    if not packed:
        return Rows(ids, labels)
    rows = pack(ids, labels, data.pack_length or data.max_length).rows
    return Rows(
        [r.input_ids for r in rows],
        [r.labels for r in rows],
        [r.position_ids for r in rows],
        [r.lengths for r in rows],
    )
