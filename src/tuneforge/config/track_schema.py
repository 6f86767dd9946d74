"""The track section: which experiment trackers a run reports to, besides its own directory.

Tracking settings never change what a stage produces, so this section is left
out of the config hash (run matching) and of every stage key.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.errors import ConfigError

Backend = Literal["mlflow", "tensorboard", "wandb"]
BACKENDS: tuple[str, ...] = ("mlflow", "tensorboard", "wandb")
# Set to a comma-separated list ("" for none) to choose the backends of every run this
# process starts, whatever the configs say (the test suite turns tracking off with it).
BACKENDS_ENV = "TUNEFORGE_TRACK_BACKENDS"


class TrackConfig(BaseModel):
    """Experiment tracking: MLflow (embedded sqlite store) by default, W&B and TensorBoard."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backends: list[Backend] = Field(
        default_factory=lambda: ["mlflow"],
        description="Trackers to report to; [] turns tracking off (the run directory remains).",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI; null: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<runs_dir>/mlflow.db.",
    )
    experiment: str | None = Field(None, description="Experiment / project name; null: name.")
    register_model: bool = Field(
        True, description="Register the exported model in the MLflow model registry."
    )
    log_model_weights: bool = Field(
        False, description="Copy the exported weights into the tracker's artifact store."
    )
    wandb_project: str | None = Field(None, description="W&B project; null: the experiment.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="offline needs no network; `wandb sync` uploads later."
    )

    @field_validator("backends")
    @classmethod
    def _no_repeats(cls, backends: list[str]) -> list[str]:
        repeated = sorted({b for b in backends if backends.count(b) > 1})
        if repeated:
            raise ValueError(f"backend {repeated[0]!r} is listed twice; list each backend once")
        return backends


def active_backends(track: TrackConfig) -> list[str]:
    """The backends to use: ``$TUNEFORGE_TRACK_BACKENDS`` when set, else the config's.

    Raises:
        ConfigError: the environment variable names an unknown backend.
    """
    raw = os.environ.get(BACKENDS_ENV)
    if raw is None:
        return list(track.backends)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in BACKENDS:
            raise ConfigError(
                f"{BACKENDS_ENV}={raw!r}: unknown backend {name!r}; use a comma-separated "
                f"list of {', '.join(BACKENDS)} (empty: tracking off)"
            )
    return list(dict.fromkeys(names))
