"""MLflow: an embedded sqlite store under the runs root by default; no server needed.

One tuneforge run directory is one MLflow run: each command that works in the
directory resumes it (its id is kept in the manifest). Artifacts are small
copies of the reports; the registered model version points at the exported
folder in the run directory unless ``track.log_model_weights`` copies it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from tuneforge.track.base import RunInfo, metric_name

_MAX_PARAM = 6000  # MLflow's limit on a parameter value
_BATCH = 1000  # MLflow's limit on metrics per log_batch
ARTIFACTS_FOLDER = ".mlflow-artifacts"  # config names start alphanumeric: no clash with a run


def default_uri(runs_root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the sqlite file beside the runs."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_root / 'mlflow.db'}"


class MLflowTracker:
    """Reports a run to an MLflow tracking store and registers exported models."""

    name = "mlflow"

    def __init__(self, uri: str | None = None, log_model_weights: bool = False) -> None:
        self.uri = uri
        self.log_model_weights = log_model_weights
        self.run_id: str | None = None
        self.client: Any = None
        self._artifact_uri = ""
        self._pending: list[Any] = []

    def start(self, info: RunInfo, params: dict[str, Any]) -> dict[str, Any]:
        from mlflow import MlflowClient

        for noisy in ("mlflow", "alembic"):  # table creation and migration chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = self.uri or default_uri(info.runs_root)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        previous = info.resume.get("run_id")
        if previous and info.resume.get("uri") == self.uri and self._exists(previous):
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
        else:
            experiment = self._experiment(info)
            run = self.client.create_run(experiment, run_name=info.run_name, tags=info.tags)
            self.run_id = run.info.run_id
            self._log_params(params)
        self._artifact_uri = self.client.get_run(self.run_id).info.artifact_uri
        return {"run_id": self.run_id, "uri": self.uri}

    def log_metrics(
        self, stage: str, step: int, values: dict[str, float], timestamp: float | None = None
    ) -> None:
        from mlflow.entities import Metric

        millis = int((timestamp or time.time()) * 1000)
        self._pending += [Metric(metric_name(stage, k), v, millis, step) for k, v in values.items()]
        if len(self._pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """One sqlite transaction per batch instead of one per step."""
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_eval(self, values: dict[str, dict[str, float]]) -> None:
        from mlflow.entities import Metric

        millis = int(time.time() * 1000)
        metrics = [
            Metric(metric_name("eval", model, name), value, millis, 0)
            for model, named in values.items()
            for name, value in named.items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def log_artifact(self, path: Path, folder: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), f"{folder}/{path.name}")
        else:
            self.client.log_artifact(self.run_id, str(path), folder or None)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def register_model(self, path: Path, name: str, tags: dict[str, str]) -> str:
        """A new version of registered model ``name`` whose source is the exported folder."""
        from mlflow.exceptions import MlflowException

        source = path.resolve().as_uri()
        if self.log_model_weights:
            self.client.log_artifacts(self.run_id, str(path), f"export/{path.name}")
            source = f"{self._artifact_uri}/export/{path.name}"
        try:
            self.client.create_registered_model(name, tags={"tuneforge": "true"})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(name, source, run_id=self.run_id, tags=tags)
        return str(version.version)

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            try:
                self.flush()
            finally:  # a run whose last metrics failed is still closed, not left RUNNING
                self.client.set_terminated(self.run_id, status=status)

    def _experiment(self, info: RunInfo) -> str:
        found = self.client.get_experiment_by_name(info.experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.partition(":")[0] in ("sqlite", "file") or ":" not in self.uri:
            # a local store keeps its artifacts beside the run directories, not in the CWD
            location = (info.runs_root / ARTIFACTS_FOLDER).resolve().as_uri()
        return self.client.create_experiment(info.experiment, artifact_location=location)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_name(k), v[:_MAX_PARAM]) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=items, synchronous=True)
