"""`tuneforge tune` on the tiny model: finds a better config, resumes, survives a kill; Ray."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from tests_support import cli_command, cli_env
from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.tune.study import open_study

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch):
    """The tiny model trains fastest on one thread; more only spin when the CPUs are shared."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_config(tmp_path: Path, model: Path, *, name: str = "tuned", extra: str = "") -> Path:
    """12 LoRA steps on 60 tickets, validation every 4 steps, lr searched over four decades."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"name: {name}\nruns_dir: {tmp_path / 'runs'}\n"
        f"model:\n  name_or_path: {model}\n"
        f"data:\n  path: {REPO / 'examples/data/support_tickets.jsonl'}\n  max_samples: 60\n"
        "  max_length: 160\n  val_fraction: 0.2\n  test_fraction: 0.1\n  packing: false\n"
        "train:\n  max_steps: 12\n  batch_size: 4\n  eval_every: 4\n"
        "tune:\n  startup_trials: 2\n  space:\n"
        "    train.lr: {log_uniform: [1.0e-5, 0.3]}\n" + extra
    )
    return config


def study_of(config: Path) -> optuna.Study:
    return open_study(load_config(config))


def trial_runs(tmp_path: Path, name: str) -> list[Path]:
    """Run directories of trials (the base config's run, which holds the data, has no tune)."""
    runs = sorted((tmp_path / "runs" / name).glob("2*/manifest.json"))
    return [m.parent for m in runs if "tune" in json.loads(m.read_text())]


def test_six_trials_find_a_config_better_than_the_median(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_model_dir)
    assert main(["tune", str(config), "--trials", "6"]) == 0
    trials = study_of(config).get_trials()
    states = [t.state.name for t in trials]
    assert len(trials) == 6 and "RUNNING" not in states and "FAIL" not in states
    assert states.count("PRUNED") >= 1  # an lr far off the good range is stopped early
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    losses = [t.value for t in complete]
    best = min(complete, key=lambda t: t.value)
    assert len(complete) >= 2 and best.value < statistics.median(losses)
    for trial in trials:  # a pruned trial stopped at the validation step it was pruned on
        if trial.state.name == "PRUNED":
            assert max(trial.intermediate_values) < 12
            run = Path(trial.user_attrs["run_dir"])
            assert not (run / "train").exists() and not list(run.glob(".train.tmp-*"))

    folder = tmp_path / "runs" / "tuned" / "tune" / "tuned"
    best_config = load_config(folder / "best_config.yaml")
    assert best_config.train.lr == best.params["train.lr"]
    assert best_config.train.max_steps == 12 and best_config.tune.space
    rows = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 7 and rows[0].startswith("number,state,val_loss,seconds,train.lr,")
    assert (folder / "importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"| {best.number} | COMPLETE | {best.value:.5g} |" in (folder / "trials.md").read_text()
    manifest = json.loads((Path(best.user_attrs["run_dir"]) / "manifest.json").read_text())
    assert manifest["tune"]["trial"] == best.number
    assert manifest["stages"]["train"]["summary"]["val_loss_after"] == pytest.approx(best.value)
    printed = capsys.readouterr()
    assert f"best: trial {best.number}, val loss {best.value:.5g}" in printed.out
    assert "[6/6] trial 5" in printed.err


def test_the_study_resumes_without_rerunning_finished_trials(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_model_dir, name="resumed", extra="  pruner: none\n")
    # two worker processes share the study for the first two trials
    assert main(["tune", str(config), "--trials", "2", "--parallel", "2"]) == 0
    first = study_of(config).get_trials()
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE"]
    assert all(t.user_attrs["pid"] != os.getpid() for t in first)  # ran in the workers
    assert main(["tune", str(config), "--trials", "4"]) == 0
    trials = study_of(config).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for before, after in zip(first, trials[:2], strict=True):
        assert after.datetime_start == before.datetime_start and after.value == before.value
    assert len(trial_runs(tmp_path, "resumed")) == 4
    assert len({t.params["train.lr"] for t in trials}) == 4
    assert main(["tune", str(config), "--trials", "4"]) == 0  # nothing left to run
    assert len(study_of(config).get_trials()) == 4
    capsys.readouterr()
    # a wall-clock budget of 0.6 s: at most one more trial starts (none if it is spent first)
    assert main(["tune", str(config), "--trials", "9", "--timeout-minutes", "0.01"]) == 0
    finished = len(study_of(config).get_trials())
    assert finished in (4, 5)
    assert f"time budget spent: {finished} of 9 trials finished" in capsys.readouterr().err


def test_a_killed_search_continues_and_reruns_the_interrupted_trial(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = write_config(tmp_path, tiny_model_dir, name="killed", extra="  pruner: none\n")
    process = subprocess.Popen(
        cli_command("tune", config.name, "--trials", "3"),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "runs" / "killed"
    training = _wait_for(lambda: list(runs.glob("*/.train.tmp-*")) or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert training is not True and training, process.stderr.read()[-3000:]
    killed = study_of(config).get_trials()
    assert [t.state.name for t in killed][-1] == "RUNNING"  # what a killed process leaves

    assert main(["tune", str(config), "--trials", "3"]) == 0
    trials = study_of(config).get_trials()
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1
    interrupted = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == interrupted.number)
    assert retry.state.name == "COMPLETE" and retry.params == interrupted.params
    assert not list(Path(interrupted.user_attrs["run_dir"]).glob(".train.tmp-*"))
    rows = (tmp_path / "runs/killed/tune/killed/trials.csv").read_text().splitlines()
    assert any(",INTERRUPTED," in row for row in rows)
    assert any(f"retry of trial {interrupted.number}" in row for row in rows)


@pytest.mark.slow
def test_ray_backend_runs_two_trials_on_a_local_ray(tmp_path: Path, tiny_model_dir: Path) -> None:
    ray = pytest.importorskip("ray")
    config = write_config(tmp_path, tiny_model_dir, name="rayed", extra="  pruner: none\n")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        code = main(["tune", str(config), "--backend", "ray", "--trials", "2", "--parallel", "2"])
    finally:
        ray.shutdown()
    assert code == 0
    folder = tmp_path / "runs" / "rayed" / "tune" / "rayed-ray"
    rows = (folder / "trials.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 2 and all(",COMPLETE," in row for row in rows)
    best = load_config(folder / "best_config.yaml")
    lrs = [float(row.split(",")[4]) for row in rows]
    assert best.train.lr in lrs and 1e-5 <= best.train.lr <= 0.3
    assert len(trial_runs(tmp_path, "rayed")) == 2


def _wait_for(check, timeout: float = 300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    return None
