"""The next-token recipe: ``sft`` (chat, loss on the replies) and ``pretrain`` (raw text).

Both objectives train the same way; they differ only in the rows the data stage
renders (:mod:`tuneforge.data.prepare`). The task is the default one of the
shared loop (:mod:`tuneforge.train.loop`): summed token losses normalised by the
trained tokens of the whole optimizer step, with replay rows mixed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from tuneforge.config.schema import Config
from tuneforge.train.loop import Task
from tuneforge.train.replay import load_replay
from tuneforge.train.rows import collate_rows, load_rows


def lm_task(
    config: Config, data_dir: Path, tokenizer: Any, dtype: torch.dtype, _: Accelerator
) -> Task:
    """Token rows (packed or not) with next-token loss, plus replay rows."""
    packed = config.train.packing
    return Task(
        rows=load_rows(data_dir, "train", packed=packed),
        val_rows=load_rows(data_dir, "val"),
        collate=lambda rows: collate_rows(rows, tokenizer.pad_token_id, dtype),
        replay=load_replay(config, tokenizer, packed=packed),
        replay_fraction=config.train.replay.fraction,
    )
