"""The Ray Tune backend: the same trials, sampled by Optuna TPE, scheduled by Ray.

``tuneforge tune --backend ray`` starts a local Ray instance (all CPUs, no
dashboard), or joins the cluster at ``$RAY_ADDRESS`` when it is set. Every
trial is a Ray task that trains through the real pipeline and reports each
validation loss with ``ray.tune.report``; ASHA (``pruner: asha``) or the median
stopping rule (``pruner: median``) stop unpromising ones. On a cluster, the
data, the model and ``runs_dir`` must be on a file system every node sees.

Ray is imported only here; the study is not resumable (Ray keeps no sqlite
study): results go to ``<runs_dir>/<name>/tune/<study>-ray/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tuneforge.config import Config
from tuneforge.console import say
from tuneforge.errors import ConfigError
from tuneforge.tune.lines import TrialLines, pipeline_quiet
from tuneforge.tune.objective import prepare_shared_stages, tidy_run
from tuneforge.tune.optuna_search import Budget
from tuneforge.tune.results import TrialRecord
from tuneforge.tune.space import distributions
from tuneforge.tune.study import quiet_optuna, study_dir

METRIC = "val_loss"
# Passed on to the trial processes, which a running Ray instance did not inherit from us.
FORWARDED_ENV = ("TUNEFORGE_TRACK_BACKENDS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


def ray_study_dir(config: Config) -> Path:
    """``<runs_dir>/<name>/tune/<study>-ray``: the Ray backend's results."""
    folder = study_dir(config)
    return folder.with_name(f"{folder.name}-ray")


def run_ray(config: Config, config_file: str, budget: Budget) -> list[TrialRecord]:
    """Run ``budget.trials`` trials on Ray Tune, ``budget.parallel`` at a time."""
    ray, tune = import_ray()
    quiet_optuna()
    prepare_shared_stages(config, config_file)
    started = start_ray(ray, budget.parallel)
    try:
        folder = ray_study_dir(config)
        grid = make_tuner(tune, ray, config, config_file, budget, folder).fit()
    finally:
        if started:
            ray.shutdown()
    found = [grid[index] for index in range(len(grid))]
    records = [ray_record(index, result) for index, result in enumerate(found)]
    for r in records:
        if r.state != "COMPLETE" and r.run_dir:
            tidy_run(r.run_dir)
    return records


def import_ray() -> tuple[Any, Any]:
    """``ray`` and ``ray.tune``, or a one-line error saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(
            "--backend ray needs Ray Tune, which is not installed: pip install 'tuneforge[ray]'"
        ) from None
    return ray, tune


def start_ray(ray: Any, parallel: int) -> bool:
    """Join ``$RAY_ADDRESS``, or start a local instance; True when this call started it."""
    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    runtime_env = {"env_vars": env} if env else None
    if os.environ.get("RAY_ADDRESS"):
        say(f"ray: joining the cluster at RAY_ADDRESS={os.environ['RAY_ADDRESS']}")
        ray.init(runtime_env=runtime_env, log_to_driver=False)
    else:
        cpus = max(parallel, os.cpu_count() or 1)
        say(f"ray: starting a local instance with {cpus} CPUs (set RAY_ADDRESS for a cluster)")
        ray.init(
            num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False
        )
    return True


def make_tuner(
    tune: Any, ray: Any, config: Config, config_file: str, budget: Budget, folder: Path
) -> Any:
    """A Tuner over the space: OptunaSearch (TPE, the config's seed) and the pruner's scheduler."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    cluster = ray.cluster_resources()
    cpus = max(1, int(cluster.get("CPU", 1)) // budget.parallel)
    resources = {"cpu": cpus, **({"gpu": 1} if cluster.get("GPU", 0) >= 1 else {})}
    sampler = optuna.samplers.TPESampler(
        seed=config.seed, n_startup_trials=config.tune.startup_trials
    )
    trainable = tune.with_parameters(
        ray_trial, base=config.model_dump(mode="json"), config_file=config_file, threads=cpus
    )
    seconds = budget.deadline - time.time() if budget.deadline else None
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=OptunaSearch(
                space=distributions(config.tune.space), metric=METRIC, mode="min", sampler=sampler
            ),
            scheduler=make_scheduler(config),
            num_samples=budget.trials,
            max_concurrent_trials=budget.parallel,
            time_budget_s=max(seconds, 1.0) if seconds is not None else None,
        ),
        run_config=tune.RunConfig(
            name="ray_results",
            storage_path=str(folder),
            verbose=0,
            callbacks=[lines_callback(budget.trials)],
        ),
    )


def make_scheduler(config: Config) -> Any:
    """asha: ASHAScheduler; median: MedianStoppingRule; none: FIFO, all on the training step."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    every = config.train.eval_every or 1
    if config.tune.pruner == "asha":
        return ASHAScheduler(
            time_attr="step",
            grace_period=every,
            reduction_factor=3,
            max_t=(config.train.max_steps or 10**9) + 1,  # the final report comes at steps + 1
        )
    if config.tune.pruner == "median":
        return MedianStoppingRule(
            time_attr="step",
            grace_period=every,
            min_samples_required=max(1, config.tune.startup_trials),
        )
    return FIFOScheduler()


def ray_trial(params: dict[str, Any], base: dict[str, Any], config_file: str, threads: int) -> None:
    """One Ray trial: train, report each validation loss, then the final one (``final: 1``)."""
    import torch
    from ray import tune

    from tuneforge.tune.objective import run_trial

    torch.set_num_threads(threads)
    quiet_optuna()
    where: dict[str, str] = {"run_dir": ""}

    def report(step: int, loss: float) -> None:
        tune.report({METRIC: loss, "step": step, "run_dir": where["run_dir"]})

    def started(path: str) -> None:
        where["run_dir"] = path

    values = {key: params[key] for key in base["tune"]["space"]}
    with pipeline_quiet():
        outcome = run_trial(
            Config.model_validate(base),
            values,
            config_file,
            report,
            labels={"backend": "ray"},
            started=started,
        )
    tune.report(
        {
            METRIC: outcome.val_loss,
            "step": outcome.steps + 1,  # after the last validation step, for the scheduler
            "run_dir": outcome.run_dir,
            "seconds": outcome.seconds,
            "final": 1,
        }
    )


def ray_record(number: int, result: Any) -> TrialRecord:
    """A Ray result as a trial record: final report -> COMPLETE, stopped early -> PRUNED."""
    metrics = result.metrics or {}
    params = {key: value for key, value in (result.config or {}).items()}
    state = "COMPLETE" if metrics.get("final") else "PRUNED" if METRIC in metrics else "FAIL"
    note = ""
    if result.error is not None:
        state, note = "FAIL", (str(result.error).strip().splitlines() or [""])[-1][:300]
    elif state == "PRUNED":
        note = f"stopped by the scheduler at step {metrics.get('step')}"
    return TrialRecord(
        number=number,
        state=state,
        params=params,
        val_loss=metrics.get(METRIC),
        seconds=metrics.get("seconds") or metrics.get("time_total_s"),
        run_dir=metrics.get("run_dir", ""),
        note=note,
    )


def lines_callback(target: int) -> Any:
    """A Ray Tune callback (driver side) printing the same trial lines as the Optuna backend."""
    from ray.tune import Callback

    class Lines(Callback):
        def __init__(self) -> None:
            self.done, self.best = 0, None
            self.console: TrialLines | None = None  # made on first use: Ray pickles callbacks

        @property
        def lines(self) -> TrialLines:
            self.console = self.console or TrialLines(target)
            return self.console

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.lines.started(trials.index(trial), dict(trial.config))

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if not result.get("final") and METRIC in result:
                self.lines.validated(trials.index(trial), int(result["step"]), result[METRIC])

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished(trials.index(trial), trial, error=False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished(trials.index(trial), trial, error=True)

        def finished(self, number: int, trial: Any, *, error: bool) -> None:
            self.done += 1
            last = trial.last_result or {}
            state = "FAIL" if error else "COMPLETE" if last.get("final") else "PRUNED"
            loss = last.get(METRIC)
            if state == "COMPLETE" and (self.best is None or loss < self.best[1]):
                self.best = (number, loss)
            seconds = last.get("seconds")
            self.lines.finished(number, state, loss, seconds, done=self.done, best=self.best)

    return Lines()
