"""The tune section: space validation at load time, distributions, trial configs, results files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuneforge.config import config_hash, load_config
from tuneforge.errors import ConfigError
from tuneforge.tune.results import TrialRecord, best_trial, trials_markdown, write_trials_csv
from tuneforge.tune.search import check_searchable
from tuneforge.tune.space import corner_values, distributions, trial_config
from tuneforge.tune.study import (
    finished,
    mark_process,
    open_study,
    record,
    recover_dead_trials,
    remaining,
)

BASE = """\
name: demo
model:
  name_or_path: tiny
data:
  path: data/x.jsonl
train:
  lr: 1.0e-3
  eval_every: 4
"""


def load(tmp_path: Path, tune: str) -> object:
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE + tune)
    return load_config(path)


def test_space_maps_to_optuna_distributions(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "tune:\n  space:\n"
        "    train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n"
        "    method.dropout: {uniform: [0, 0.2]}\n"
        "    method.r: {choice: [8, 16, 32]}\n"
        "    train.batch_size: {int: [2, 10], step: 4}\n",
    )
    found = distributions(config.tune.space)
    assert found == {
        "train.lr": FloatDistribution(1e-5, 1e-3, log=True),
        "method.dropout": FloatDistribution(0.0, 0.2),
        "method.r": CategoricalDistribution([8, 16, 32]),
        "train.batch_size": IntDistribution(2, 10, step=4),
    }
    assert config.tune.trials == 20 and config.tune.pruner == "median"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "train.lrr: {uniform: [0.1, 0.2]}",
            r"cfg.yaml:\d+: tune.space: train.lrr: unknown key 'lrr' in train; did you mean 'lr'\?",
        ),
        ("trainer.lr: {uniform: [0.1, 0.2]}", r"unknown key 'trainer' in the top level"),
        ("train: {uniform: [0.1, 0.2]}", r"train: is a section; search one of its keys"),
        ("train.lr.x: {uniform: [0.1, 0.2]}", r"train.lr has no sub-keys"),
        ("train.lr: {uniform: [0.2, 0.1]}", r"lower bound 0.2 must be below the upper bound 0.1"),
        ("train.lr: {log_uniform: [0, 0.1]}", r"log_uniform needs a lower bound above 0, got 0"),
        ("train.lr: {normal: [0, 1]}", r"train.lr: expected one of uniform, log_uniform, int"),
        ("train.lr: {uniform: [0.1]}", r"uniform needs \[lo, hi\] \(two numbers\)"),
        ("method.r: {uniform: [4, 8]}", r"method.r: uniform value 5.48 does not fit: .*use \{int"),
        ("method.r: {choice: [8, 0]}", r"method.r: choice value 0 does not fit"),
        ("method.r: {int: [4, 9], step: 2}", r"int range 9 - 4 is not a multiple of step 2"),
        ("train.lr: {uniform: [0.1, 0.2], step: 2}", r"step goes with int, not uniform"),
        ("tune.trials: {int: [1, 3]}", r"tune.trials: tune cannot be searched"),
        ("runs_dir: {choice: [a, b]}", r"runs_dir: runs_dir cannot be searched"),
    ],
)
def test_bad_space_is_a_one_line_error_at_load(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, f"tune:\n  space:\n    {entry}\n")
    assert "\n" not in str(caught.value)


def test_float_range_on_an_integer_key_says_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"use \{int: \[lo, hi\]\} or \{choice: \[...\]\}"):
        load(tmp_path, "tune:\n  space:\n    method.r: {uniform: [4.5, 8]}\n")


def test_tune_section_is_left_out_of_the_config_hash(tmp_path: Path) -> None:
    plain = load(tmp_path, "")
    tuned = load(tmp_path, "tune:\n  trials: 6\n  space:\n    method.r: {choice: [8, 16]}\n")
    assert config_hash(plain) == config_hash(tuned)
    trial = trial_config(tuned, {"method.r": 8})
    assert trial.method.r == 8 and tuned.method.r == 16
    assert config_hash(trial) != config_hash(plain)
    assert config_hash(trial_config(tuned, {"method.r": 16})) == config_hash(plain)


def test_trial_config_names_values_that_break_a_cross_key_rule(tmp_path: Path) -> None:
    config = load(
        tmp_path, "tune:\n  space:\n    data.pack_length: {choice: [1024, 256]}\n"
    ).model_copy()
    config.data.max_length = 512
    assert trial_config(config, {"data.pack_length": 1024}).data.pack_length == 1024
    with pytest.raises(ConfigError, match=r"tune.space values data.pack_length=256: data.pack_len"):
        check_searchable(config)


def test_corners_cover_each_bound_and_choice_once() -> None:
    space = {"a.b": {"uniform": [0.1, 0.5]}, "c.d": {"choice": ["x", "y", "z"]}}
    assert corner_values(space) == [
        {"a.b": 0.1, "c.d": "x"},
        {"a.b": 0.5, "c.d": "x"},
        {"a.b": 0.1, "c.d": "y"},
        {"a.b": 0.1, "c.d": "z"},
    ]


def test_search_needs_a_space_eval_every_for_pruning_and_a_validation_split(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"tune.space is empty"):
        check_searchable(load(tmp_path, ""))
    space = "tune:\n  space:\n    train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n"
    config = load(tmp_path, space)
    config.train.eval_every = None
    with pytest.raises(ConfigError, match=r"^tune.pruner median needs train.eval_every"):
        check_searchable(config)
    config.tune.pruner = "none"
    check_searchable(config)
    config.data.val_fraction = 0
    with pytest.raises(ConfigError, match=r"data.val_fraction is 0"):
        check_searchable(config)


def test_trials_table_and_best(tmp_path: Path) -> None:
    records = [
        TrialRecord(0, "COMPLETE", {"train.lr": 1e-4}, 2.5, 3.0, "/r/a"),
        TrialRecord(1, "PRUNED", {"train.lr": 1e-1}, 4.0, 1.0, "/r/b", "pruned at step 4"),
        TrialRecord(2, "COMPLETE", {"train.lr": 3e-4}, 2.25, 3.5, "/r/c"),
        TrialRecord(3, "FAIL", {"train.lr": 9e-1}, None, None, "/r/d", "loss is nan"),
    ]
    assert best_trial(records).number == 2
    write_trials_csv(tmp_path / "t.csv", records)
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [(r["number"], r["state"], r["val_loss"]) for r in rows] == [
        ("0", "COMPLETE", "2.5"),
        ("1", "PRUNED", "4"),
        ("2", "COMPLETE", "2.25"),
        ("3", "FAIL", ""),
    ]
    text = trials_markdown(records, "demo")
    assert "4 trials (2 complete, 1 fail, 1 pruned); median val loss 2.375" in text
    body = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[0] for line in body[1:]] == ["| 2", "| 0", "| 1", "| 3"]


def test_a_study_belongs_to_one_base_config_and_space(tmp_path: Path) -> None:
    space = "tune:\n  space:\n    train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n"
    config = load(tmp_path, f"runs_dir: {tmp_path / 'runs'}\n{space}")
    open_study(config, claim=True)
    config.tune.trials = 3  # budgets are free to change between runs
    open_study(config, claim=True)
    other = config.model_copy(deep=True)
    other.train.max_steps = 5
    with pytest.raises(ConfigError, match=r"study 'demo' in .* was started with another config"):
        open_study(other, claim=True)
    other = config.model_copy(deep=True)
    other.tune.space = {"train.lr": {"log_uniform": [1e-4, 1e-3]}}
    with pytest.raises(ConfigError, match=r"another search space \(tune.space\); set tune.study"):
        open_study(other, claim=True)


def test_a_trial_of_a_dead_process_is_failed_and_queued_again(tmp_path: Path) -> None:
    import subprocess
    import sys

    space = "tune:\n  space:\n    train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n"
    config = load(tmp_path, f"runs_dir: {tmp_path / 'runs'}\n{space}")
    study = open_study(config, claim=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    alive = study.ask({"train.lr": distributions(config.tune.space)["train.lr"]})
    mark_process(alive)  # this process: still running
    gone = study.ask({"train.lr": distributions(config.tune.space)["train.lr"]})
    gone.set_user_attr("host", alive.user_attrs["host"])
    gone.set_user_attr("pid", int(dead.stdout))
    assert recover_dead_trials(study) == [gone.number]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["RUNNING", "FAIL", "WAITING"]
    assert trials[2].params == trials[1].params
    assert trials[2].system_attrs["failed_trial"] == gone.number
    assert finished(study) == 0 and remaining(study, 3) == 2  # the failure does not count
    assert record(trials[1]).state == "INTERRUPTED"
    assert record(trials[2]).note == f"retry of trial {gone.number}"
