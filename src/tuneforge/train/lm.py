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
from tuneforge.train.loop import Log, Task, train_task
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


def train_lm(
    config: Config,
    model_path: str,
    data_dir: Path,
    out_dir: Path,
    *,
    checkpoints: Path,
    key: str,
    resume: bool = False,
    log: Log = lambda **_: None,
    resume_hint: str = "tuneforge train CONFIG --resume",
) -> dict[str, Any]:
    """Train with next-token loss; see :func:`tuneforge.train.loop.train_task`."""
    return train_task(
        config,
        model_path,
        data_dir,
        out_dir,
        lm_task,
        checkpoints=checkpoints,
        key=key,
        resume=resume,
        log=log,
        resume_hint=resume_hint,
    )
