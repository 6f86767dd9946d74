"""Which recipe trains which objective: each recipe is a task on the shared loop."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from tuneforge.config.schema import PREFERENCE_OBJECTIVES, RL_OBJECTIVES, Config
from tuneforge.train.loop import TaskFactory, train_task


def task_factory(config: Config, model_path: str) -> TaskFactory:
    """The task of ``config.objective``: next-token, preference or online RL."""
    if config.objective in PREFERENCE_OBJECTIVES:
        from tuneforge.train.preference import preference_task

        return preference_task
    if config.objective in RL_OBJECTIVES:
        from tuneforge.train.rl import rl_task

        return partial(rl_task, model_path=model_path)
    from tuneforge.train.lm import lm_task

    return lm_task


def train(
    config: Config, model_path: str, data_dir: Path, out_dir: Path, **options: Any
) -> dict[str, Any]:
    """Train ``config.objective`` with its recipe; options as for :func:`loop.train_task`."""
    return train_task(
        config, model_path, data_dir, out_dir, task_factory(config, model_path), **options
    )
