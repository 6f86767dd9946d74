"""Send every tracking call to each backend; a backend that fails is reported once and dropped.

A tracker is a convenience, never a reason to lose a training run: the first
exception a backend raises is printed as one warning line, that backend is off
for the rest of the process, and the others (and the run directory) carry on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape

from tuneforge.console import err
from tuneforge.track.base import RunInfo, Tracker


def warn(message: str) -> None:
    """One warning line on stderr."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


class Trackers:
    """A fan-out over backends with the same methods as one :class:`Tracker`."""

    def __init__(self, backends: list[Tracker], report: Callable[[str], None] = warn) -> None:
        self.backends = list(backends)
        self.failed: dict[str, str] = {}
        self._dropped: list[Tracker] = []
        self._report = report

    @property
    def names(self) -> list[str]:
        """The backends still reporting."""
        return [backend.name for backend in self.backends]

    def start(self, info: RunInfo, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Start each backend; returns, per backend, what resumes its run next time."""
        states: dict[str, dict[str, Any]] = {}
        for backend in list(self.backends):
            resumed = RunInfo(**{**info.__dict__, "resume": info.resume.get(backend.name, {})})
            state = self._call(backend, "start", resumed, params)
            if backend in self.backends:
                states[backend.name] = state or {}
        return states

    def log_metrics(
        self, stage: str, step: int, values: dict[str, float], timestamp: float | None = None
    ) -> None:
        self._each("log_metrics", stage, step, values, timestamp)

    def flush(self) -> None:
        self._each("flush")

    def log_eval(self, values: dict[str, dict[str, float]]) -> None:
        self._each("log_eval", values)

    def log_artifact(self, path: Path, folder: str) -> None:
        self._each("log_artifact", path, folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._each("set_tags", tags)

    def register_model(self, path: Path, name: str, tags: dict[str, str]) -> dict[str, str]:
        """Register with each backend that has a registry; returns the versions by backend."""
        versions = {}
        for backend in list(self.backends):
            version = self._call(backend, "register_model", path, name, tags)
            if version is not None:
                versions[backend.name] = str(version)
        return versions

    def finish(self, status: str) -> None:
        """Finish each backend; a dropped one gets a silent try at ``FAILED``, not left running."""
        self._each("finish", status)
        for backend in self._dropped:
            # already reported once; a second failure would say nothing new
            with contextlib.suppress(Exception):
                backend.finish("FAILED")
        self._dropped.clear()

    def _each(self, method: str, *args: Any) -> None:
        for backend in list(self.backends):
            self._call(backend, method, *args)

    def _call(self, backend: Tracker, method: str, *args: Any) -> Any:
        try:
            return getattr(backend, method)(*args)
        except Exception as error:  # any backend failure: report it once, keep training
            self.backends.remove(backend)
            self._dropped.append(backend)
            first = (str(error).strip().splitlines() or [""])[0][:300]
            self.failed[backend.name] = f"{type(error).__name__}: {first}"
            self._report(
                f"tracking backend {backend.name} failed in {method} "
                f"({type(error).__name__}: {first}); it is off for the rest of this run, "
                "which continues (the run directory has everything)"
            )
            return None
