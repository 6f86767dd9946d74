"""What every tracker backend implements, and the helpers that shape what they receive.

The run directory is the source of truth (``metrics.jsonl``, reports, exports);
a tracker is a mirror of it in a tool people already browse. Names use ``/``
between groups (``train/loss``, ``eval/tuned/exact_match``) because MLflow,
TensorBoard and W&B all group charts by the part before the first slash.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")  # what MLflow accepts on every platform


@dataclass
class RunInfo:
    """The run a tracker mirrors.

    Attributes:
        name: Config name (the default experiment / project).
        experiment: Experiment / project to report to.
        run_name: The run folder's name (its timestamp).
        run_dir: The run directory.
        runs_root: Root of all run directories (where the default MLflow store lives).
        tags: Config hash, git commit, run directory and tuneforge version.
        resume: What this backend saved when it last reported this run (e.g. its run id).
    """

    name: str
    experiment: str
    run_name: str
    run_dir: Path
    runs_root: Path
    tags: dict[str, str] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)


class Tracker(Protocol):
    """One experiment tracker backend; ``Trackers`` (the fan-out) guards every call."""

    name: str

    def start(self, info: RunInfo, params: dict[str, Any]) -> dict[str, Any]:
        """Create (or resume, from ``info.resume``) the tracker's run; return what resumes it."""

    def log_metrics(
        self, stage: str, step: int, values: dict[str, float], timestamp: float | None = None
    ) -> None:
        """One record of a stage's numbers at a step (``timestamp``: when it was measured)."""

    def flush(self) -> None:
        """Write what ``log_metrics`` buffered."""

    def log_eval(self, values: dict[str, dict[str, float]]) -> None:
        """Every eval number, per model (``tuned``, ``base``)."""

    def log_artifact(self, path: Path, folder: str) -> None:
        """Copy (or record) a file from the run directory under ``folder``."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags on the tracker's run (gate status, reused stages)."""

    def register_model(self, path: Path, name: str, tags: dict[str, str]) -> str | None:
        """Register an exported model folder with lineage tags; return its version, if any."""

    def finish(self, status: str) -> None:
        """Close the run: ``FINISHED``, ``FAILED`` or ``KILLED``."""


def metric_name(*parts: str) -> str:
    """A metric name every backend accepts: parts joined by ``/``, odd characters as ``_``."""
    cleaned = (_BAD_NAME_CHARS.sub("_", str(part)).replace("..", "__") for part in parts)
    name = posixpath.normpath("/".join(p.strip("/") for p in cleaned if p.strip("/")))
    return name.strip("/") if name not in ("", ".") else "_"


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a record (bools, strings and NaN are left out)."""
    found = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            found[key] = float(value)
    return found


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config sections as ``section.key`` -> text (lists and None as JSON)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value if isinstance(value, str) else json.dumps(value)
    return flat
