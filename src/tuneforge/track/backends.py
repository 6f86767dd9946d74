"""Build the configured tracker backends, failing early when one's package is missing."""

from __future__ import annotations

import importlib.util

from tuneforge.config.track_schema import TrackConfig, active_backends
from tuneforge.errors import ConfigError
from tuneforge.track.base import Tracker

# backend -> (modules that must import, what to install); mlflow's sqlite store needs
# sqlalchemy and alembic, which mlflow-skinny leaves out
PACKAGES = {
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "'mlflow-skinny>=3,<4' sqlalchemy alembic"),
    "tensorboard": (("tensorboard",), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
}


def check_backends(track: TrackConfig) -> list[str]:
    """The active backend names; raises ConfigError naming the package a backend lacks."""
    names = active_backends(track)
    for name in names:
        modules, install = PACKAGES[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"track.backends: {name} needs the {missing[0]} package; "
                f"`pip install {install}`, or remove {name} from track.backends"
            )
    return names


def make_backends(track: TrackConfig) -> list[Tracker]:
    """One tracker per active backend, in the configured order."""
    found: list[Tracker] = []
    for name in check_backends(track):
        if name == "mlflow":
            from tuneforge.track.mlflow_backend import MLflowTracker

            found.append(MLflowTracker(track.mlflow_uri, track.log_model_weights))
        elif name == "tensorboard":
            from tuneforge.track.tensorboard_backend import TensorBoardTracker

            found.append(TensorBoardTracker())
        else:
            from tuneforge.track.wandb_backend import WandbTracker

            found.append(
                WandbTracker(track.wandb_project, track.wandb_mode, track.log_model_weights)
            )
    return found
