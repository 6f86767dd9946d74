"""Weights & Biases, offline by default: files in ``<run>/wandb/``, uploaded by ``wandb sync``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.track.base import RunInfo, metric_name


class WandbTracker:
    """Per-step metrics, eval numbers in the summary, reports as run files, models as artifacts."""

    name = "wandb"

    def __init__(
        self, project: str | None = None, mode: str = "offline", log_model_weights: bool = False
    ) -> None:
        self.project = project
        self.mode = mode
        self.log_model_weights = log_model_weights
        self.run: Any = None
        self._run_dir = Path()

    def start(self, info: RunInfo, params: dict[str, Any]) -> dict[str, Any]:
        import wandb

        self._run_dir = info.run_dir
        self.run = wandb.init(
            project=self.project or info.experiment,
            name=info.run_name,
            id=info.resume.get("id"),  # None: W&B picks one, kept for the next command
            resume="allow",
            mode=self.mode,
            dir=str(info.run_dir),
            config=params,
            tags=[f"config:{info.tags.get('tuneforge.config_hash', '')[:12]}"],
            # console capture would wrap our own stderr output; system stats start a thread
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        return {"id": self.run.id, "project": self.run.project}

    def log_metrics(
        self, stage: str, step: int, values: dict[str, float], timestamp: float | None = None
    ) -> None:
        self.run.log({metric_name(stage, k): v for k, v in values.items()}, step=step)

    def flush(self) -> None:
        """W&B writes in its own service process."""

    def log_eval(self, values: dict[str, dict[str, float]]) -> None:
        # W&B steps only grow, so eval numbers (one per run) go to the summary
        for model, named in values.items():
            for key, value in named.items():
                self.run.summary[metric_name("eval", model, key)] = value

    def log_artifact(self, path: Path, folder: str) -> None:
        self.run.save(str(path), base_path=str(self._run_dir), policy="now")

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.summary.update(tags)

    def register_model(self, path: Path, name: str, tags: dict[str, str]) -> str | None:
        """A model artifact (by reference: no copy, unless the weights are to be logged)."""
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=tags)
        if self.log_model_weights:
            artifact.add_dir(str(path))
        else:
            artifact.add_reference(path.resolve().as_uri())
        self.run.log_artifact(artifact)
        return None

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
