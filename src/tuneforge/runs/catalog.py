"""Finding and reading finished runs: ``<runs_dir>/<name>/<stamp>/`` with a manifest.

A RUN on the command line is a run directory, ``NAME/STAMP`` under the runs
directory (a unique prefix of the stamp will do), or ``NAME`` for the newest run
of that name. Folders beside the runs (the MLflow store, its artifacts, search
studies) have no manifest and are never taken for runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError

STAGE_ORDER = ("base", "data", "train", "eval", "export")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class RunInfo:
    """A run directory with its manifest already read."""

    path: Path
    root: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def stamp(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """``name/stamp``, how runs are named on the command line and in tables."""
        return f"{self.name}/{self.stamp}"

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("stages") or {}

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved config the run saved (empty when config.yaml is missing)."""
        file = self.path / "config.yaml"
        if not file.is_file():
            return {}
        return yaml.safe_load(file.read_text(encoding="utf-8")) or {}

    def summary(self, stage: str) -> dict[str, Any]:
        """A stage's summary from the manifest (empty when the stage did not run)."""
        return self.stages.get(stage, {}).get("summary") or {}

    def train_records(self) -> list[dict[str, Any]]:
        """The training lines of metrics.jsonl, from the run that really trained.

        A train stage reused from an earlier run logged its steps there, so they are
        read from that run's metrics.jsonl.
        """
        source = self.path
        reused = self.stages.get("train", {}).get("reused_from")
        if reused and Path(reused).parent.is_dir():
            source = Path(reused).parent
        return [r for r in read_metrics(source / "metrics.jsonl") if r.get("stage") == "train"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of a metrics.jsonl file; a torn last line (a killed run) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def find_runs(root: Path, name: str | None = None) -> list[RunInfo]:
    """Every run under ``root`` (or only those called ``name``), newest first.

    Raises:
        ConfigError: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise ConfigError(f"runs directory {str(root)!r} not found; pass --runs-dir")
    root = root.resolve()
    parents = [root / name] if name else sorted(root.iterdir())
    runs = []
    for parent in parents:
        if parent.name.startswith(".") or not parent.is_dir():
            continue
        for path in parent.iterdir():
            run = read_run(path, root)
            if run is not None:
                runs.append(run)
    return sorted(runs, key=_newest_first_key, reverse=True)


def read_run(path: Path, root: Path) -> RunInfo | None:
    """The run at ``path``, or None when it is not a run directory."""
    file = path / "manifest.json"
    if path.name.startswith(".") or not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or "stages" not in manifest:
        return None
    return RunInfo(path=path, root=root, manifest=manifest)


def resolve_run(spec: str, root: Path) -> RunInfo:
    """The run a RUN argument names: a run directory, ``NAME/STAMP`` or ``NAME`` (newest).

    Raises:
        ConfigError: no such run, or a stamp prefix that fits several; the message
            lists what exists.
    """
    path = Path(spec).expanduser()
    if (path / "manifest.json").is_file():
        path = path.resolve()
        inside = root.resolve() in path.parents
        run = read_run(path, root.resolve() if inside else path.parent.parent)
        if run is None:
            raise ConfigError(f"run {spec!r}: {path / 'manifest.json'} is not a run manifest")
        return run
    name, _, stamp = spec.strip("/").partition("/")
    runs = find_runs(root, name) if _NAME.match(name) and (root / name).is_dir() else []
    if not runs:
        raise ConfigError(
            f"run {spec!r}: no run named {name!r} under {root}; runs there: {run_names(root)}"
        )
    if not stamp:
        return runs[0]
    matches = [r for r in runs if r.stamp == stamp] or [
        r for r in runs if r.stamp.startswith(stamp)
    ]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(r.stamp for r in (matches or runs)[:8])
    problem = f"fits {len(matches)} runs" if matches else "not found"
    raise ConfigError(f"run {spec!r}: {problem}; runs of {name!r} (newest first): {shown}")


def run_names(root: Path) -> str:
    """``name (N runs), ...`` for an error message; ``none`` when there are no runs."""
    counts: dict[str, int] = {}
    for run in find_runs(root):
        counts[run.name] = counts.get(run.name, 0) + 1
    if not counts:
        return "none"
    return ", ".join(f"{n} ({c} run{'s' if c > 1 else ''})" for n, c in sorted(counts.items()))


def stage_states(run: RunInfo) -> dict[str, str]:
    """Each recorded stage, in pipeline order: ``done`` or ``reused`` (linked from another run)."""
    states = {}
    for stage in sorted(run.stages, key=_stage_position):
        record = run.stages[stage]
        states[stage] = "reused" if record.get("reused_from") else record.get("status", "?")
    return states


def gate_state(run: RunInfo) -> str:
    """``passed``, ``FAILED n``, ``overridden n`` (exported with --force), ``none`` or ``-``."""
    if "eval" not in run.stages:
        return "-"
    results = (run.summary("eval").get("gates") or {}).get("results", [])
    if not results:
        return "none"
    failed = sum(1 for r in results if not r.get("passed"))
    if not failed:
        return "passed"
    if run.summary("export").get("gates_overridden"):
        return f"overridden {failed}"
    return f"FAILED {failed}"


def key_metrics(run: RunInfo, limit: int = 3) -> dict[str, float]:
    """A few numbers that say how a run went.

    The validation loss after training, then up to ``limit`` of the tuned model's
    eval values: the metrics the gates check first, then the task metrics in the
    report's order.
    """
    found: dict[str, float] = {}
    val_loss = run.summary("train").get("val_loss_after")
    if val_loss is not None:
        found["val_loss"] = val_loss
    report = run.summary("eval")
    tuned = (report.get("values") or {}).get("tuned") or {}
    gated = [r.get("metric") for r in (report.get("gates") or {}).get("results", [])]
    names = [*gated, *report.get("metric_names", []), *tuned]
    for name in [n for n in dict.fromkeys(names) if n in tuned][:limit]:
        found[name] = tuned[name]
    return found


def eval_values(run: RunInfo) -> dict[str, dict[str, float]]:
    """The eval's flattened values per model (``tuned``, ``base``); empty without an eval."""
    return run.summary("eval").get("values") or {}


def run_row(run: RunInfo) -> dict[str, Any]:
    """What `runs list` and the web UI show of a run (and `runs list --json` prints)."""
    return {
        "run": run.label,
        "path": str(run.path),
        "created": run.manifest.get("created"),
        "method": describe_method(run.config),
        "stages": stage_states(run),
        "metrics": key_metrics(run),
        "gates": gate_state(run),
    }


def describe_method(config: dict[str, Any]) -> str:
    """``lora sft``: the method kind and the objective from a saved config."""
    kind = (config.get("method") or {}).get("kind", "?")
    return f"{kind} {config.get('objective', '?')}"


def _stage_position(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def _newest_first_key(run: RunInfo) -> tuple[str, int, str]:
    # stamps are second-resolution; a run started in the same second gets "-2", "-3", ...
    return (str(run.manifest.get("created", "")), len(run.stamp), run.stamp)
