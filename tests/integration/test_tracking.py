"""Tracking through the real CLI (in-process) with the real MLflow library and a temporary store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.config.track_schema import BACKENDS_ENV
from tuneforge.runs.hashing import file_sha256
from tuneforge.track.base import numbers

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data" / "support_tickets.jsonl"
pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow


def write_config(folder: Path, model: Path) -> Path:
    config = folder / "tracked.yaml"
    config.write_text(
        f"name: tracked\nruns_dir: {folder / 'runs'}\n"
        f"model:\n  name_or_path: {model}\n"
        f"data:\n  path: {DATA}\n  max_samples: 60\n"
        "train:\n  max_steps: 3\n  batch_size: 4\n  lr: 1.0e-3\n"
        "eval:\n  max_samples: 3\n  max_new_tokens: 4\n  bootstrap_samples: 100\n"
        "  compare_base: false\n"
        "  bias: {enabled: false}\n  safety: {enabled: false}\n  retention: {enabled: false}\n"
        "  gates: ['loss <= 100']\n"
    )
    return config


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """One `tuneforge run` reporting to MLflow, and to a second backend that breaks."""
    from tuneforge.track import session

    folder = tmp_path_factory.mktemp("tracked")
    config = write_config(folder, tiny_model_dir)
    real = session.make_backends
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv(BACKENDS_ENV, "mlflow")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setattr(session, "make_backends", lambda track: [*real(track), _Broken()])
        capture = _Capture(patch)
        code = main(["run", config.name])
    [run] = (folder / "runs" / "tracked").iterdir()
    return {
        "code": code,
        "stderr": capture.text(),
        "folder": folder,
        "run": run,
        "model": tiny_model_dir,
    }


def test_mlflow_holds_the_run_metrics_artifacts_and_registered_model(tracked) -> None:
    from mlflow import MlflowClient

    assert tracked["code"] == 0, tracked["stderr"][-3000:]
    uri = f"sqlite:///{tracked['folder'] / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    [run] = client.search_runs([experiment.experiment_id])
    manifest = json.loads((tracked["run"] / "manifest.json").read_text())
    assert manifest["tracking"]["backends"]["mlflow"]["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == tracked["run"].name
    assert run.data.params["train.max_steps"] == "3" and run.data.params["name"] == "tracked"
    assert run.data.params["eval.gates"] == '["loss <= 100"]'
    assert not any(key.startswith("track.") for key in run.data.params)
    tags = run.data.tags
    assert tags["tuneforge.config_hash"] == manifest["config_hash"]
    assert tags["tuneforge.run_dir"] == str(tracked["run"])
    assert tags["tuneforge.gates"] == "passed"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    lines = [json.loads(line) for line in (tracked["run"] / "metrics.jsonl").open()]
    steps = [(line["step"], line["loss"]) for line in lines if "loss" in line and "step" in line]
    assert [(m.step, m.value) for m in history] == steps and len(steps) == 3
    report = json.loads((tracked["run"] / "eval" / "report.json").read_text())
    for name, expected in numbers(report["values"]["tuned"]).items():
        assert run.data.metrics[f"eval/tuned/{name}"] == pytest.approx(expected)
    files = {
        f.path
        for folder in ("data", "eval", "export")
        for f in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"data/report.html", "data/report.md", "eval/report.html", "eval/report.json"} <= files
    assert "export/README.md" in files and not any("safetensors" in f for f in files)
    [version] = client.search_model_versions("name='tracked'")
    assert version.run_id == run.info.run_id
    assert version.source == (tracked["run"] / "export" / "merged").resolve().as_uri()
    lineage = version.tags
    assert lineage["tuneforge.data_sha256"] == file_sha256(DATA)
    assert lineage["tuneforge.config_hash"] == manifest["config_hash"]
    assert lineage["tuneforge.base_model"] == str(tracked["model"])
    assert lineage["tuneforge.gates"] == "passed" and lineage["tuneforge.kind"] == "merged"
    assert tags["tuneforge.registered.mlflow"] == f"tracked/{version.version}"


def test_a_failing_backend_is_one_warning_and_the_run_completes(tracked) -> None:
    assert tracked["code"] == 0
    warnings = [line for line in tracked["stderr"].splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "tracking backend broken failed in log_metrics" in warnings[0]
    assert "OSError: disk full" in warnings[0]
    manifest = json.loads((tracked["run"] / "manifest.json").read_text())
    assert manifest["tracking"]["failed"] == {"broken": "OSError: disk full"}
    assert manifest["stages"]["eval"]["status"] == "done"  # the stages after it ran
    assert (tracked["run"] / "export" / "merged" / "model.safetensors").is_file()


def test_training_survives_mlflow_failing_mid_run(
    tracked, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from tuneforge.track.mlflow_backend import MLflowTracker

    monkeypatch.chdir(tracked["folder"])
    monkeypatch.setenv(BACKENDS_ENV, "mlflow")
    monkeypatch.setattr(MLflowTracker, "flush", _disk_full)
    code = main(["train", "tracked.yaml", "--set", "train.max_steps=1"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "stage data: skipped" in err  # tracking settings and a new run reuse the data
    assert err.count("warning:") == 1 and "tracking backend mlflow failed in flush" in err
    [run_dir] = [
        p for p in (tracked["folder"] / "runs" / "tracked").iterdir() if p != tracked["run"]
    ]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done"
    assert manifest["stages"]["train"]["summary"]["steps"] == 1
    uri = f"sqlite:///{tracked['folder'] / 'runs' / 'mlflow.db'}"
    failed = MlflowClient(uri).get_run(manifest["tracking"]["backends"]["mlflow"]["run_id"])
    assert failed.info.status == "FAILED"  # closed, not left running


def _disk_full(*_: Any, **__: Any) -> None:
    raise OSError("disk full")


class _Broken:
    """A backend whose store fills up when the training metrics arrive."""

    name = "broken"
    log_metrics = staticmethod(_disk_full)

    def __getattr__(self, method: str) -> Any:
        return lambda *args: {} if method == "start" else None


class _Capture:
    """Collect what the console writes to stderr while the fixture's CLI call runs."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        import io
        import sys

        self.buffer = io.StringIO()
        patch.setattr(sys, "stderr", self.buffer)

    def text(self) -> str:
        return self.buffer.getvalue()
