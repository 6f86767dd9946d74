"""Experiment tracking: the run directory is the record; MLflow, W&B and TensorBoard mirror it.

``metrics.jsonl`` in every run is the always-on log; :class:`RunTracking` sends
what the stages leave in the run directory to the configured backends through
a fan-out that turns a failing backend into one warning line.
"""

from tuneforge.track.base import RunInfo, Tracker
from tuneforge.track.fanout import Trackers
from tuneforge.track.session import RunTracking

__all__ = ["RunInfo", "RunTracking", "Tracker", "Trackers"]
