"""One trial: the base config with sampled values, trained through the real pipeline.

Every trial gets its own new run directory under ``runs_dir`` (so the best trial
is an ordinary run: `tuneforge eval best_config.yaml` finds and reuses it), and
links the data stage prepared once for the search. Its objective is the final
validation loss. Each validation loss during training goes to ``report``, which
may stop the trial by raising :class:`StopTrial`.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import Config
from tuneforge.errors import StageFailed, TrainingStopped
from tuneforge.pipeline import Pipeline
from tuneforge.runs import create_run, latest_run
from tuneforge.track.session import RunTracking
from tuneforge.tune.space import trial_config

Report = Callable[[int, float], None]


class StopTrial(TrainingStopped):
    """Raised by a report callback: the pruner stopped this trial (trackers see KILLED)."""


@dataclass
class TrialOutcome:
    """What a trial left: its objective, where, how long, and whether it was stopped early."""

    val_loss: float
    run_dir: str
    seconds: float
    steps: int
    pruned: bool = False


def prepare_shared_stages(config: Config, config_file: str) -> str:
    """Run (or reuse) the base and data stages once, before trials start, so they never race.

    Returns:
        The run directory that holds them (the base config's latest run, or a new one).
    """
    run = latest_run(config) or create_run(config, config_file)
    with Pipeline(config=config, run=run, config_file=config_file) as pipeline:
        pipeline.execute("data")
    return str(run.path)


def run_trial(
    base: Config,
    values: dict[str, Any],
    config_file: str,
    report: Report,
    *,
    labels: dict[str, Any] | None = None,
    started: Callable[[str], None] | None = None,
) -> TrialOutcome:
    """Train ``base`` with ``values`` applied in a new run directory.

    Args:
        base: The resolved base config.
        values: Dotted key -> sampled value.
        config_file: The base config's file (recorded in the manifest).
        report: Gets ``(step, val_loss)`` at each validation; raises StopTrial to prune.
        labels: Recorded under ``tune`` in the run's manifest (study, trial number).
        started: Gets the new run directory before training starts.

    Raises:
        StageFailed: training failed (a NaN loss) or ended without a validation loss.
    """
    config = trial_config(base, values)
    run = create_run(config, config_file)
    run.update_manifest(tune={**(labels or {}), "params": values})
    if started is not None:
        started(str(run.path))
    began = time.time()
    last: dict[str, Any] = {}

    def on_log(line: dict[str, Any]) -> None:
        if "val_loss" in line:
            last.update(step=line["step"], val_loss=line["val_loss"])
            report(int(line["step"]), float(line["val_loss"]))

    pipeline = Pipeline(config=config, run=run, config_file=config_file, on_train_log=on_log)
    pipeline.tracking = RunTracking.open(config, run)
    try:
        with pipeline:
            summary = pipeline.execute("train").summary
    except StopTrial:
        seconds = round(time.time() - began, 2)
        outcome = TrialOutcome(last["val_loss"], str(run.path), seconds, last["step"], True)
        run.update_manifest(tune={**run.read_manifest()["tune"], "pruned_at": outcome.steps})
        return outcome
    finally:
        tidy_run(run.path)
    loss = summary.get("val_loss_after")
    if loss is None or not math.isfinite(loss):
        raise StageFailed(
            f"trial {values}: final validation loss is {loss}; the search needs a validation "
            "split (data.val_fraction > 0) and a finite loss"
        )
    seconds = round(time.time() - began, 2)
    return TrialOutcome(float(loss), str(run.path), seconds, int(summary["steps"]))


def tidy_run(run_dir: str | Path) -> None:
    """Remove what a trial needs no more: resume checkpoints, and a stage folder left half-written
    by a process that was killed (a finished trial keeps its trained adapter)."""
    run_dir = Path(run_dir)
    for leftover in run_dir.glob(".*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
