"""`tuneforge tune`: hyper-parameter search over the config's ``tune.space``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from tuneforge.cli.common import ConfigArg, SetOpt, preflight
from tuneforge.config import load_config
from tuneforge.config.load import resolve_run_references
from tuneforge.console import quiet_libraries


class BackendChoice(StrEnum):
    optuna = "optuna"
    ray = "ray"


def tune(
    config: ConfigArg,
    set_: SetOpt = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Finished trials to end with (default: tune.trials)."),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option("--parallel", min=1, help="Trials at once (default: tune.parallel)."),
    ] = None,
    timeout_minutes: Annotated[
        float | None,
        typer.Option(
            "--timeout-minutes",
            min=0.01,
            help="Start no trial after this many minutes (default: tune.timeout_minutes).",
        ),
    ] = None,
    backend: Annotated[
        BackendChoice,
        typer.Option(
            "--backend",
            help="optuna: sqlite study on this machine (resumable); ray: Ray Tune "
            "(a local instance, or the cluster at $RAY_ADDRESS).",
        ),
    ] = BackendChoice.optuna,
) -> None:
    """Search hyper-parameters (tune.space): best_config.yaml, trials table, importance plot."""
    from tuneforge.cli.data_synth import synthesize_first
    from tuneforge.tune import run_search

    quiet_libraries()
    cfg = resolve_run_references(load_config(config, set_))
    synthesize_first(cfg)
    preflight(cfg)
    run_search(
        cfg,
        str(config),
        backend=backend.value,
        trials=trials,
        parallel=parallel,
        timeout_minutes=timeout_minutes,
    )
