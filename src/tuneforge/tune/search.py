"""``tuneforge tune``: check the search can run, run it on a backend, write the results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from tuneforge.config import Config
from tuneforge.errors import ConfigError, StageFailed
from tuneforge.tune.results import print_results, write_results
from tuneforge.tune.space import check_space
from tuneforge.tune.study import study_dir, study_name

Backend = Literal["optuna", "ray"]


def run_search(
    config: Config,
    config_file: str,
    *,
    backend: Backend = "optuna",
    trials: int | None = None,
    parallel: int | None = None,
    timeout_minutes: float | None = None,
) -> Path:
    """Search ``config.tune.space``; budgets given here override the config's ``tune`` ones.

    Returns:
        The study folder (best_config.yaml, trials.csv, trials.md, importance.png).

    Raises:
        ConfigError: the config cannot be searched as it is (naming the key to change).
        StageFailed: no trial completed.
    """
    from tuneforge.tune.optuna_search import Budget

    check_searchable(config)
    minutes = timeout_minutes or config.tune.timeout_minutes
    budget = Budget(
        trials=trials or config.tune.trials,
        parallel=parallel or config.tune.parallel,
        deadline=time.time() + 60 * minutes if minutes else None,
    )
    if backend == "ray":
        from tuneforge.tune.ray_search import ray_study_dir, run_ray

        records, folder = run_ray(config, config_file, budget), ray_study_dir(config)
    else:
        from tuneforge.tune.optuna_search import run_optuna

        records, folder = run_optuna(config, config_file, budget), study_dir(config)
    best = write_results(folder, records, config, study_name(config))
    print_results(records, folder)
    if best is None:
        raise StageFailed(
            f"no trial of study {study_name(config)} completed; their errors are in "
            f"{folder / 'trials.csv'}"
        )
    return folder


def check_searchable(config: Config) -> None:
    """The space is valid at every corner, and there is a validation loss to compare and prune on.

    Raises:
        ConfigError: one line naming the key to set.
    """
    check_space(config)
    if config.data.val_fraction == 0:
        raise ConfigError(
            "tune: data.val_fraction is 0, but trials are compared on validation loss; "
            "set data.val_fraction (e.g. 0.1)"
        )
    if config.tune.pruner != "none" and config.train.eval_every is None:
        raise ConfigError(
            f"tune.pruner {config.tune.pruner} needs train.eval_every (the validation loss it "
            "prunes on); set train.eval_every, or tune.pruner: none"
        )
