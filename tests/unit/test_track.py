"""Tracking: the fan-out survives a failing backend, the env override, what is sent and when."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import config_hash, load_config
from tuneforge.config.track_schema import BACKENDS_ENV, TrackConfig, active_backends
from tuneforge.errors import ConfigError, TrainingStopped
from tuneforge.pipeline import STAGES, Pipeline
from tuneforge.runs import StageResult, create_run, latest_run
from tuneforge.track import RunInfo, RunTracking, Trackers
from tuneforge.track.backends import check_backends
from tuneforge.track.base import flatten, metric_name, numbers
from tuneforge.track.session import gate_status, outcome


class Recorder:
    """A backend that records every call; ``fail_on`` names a method that raises."""

    def __init__(self, name: str = "recorder", fail_on: str | None = None) -> None:
        self.name = name
        self.fail_on = fail_on
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        if method.startswith("__"):
            raise AttributeError(method)

        def call(*args: Any) -> Any:
            self.calls.append((method, args))
            if method == self.fail_on:
                raise RuntimeError(f"{self.name} store is unreachable\nsecond line")
            return {"id": self.name} if method == "start" else None

        return call

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]


@pytest.fixture
def config(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text('{"messages": []}\n')
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f"name: unit\nruns_dir: {tmp_path / 'runs'}\n"
        "model:\n  name_or_path: tiny\ndata:\n  path: d.jsonl\n"
    )
    return load_config(path)


def info(tmp_path: Path) -> RunInfo:
    return RunInfo("unit", "unit", "r1", tmp_path, tmp_path, resume={"good": {"run_id": "7"}})


def test_a_raising_backend_is_reported_once_then_dropped(tmp_path: Path) -> None:
    reports: list[str] = []
    good, bad = Recorder("good"), Recorder("bad", fail_on="log_metrics")
    trackers = Trackers([bad, good], report=reports.append)
    states = trackers.start(info(tmp_path), {"train.lr": "0.001"})
    assert states == {"bad": {"id": "bad"}, "good": {"id": "good"}}
    assert good.called("start")[0][0].resume == {"run_id": "7"}  # each gets its own state
    for step in (1, 2, 3):
        trackers.log_metrics("train", step, {"loss": 1.0 / step})
    trackers.log_eval({"tuned": {"exact_match": 0.5}})
    trackers.finish("FINISHED")
    assert len(reports) == 1
    assert "tracking backend bad failed in log_metrics" in reports[0]
    assert "RuntimeError: bad store is unreachable" in reports[0] and "\n" not in reports[0]
    assert len(bad.called("log_metrics")) == 1 and not bad.called("log_eval")
    assert bad.called("finish") == [("FAILED",)]  # a silent try, so it is not left running
    assert [args[1] for args in good.called("log_metrics")] == [1, 2, 3]
    assert good.called("finish") == [("FINISHED",)]
    assert trackers.names == ["good"] and "bad" in trackers.failed


def test_a_backend_that_fails_to_start_gets_no_more_calls(tmp_path: Path) -> None:
    reports: list[str] = []
    bad = Recorder("bad", fail_on="start")
    trackers = Trackers([bad], report=reports.append)
    assert trackers.start(info(tmp_path), {}) == {}
    trackers.log_metrics("train", 1, {"loss": 1.0})
    assert [name for name, _ in bad.calls] == ["start"] and len(reports) == 1


def test_env_override_chooses_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    track = TrackConfig(backends=["mlflow", "wandb"])
    monkeypatch.delenv(BACKENDS_ENV, raising=False)
    assert active_backends(track) == ["mlflow", "wandb"]
    monkeypatch.setenv(BACKENDS_ENV, "")
    assert active_backends(track) == []
    monkeypatch.setenv(BACKENDS_ENV, " tensorboard, mlflow ,tensorboard")
    assert active_backends(track) == ["tensorboard", "mlflow"]
    monkeypatch.setenv(BACKENDS_ENV, "mlflow,neptune")
    with pytest.raises(ConfigError, match=f"{BACKENDS_ENV}=.*unknown backend 'neptune'"):
        active_backends(track)


def test_track_config_checks_its_keys(config, tmp_path: Path) -> None:
    assert config.track.backends == ["mlflow"] and config.track.wandb_mode == "offline"
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(tmp_path / "cfg.yaml", ["track.backends=[mlflow, mlflow]"])
    with pytest.raises(ConfigError, match=r"track\.backends\.0 = 'comet'"):
        load_config(tmp_path / "cfg.yaml", ["track.backends=[comet]"])
    with pytest.raises(ConfigError, match="did you mean 'backends'"):
        load_config(tmp_path / "cfg.yaml", ["track.backend=[]"])


def test_a_backend_without_its_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    monkeypatch.delenv(BACKENDS_ENV, raising=False)
    with pytest.raises(ConfigError) as error:
        check_backends(TrackConfig(backends=["wandb"]))
    assert "pip install wandb" in str(error.value) and "\n" not in str(error.value)
    assert check_backends(TrackConfig(backends=[])) == []


def test_tracking_settings_change_no_stage_key_and_no_run_match(config, tmp_path: Path) -> None:
    run = create_run(config)
    other = load_config(
        tmp_path / "cfg.yaml",
        ["track.backends=[tensorboard, wandb]", "track.experiment=x", "track.register_model=false"],
    )
    assert config_hash(other) == config_hash(config)
    first = Pipeline(config=config, run=run, config_file="cfg.yaml")
    second = Pipeline(config=other, run=run, config_file="cfg.yaml")
    for stage in STAGES:
        assert first.material(stage) == second.material(stage), stage
    assert latest_run(other).path == run.path  # the same run directory is reused
    changed = load_config(tmp_path / "cfg.yaml", ["train.lr=0.1"])
    assert config_hash(changed) != config_hash(config)


def test_names_params_and_numbers() -> None:
    assert metric_name("eval", "tuned", "judge.score") == "eval/tuned/judge.score"
    assert metric_name("eval", "tuned", "bias:gap (max)") == "eval/tuned/bias_gap _max_"
    assert metric_name("train", "../x") == "train/__/x"
    assert numbers({"a": 1, "b": True, "c": "x", "d": float("nan"), "e": 2.5}) == {
        "a": 1.0,
        "e": 2.5,
    }
    flat = flatten({"train": {"lr": 0.1, "stop": ["a"]}, "name": "n", "judge": {}, "x": None})
    assert flat == {
        "train.lr": "0.1",
        "train.stop": '["a"]',
        "name": "n",
        "judge": "{}",
        "x": "null",
    }


def test_run_tracking_forwards_new_metric_lines_once(config) -> None:
    run = create_run(config)
    backend = Recorder()
    tracking = RunTracking(Trackers([backend]), run, config)
    run.log_metrics("train", step=1, loss=2.0, lr=0.1, epoch=0)
    run.log_metrics("eval", model="tuned", exact_match=1.0)  # sent from the report instead
    with open(run.metrics_path, "a") as handle:
        handle.write('{"stage": "train", "step": 2, "loss"')  # a line still being written
    tracking.forward_metrics()
    assert [a[:3] for a in backend.called("log_metrics")] == [
        ("train", 1, {"loss": 2.0, "lr": 0.1, "epoch": 0.0})
    ]
    with open(run.metrics_path, "a") as handle:
        handle.write(": 1.5}\n")
    RunTracking(Trackers([backend]), run, config).forward_metrics()  # the offset is kept
    assert [a[1] for a in backend.called("log_metrics")] == [1, 2]
    assert run.read_manifest()["tracking"]["metrics_offset"] == run.metrics_path.stat().st_size


def test_run_tracking_sends_a_reused_stage_once(config) -> None:
    run = create_run(config)
    (run.path / "eval").mkdir()
    (run.path / "eval" / "report.html").write_text("<html/>")
    backend = Recorder()
    summary = {"values": {"tuned": {"exact_match": 0.5, "note": "x"}}, "gates": {"results": []}}
    result = StageResult("eval", run.path / "eval", "k1", True, summary, run.path)
    for _ in range(2):
        RunTracking(Trackers([backend]), run, config).after_stage(result)
    assert backend.called("log_eval") == [({"tuned": {"exact_match": 0.5}},)]
    assert [a[0].name for a in backend.called("log_artifact")] == ["report.html"]
    assert backend.called("set_tags")[0][0]["tuneforge.stage.eval"] == "reused"


def test_own_bookkeeping_failure_is_one_warning(config, capsys) -> None:
    run = create_run(config)
    tracking = RunTracking(Trackers([Recorder()]), run, config)
    broken = StageResult("eval", run.path / "eval", "k", False, {"values": "not a mapping"})
    tracking.after_stage(broken)
    tracking.after_stage(broken)
    warning = capsys.readouterr().err
    assert warning.count("warning: tracking failed") == 1 and "AttributeError" in warning


def test_pipeline_block_ends_the_trackers_run_with_the_outcome(config) -> None:
    backend = Recorder()
    run = create_run(config)
    tracking = RunTracking(Trackers([backend]), run, config)
    with pytest.raises(ValueError), Pipeline(config, run, "cfg.yaml", tracking=tracking):
        raise ValueError("disk full")
    assert backend.called("finish") == [("FAILED",)]
    assert backend.called("set_tags")[-1][0] == {"tuneforge.error": "ValueError: disk full"}
    assert outcome(None) == ("FINISHED", None)
    assert outcome(TrainingStopped("stopped by SIGTERM"))[0] == "KILLED"


def test_gate_status() -> None:
    passed = {"gates": {"results": [{"passed": True}]}}
    assert gate_status({}) == "none" and gate_status(passed) == "passed"


def test_tensorboard_writes_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuneforge.track.tensorboard_backend import TensorBoardTracker

    tracker = TensorBoardTracker()
    tracker.start(RunInfo("u", "u", "r", tmp_path, tmp_path), {"train.lr": "0.1"})
    tracker.log_metrics("train", 1, {"loss": 2.0})
    tracker.log_metrics("train", 2, {"loss": 1.5})
    tracker.log_eval({"tuned": {"exact_match": 0.25}})
    tracker.finish("FINISHED")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
    assert events.Scalars("eval/tuned/exact_match")[0].value == 0.25


def test_wandb_offline_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from tuneforge.track.wandb_backend import WandbTracker

    monkeypatch.setenv("WANDB_API_KEY", "")  # offline mode must not ask for a login
    tracker = WandbTracker(project="unit", mode="offline")
    state = tracker.start(RunInfo("u", "u", "r", tmp_path, tmp_path), {"train.lr": "0.1"})
    tracker.log_metrics("train", 1, {"loss": 2.0})
    tracker.log_eval({"tuned": {"exact_match": 0.25}})
    assert tracker.run.summary["eval/tuned/exact_match"] == 0.25
    assert tracker.run.offline
    tracker.finish("FINISHED")
    [folder] = (tmp_path / "wandb").glob(f"offline-run-*-{state['id']}")
    assert list(folder.glob("*.wandb"))  # the offline log that `wandb sync` uploads
