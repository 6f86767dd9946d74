"""Which recipe trains which objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config.schema import PREFERENCE_OBJECTIVES, RL_OBJECTIVES, Config


def train(config: Config, model_path: str, data_dir: Path, out_dir: Path, **options: Any) -> dict:
    """Train ``config.objective`` with its recipe; options as for :func:`loop.train_task`."""
    if config.objective in PREFERENCE_OBJECTIVES:
        from tuneforge.train.preference import train_preference as recipe
    elif config.objective in RL_OBJECTIVES:
        from tuneforge.train.rl import train_rl as recipe
    else:
        from tuneforge.train.lm import train_lm as recipe
    return recipe(config, model_path, data_dir, out_dir, **options)
