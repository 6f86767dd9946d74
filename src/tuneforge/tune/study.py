"""The Optuna study behind ``tuneforge tune``: a sqlite file that survives the process.

``<runs_dir>/<name>/tune/<study>/study.db`` holds every trial, so running the
same command again continues the study. A trial left RUNNING by a process that
died (killed, power cut) is failed and its values queued again: at start-up
when its process on this machine is gone, and otherwise by Optuna's heartbeat
once it has been silent for :data:`GRACE_S` seconds (workers on other machines).
Only trials that ended on their own (complete, pruned, or failed by an error of
their own) count towards ``tune.trials``.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    STALE_CALLBACK = "heartbeat_stale_trial_callback"
except ImportError:  # optuna < 4.9 names them after failed trials
    from optuna.storages import RetryFailedTrialCallback as RetryHeartbeatStaleTrialCallback

    STALE_CALLBACK = "failed_trial_callback"

from tuneforge.config import Config, config_hash
from tuneforge.errors import ConfigError
from tuneforge.tune.objective import tidy_run
from tuneforge.tune.results import TrialRecord

HEARTBEAT_S = 30
GRACE_S = 120
MAX_RETRIES = 3  # a trial whose process dies this often is not queued again
HOST = socket.gethostname()


def study_name(config: Config) -> str:
    """``tune.study``, or the config's name."""
    return config.tune.study or config.name


def study_dir(config: Config) -> Path:
    """Where a study's database and results live: ``<runs_dir>/<name>/tune/<study>``."""
    return Path(config.runs_dir).resolve() / config.name / "tune" / study_name(config)


def open_study(
    config: Config, sampler: optuna.samplers.BaseSampler | None = None, *, claim: bool = False
) -> optuna.Study:
    """Open the study of ``config`` (created when new).

    Args:
        config: The base config; its ``tune`` section names the study and its pruner.
        sampler: The sampler this process asks for values (None: Optuna's default).
        claim: Stamp a new study with the config's hash and space, or check that an
            existing one was started with the same.

    Raises:
        ConfigError: the study was started for another base config or search space.
    """
    quiet_optuna()
    folder = study_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    storage = RDBStorage(
        f"sqlite:///{folder / 'study.db'}",
        engine_kwargs={"connect_args": {"timeout": 120}},
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        **{STALE_CALLBACK: RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)},
    )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name(config),
        direction="minimize",
        sampler=sampler,
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if claim:
        _check_owner(study, config)
    return study


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    """median: below the median of earlier trials at the same step; asha: successive halving."""
    tune = config.tune
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials)
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.train.eval_every or 1, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def _check_owner(study: optuna.Study, config: Config) -> None:
    """A study holds the trials of one base config and space; refuse to mix in another."""
    owner = {"config_hash": config_hash(config), "space": config.tune.space}
    recorded = study.user_attrs.get("owner")
    if recorded is None:
        study.set_user_attr("owner", json.loads(json.dumps(owner)))
        return
    if recorded != json.loads(json.dumps(owner)):
        same_config = recorded.get("config_hash") == owner["config_hash"]
        what = "search space (tune.space)" if same_config else "config (a value outside tune)"
        raise ConfigError(
            f"study {study.study_name!r} in {study_dir(config)} was started with another "
            f"{what}; set tune.study to a new name to start a new study, or delete that folder"
        )


def mark_process(trial: optuna.Trial) -> None:
    """Record which process runs a trial, so a later start can tell it died."""
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose process on this machine is gone, and queue their values again.

    Returns:
        The numbers of the trials that were failed.
    """
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    storage = study._storage  # the study's own storage object (public: get_trial_id_...)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != HOST or pid is None or _alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number
        )
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        requeue(study, storage.get_trial(trial_id), retry)
        if trial.user_attrs.get("run_dir"):
            tidy_run(trial.user_attrs["run_dir"])
        failed.append(trial.number)
    return failed


def requeue(
    study: optuna.Study, trial: FrozenTrial, retry: RetryHeartbeatStaleTrialCallback | None = None
) -> None:
    """Queue an interrupted trial's values again (up to :data:`MAX_RETRIES` times)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        (retry or RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))(study, trial)


def counts_towards_budget(trial: FrozenTrial) -> bool:
    """Complete, pruned, or failed by its own error (not by a dead or interrupted process)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def finished(study: optuna.Study) -> int:
    """Trials that count towards ``tune.trials``."""
    return sum(counts_towards_budget(t) for t in study.get_trials(deepcopy=False))


def remaining(study: optuna.Study, target: int) -> int:
    """Trials still to start: the target less the finished and the running ones."""
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return target - sum(counts_towards_budget(t) for t in trials) - running


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, as the results files show it."""
    return [record(trial) for trial in study.get_trials(deepcopy=False)]


def record(trial: FrozenTrial) -> TrialRecord:
    """One trial: PRUNED trials show their last validation loss, FAIL ones their error."""
    state = trial.state.name
    value: float | None = trial.value if trial.state == TrialState.COMPLETE else None
    note = ""
    attrs: dict[str, Any] = trial.user_attrs
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        value, note = trial.intermediate_values[step], f"pruned at step {step}"
    elif trial.state == TrialState.FAIL:
        state = "FAIL" if "error" in attrs else "INTERRUPTED"
        note = attrs.get("error", "process stopped; its values were queued again")
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        note = f"retry of trial {retried}" + (f"; {note}" if note else "")
    return TrialRecord(
        number=trial.number,
        state=state,
        params=dict(trial.params),
        val_loss=value,
        seconds=attrs.get("seconds"),
        run_dir=attrs.get("run_dir", ""),
        note=note,
    )


def quiet_optuna() -> None:
    """Optuna's per-trial log lines and experimental-feature warnings: ours say it once."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
