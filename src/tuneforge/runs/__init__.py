"""Run directories, manifests, and the stage cache."""

from tuneforge.runs.rundir import RunDir, create_run, latest_run
from tuneforge.runs.stages import StageResult, find_finished, run_stage, stage_key

__all__ = [
    "RunDir",
    "StageResult",
    "create_run",
    "find_finished",
    "latest_run",
    "run_stage",
    "stage_key",
]
