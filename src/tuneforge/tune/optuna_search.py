"""The Optuna backend: TPE over ``tune.space``, pruned on validation loss, in a sqlite study.

One process runs the trials one after another; ``parallel: N`` starts N worker
processes (:mod:`tuneforge.tune.worker`) that share the study, each with its
share of the CPU threads. Before a worker starts a trial it takes a file lock,
checks that the study still needs one, and creates it RUNNING, so the study
ends with exactly ``trials`` finished trials however many workers there are.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuneforge.config import Config
from tuneforge.console import say
from tuneforge.errors import ConfigError, StageFailed, TrainingStopped
from tuneforge.tune import study as studies
from tuneforge.tune.lines import TrialLines, pipeline_quiet
from tuneforge.tune.objective import StopTrial, prepare_shared_stages, run_trial
from tuneforge.tune.results import TrialRecord, best_trial
from tuneforge.tune.space import distributions

# A trial that fails on its own is recorded and the search goes on (OOM is a RuntimeError).
TRIAL_ERRORS = (StageFailed, ConfigError, RuntimeError)


@dataclass
class Budget:
    """How many finished trials, how many at once, and when to stop starting new ones."""

    trials: int
    parallel: int = 1
    deadline: float | None = None  # time.time() after which no trial starts

    def time_left(self) -> bool:
        return self.deadline is None or time.time() < self.deadline


def run_optuna(config: Config, config_file: str, budget: Budget) -> list[TrialRecord]:
    """Run (or continue) the study of ``config`` until the budget is spent."""
    study = studies.open_study(config, claim=True)
    recovered = studies.recover_dead_trials(study)
    if recovered:
        say(f"trials {recovered} were left running by a process that died; queued again")
    todo = studies.remaining(study, budget.trials)
    say(
        f"study {study.study_name} ({studies.study_dir(config) / 'study.db'}): "
        f"{studies.finished(study)} of {budget.trials} trials finished"
        + (f"; {todo} to run, {min(budget.parallel, todo)} at a time" if todo > 0 else "")
    )
    if todo > 0:
        prepare_shared_stages(config, config_file)
        if min(budget.parallel, todo) == 1:
            work(config, config_file, budget)
        else:
            run_workers(config, config_file, budget, min(budget.parallel, todo))
    study = studies.open_study(config)
    if studies.finished(study) < budget.trials and not budget.time_left():
        say(f"time budget spent: {studies.finished(study)} of {budget.trials} trials finished")
    return studies.records(study)


def work(
    config: Config, config_file: str, budget: Budget, worker: int = 0, parent: int | None = None
) -> None:
    """Start trials one after another until the study has enough, time is up, or ``parent`` died."""
    existing = len(studies.open_study(config).get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(
        seed=config.seed + 1000 * worker + existing,  # resumed and parallel samplers differ
        n_startup_trials=config.tune.startup_trials,
    )
    study = studies.open_study(config, sampler)
    objective = Objective(config, config_file, budget.trials)
    lock = StartLock(studies.study_dir(config) / ".start.lock")
    while budget.time_left() and (parent is None or os.getppid() == parent):
        with lock:
            if studies.remaining(study, budget.trials) <= 0:
                return
            objective.lock = lock  # released as soon as the trial exists (RUNNING)
            run_one_trial(study, objective, config_file)


def run_one_trial(study: optuna.Study, objective: Objective, config_file: str) -> None:
    """One trial; a signal or Ctrl-C fails it and queues its values again before stopping."""
    try:
        study.optimize(
            objective,
            n_trials=1,
            catch=TRIAL_ERRORS,
            callbacks=[objective.finished],
            gc_after_trial=True,
        )
    except TrainingStopped as stop:  # SIGTERM/SIGINT during training
        number = objective.interrupted(study)
        why = str(stop).split(";")[0]  # "stopped by SIGTERM at step N"
        raise TrainingStopped(
            f"search {why}; trial {number} is queued again: continue with "
            f"`tuneforge tune {config_file}`"
        ) from None
    except BaseException:
        objective.interrupted(study)
        raise


class Objective:
    """Samples a trial's values, trains it, reports its validation losses to the pruner."""

    def __init__(self, config: Config, config_file: str, target: int) -> None:
        self.config, self.config_file = config, config_file
        self.dists = distributions(config.tune.space)
        self.lines = TrialLines(target)
        self.lock: StartLock | None = None
        self.current: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        if self.lock is not None:
            self.lock.release()
        self.current = trial.number
        studies.mark_process(trial)
        values = {key: suggest(trial, key, dist) for key, dist in self.dists.items()}
        self.lines.started(trial.number, values)

        def report(step: int, loss: float) -> None:
            trial.report(loss, step)
            self.lines.validated(trial.number, step, loss)
            if trial.should_prune():
                raise StopTrial(f"pruned at step {step}")

        labels = {"backend": "optuna", "study": trial.study.study_name, "trial": trial.number}
        try:
            with pipeline_quiet():
                outcome = run_trial(
                    self.config,
                    values,
                    self.config_file,
                    report,
                    labels=labels,
                    started=lambda path: trial.set_user_attr("run_dir", path),
                )
        except TRIAL_ERRORS as error:
            trial.set_user_attr("error", first_line(error))
            raise
        trial.set_user_attr("seconds", outcome.seconds)
        if outcome.pruned:
            raise optuna.TrialPruned(f"pruned at step {outcome.steps}")
        return outcome.val_loss

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: one line with the trial's result and the study's progress."""
        self.current = None
        shown = studies.record(trial)
        best = best_trial(studies.records(study))
        self.lines.finished(
            trial.number,
            shown.state,
            shown.val_loss,
            shown.seconds,
            done=studies.finished(study),
            best=(best.number, best.val_loss) if best and best.val_loss is not None else None,
            note=shown.note,
        )

    def interrupted(self, study: optuna.Study) -> int | None:
        """The process is stopping mid-trial (signal, Ctrl-C): fail the trial, queue it again.

        Returns:
            The interrupted trial's number (None between trials).
        """
        number, self.current = self.current, None
        if number is None:
            return None
        if study.get_trials(deepcopy=False)[number].state == TrialState.RUNNING:
            study.tell(number, state=TrialState.FAIL)
        studies.requeue(study, study.get_trials(deepcopy=False)[number])
        return number


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    """Ask the trial for ``key`` from its distribution (a retried trial gets its old value)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    raise TypeError(f"{key}: unsupported distribution {dist!r}")


def run_workers(config: Config, config_file: str, budget: Budget, workers: int) -> None:
    """N worker processes on the shared study; Ctrl-C stops them (their trials are requeued)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    job = {
        "config": config.model_dump(mode="json"),
        "config_file": config_file,
        "budget": asdict(budget),
        "threads": threads,
        "parent": os.getpid(),
    }
    folder = studies.study_dir(config)
    job_file = folder / f".job-{os.getpid()}.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tuneforge.tune.worker", str(job_file)]
    procs = [subprocess.Popen([*command, str(index)], env=env) for index in range(workers)]
    try:
        codes = [proc.wait() for proc in procs]
    except BaseException:
        for proc in procs:
            proc.terminate()  # SIGTERM: each worker stops its trial, which is queued again
        for proc in procs:
            proc.wait()
        raise
    finally:
        job_file.unlink(missing_ok=True)
    failed = [code for code in codes if code != 0]
    if failed:
        raise StageFailed(
            f"{len(failed)} of {workers} tune workers exited with status {failed[0]} "
            f"(their output is above); rerun `tuneforge tune {config_file}` to continue"
        )


class StartLock:
    """An exclusive lock on a file, held from 'does the study need a trial?' to its creation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None

    def __enter__(self) -> StartLock:
        self.handle = open(self.path, "a")
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


def first_line(error: BaseException) -> str:
    """An error's first line, prefixed with its type when that is not one of ours."""
    text = (str(error).strip().splitlines() or [""])[0]
    return (
        text if isinstance(error, StageFailed | ConfigError) else f"{type(error).__name__}: {text}"
    )
