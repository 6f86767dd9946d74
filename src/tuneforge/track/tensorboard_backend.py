"""TensorBoard: event files in ``<run>/tensorboard/``, read with ``tensorboard --logdir runs``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tuneforge.track.base import RunInfo, metric_name


class TensorBoardTracker:
    """Scalars for every metric, and the resolved config as text."""

    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, info: RunInfo, params: dict[str, Any]) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run adds another event file to the same folder; TensorBoard merges them
        self.writer = SummaryWriter(log_dir=str(info.run_dir / "tensorboard"))
        if not info.resume:
            table = "\n".join(f"    {k}: {v}" for k, v in params.items())
            self.writer.add_text("config", table)
            self.writer.add_text("tags", json.dumps(info.tags, indent=1))
        return {"log_dir": str(info.run_dir / "tensorboard")}

    def log_metrics(
        self, stage: str, step: int, values: dict[str, float], timestamp: float | None = None
    ) -> None:
        for key, value in values.items():
            self.writer.add_scalar(metric_name(stage, key), value, step, walltime=timestamp)

    def flush(self) -> None:
        self.writer.flush()

    def log_eval(self, values: dict[str, dict[str, float]]) -> None:
        now = time.time()
        for model, named in values.items():
            for key, value in named.items():
                self.writer.add_scalar(metric_name("eval", model, key), value, 0, walltime=now)

    def log_artifact(self, path: Path, folder: str) -> None:
        """Nothing to copy: the files are already in the run directory beside the events."""

    def set_tags(self, tags: dict[str, str]) -> None:
        self.writer.add_text("tags", json.dumps(tags, indent=1))

    def register_model(self, path: Path, name: str, tags: dict[str, str]) -> str | None:
        """TensorBoard has no model registry."""
        return None

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.add_text("status", status)
            self.writer.close()
