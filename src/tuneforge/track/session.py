"""Mirror one run directory into the trackers, stage by stage.

Per-step training numbers are read back from the run's ``metrics.jsonl`` after
each stage (and when the command ends, even on a failure), so the trackers see
the same lines whether training ran in this process or in torchrun workers, and
a slow or broken tracker never sits inside the training loop. What was sent is
remembered in the manifest (``tracking``): the byte offset of ``metrics.jsonl``
and the key of each stage already reported, so a command that reuses a stage
does not send it twice, and a later command resumes the same tracker run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.config import Config, config_hash
from tuneforge.config.load import EXCLUDED_FROM_HASH
from tuneforge.console import say
from tuneforge.runs import RunDir, StageResult
from tuneforge.track.backends import make_backends
from tuneforge.track.base import RunInfo, flatten, numbers
from tuneforge.track.fanout import Trackers, warn

# files of each stage that trackers get a copy of (small: reports and plots, not data)
ARTIFACTS = {
    "data": ("report.html", "report.md", "*.png"),
    "eval": ("report.html", "report.md", "report.json", "*.png"),
    "export": ("README.md", "lineage.json"),
}
_NOT_VALUES = {"time", "stage", "step"}


class RunTracking:
    """The trackers of one run directory, fed from what the stages leave in it."""

    def __init__(self, trackers: Trackers, run: RunDir, config: Config) -> None:
        self.trackers = trackers
        self.run = run
        self.config = config
        self.state: dict[str, Any] = run.read_manifest().get("tracking", {})
        self.state.setdefault("logged", {})
        self.off = False

    @classmethod
    def open(cls, config: Config, run: RunDir) -> RunTracking | None:
        """Start (or resume) the configured trackers for ``run``; None when tracking is off."""
        backends = make_backends(config.track)
        if not backends:
            return None
        tracking = cls(Trackers(backends), run, config)
        manifest = run.read_manifest()
        git = manifest.get("git") or {}
        tags = {
            "tuneforge.config_hash": config_hash(config),
            "tuneforge.run_dir": str(run.path),
            "tuneforge.version": __version__,
            "mlflow.source.git.commit": git.get("commit", ""),
            "tuneforge.git_dirty": str(git.get("dirty", "")),
        }
        info = RunInfo(
            name=config.name,
            experiment=config.track.experiment or config.name,
            run_name=run.path.name,
            run_dir=run.path,
            runs_root=run.root,
            tags={k: v for k, v in tags.items() if v},
            resume=tracking.state.get("backends", {}),
        )
        params = flatten(config.model_dump(mode="json", exclude=EXCLUDED_FROM_HASH))
        tracking.state["backends"] = {
            **tracking.state.get("backends", {}),
            **tracking.trackers.start(info, params),
        }
        tracking._save()
        if tracking.trackers.names:
            say(f"tracking: {', '.join(tracking.trackers.names)}")
        return tracking

    def after_stage(self, result: StageResult, lineage: dict[str, Any] | None = None) -> None:
        """Send a stage's numbers, reports and (for export) the registered model."""
        self._guarded(self._after_stage, result, lineage)

    def close(self, status: str, error: str | None = None) -> None:
        """Send what is left, a copy of the config and manifest, and end the trackers' runs."""
        self._guarded(self._close, status, error)

    def _guarded(self, method: Any, *args: Any) -> None:
        """Our own bookkeeping failing must not fail a stage either: report it, stop tracking."""
        if self.off:
            return
        try:
            method(*args)
        except Exception as error:
            self.off = True
            first = (str(error).strip().splitlines() or [""])[0][:300]
            warn(
                f"tracking failed ({type(error).__name__}: {first}); it is off for the rest "
                "of this run, which continues (the run directory has everything)"
            )

    def _after_stage(self, result: StageResult, lineage: dict[str, Any] | None) -> None:
        self.forward_metrics()
        if result.skipped and self.state["logged"].get(result.name) == result.key:
            return  # already reported to this run by an earlier command
        tags = {f"tuneforge.stage.{result.name}": "reused" if result.skipped else "ran"}
        if result.reused_from is not None:
            tags[f"tuneforge.stage.{result.name}.reused_from"] = str(result.reused_from)
        summary = result.summary
        if result.name == "train":
            steps = int(summary.get("steps") or 0)
            self.trackers.log_metrics("train_summary", steps, numbers(summary))
        if result.name == "eval":
            self.trackers.log_eval({m: numbers(v) for m, v in summary.get("values", {}).items()})
            tags["tuneforge.gates"] = gate_status(summary)
        for path in artifact_paths(self.run.path, result.name):
            self.trackers.log_artifact(path, result.name)
        if result.name == "export" and not result.skipped and self.config.track.register_model:
            tags.update(self._register(result, lineage or {}))
        self.trackers.set_tags(tags)
        self.trackers.flush()
        self.state["logged"][result.name] = result.key
        self._save()

    def forward_metrics(self) -> None:
        """Send the complete ``metrics.jsonl`` lines written since the last call."""
        offset = int(self.state.get("metrics_offset", 0))
        path = self.run.metrics_path
        if not path.is_file() or path.stat().st_size <= offset:
            return
        with open(path, "rb") as handle:
            handle.seek(offset)
            blob = handle.read()
        complete = blob[: blob.rfind(b"\n") + 1]  # a line being written now waits for next time
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            step = line.get("step")
            if line.get("stage") == "eval" or not isinstance(step, int):
                continue  # eval numbers go once, from the report, through log_eval
            values = numbers({k: v for k, v in line.items() if k not in _NOT_VALUES})
            if values:
                self.trackers.log_metrics(line["stage"], step, values, line.get("time"))
        self.trackers.flush()
        self.state["metrics_offset"] = offset + len(complete)
        self._save()

    def _close(self, status: str, error: str | None) -> None:
        self.forward_metrics()
        if error:
            self.trackers.set_tags({"tuneforge.error": error[:1000]})
        for name in ("config.yaml", "manifest.json"):
            self.trackers.log_artifact(self.run.path / name, "")
        self.trackers.finish(status)
        if self.trackers.failed:
            self.state["failed"] = {**self.state.get("failed", {}), **self.trackers.failed}
            self._save()

    def _register(self, result: StageResult, lineage: dict[str, Any]) -> dict[str, str]:
        folder = next(
            (result.path / sub for sub in ("merged", "adapter") if (result.path / sub).is_dir()),
            None,
        )
        if folder is None:
            return {}
        eval_summary = lineage.get("eval") or {}
        tags = {
            "tuneforge.kind": folder.name,
            "tuneforge.base_model": str(lineage.get("base_model", "")),
            "tuneforge.data_sha256": str((lineage.get("data") or {}).get("sha256", "")),
            "tuneforge.config_hash": str(lineage.get("config_hash", "")),
            "tuneforge.gates": gate_status(eval_summary, result.summary.get("gates_overridden")),
            "tuneforge.run_dir": str(self.run.path),
            "tuneforge.export_key": result.key,
        }
        versions = self.trackers.register_model(folder, self.config.name, tags)
        self.state["registered"] = {**self.state.get("registered", {}), **versions}
        return {
            f"tuneforge.registered.{backend}": f"{self.config.name}/{version}"
            for backend, version in versions.items()
        }

    def _save(self) -> None:
        self.run.update_manifest(tracking=self.state)


def gate_status(eval_summary: dict[str, Any], overridden: list[str] | None = None) -> str:
    """``passed``, ``none`` (no gates), ``failed: ...`` or ``overridden: ...`` (export --force)."""
    from tuneforge.eval.gates import failed_gates

    results = (eval_summary.get("gates") or {}).get("results", [])
    if not results:
        return "none"
    failed = failed_gates(eval_summary)
    if not failed:
        return "passed"
    return f"{'overridden' if overridden else 'failed'}: {'; '.join(failed)}"


def artifact_paths(run_dir: Path, stage: str) -> list[Path]:
    """The files of ``stage`` that trackers get a copy of."""
    folder = run_dir / stage
    return [p for pattern in ARTIFACTS.get(stage, ()) for p in sorted(folder.glob(pattern))]


def outcome(error: BaseException | None) -> tuple[str, str | None]:
    """The tracker status of a command that ended with ``error`` (None: success)."""
    from tuneforge.errors import TrainingStopped

    if error is None:
        return "FINISHED", None
    first = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, TrainingStopped | KeyboardInterrupt):
        return "KILLED", first or type(error).__name__
    return "FAILED", f"{type(error).__name__}: {first}"
