"""Launching a run from the web UI: validate the edited config, run it, watch it, stop it.

The edited YAML is validated as ``tuneforge run`` would validate it, with its
relative paths resolved against the folder of the file it was loaded from; the
resolved config (absolute paths, the UI's runs directory) is then written to
``<runs_dir>/.ui/launches/`` and run by ``python -m tuneforge run`` in its own
process, whose output goes to a log file beside it. Stopping sends SIGTERM: the
training loop saves a checkpoint and the run can be resumed (``tuneforge train
--resume``). One launch runs at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError
from tuneforge.runs.catalog import read_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_TAIL_LINES = 40


@dataclass
class Launch:
    """One run started from the page."""

    config_file: Path
    log_file: Path
    name: str
    started: float
    process: subprocess.Popen
    stopping: bool = False
    run_dirs_before: set[Path] = field(default_factory=set)


def validate(text: str, origin: Path, runs_root: Path) -> Any:
    """The validated config of an edited YAML text, or ConfigError naming the line at fault.

    Args:
        text: The YAML as edited in the page.
        origin: The file it was loaded from; relative paths resolve against its folder.
        runs_root: The UI's runs directory, which the launched run writes into.
    """
    from tuneforge.config import load_config

    scratch = runs_root / ".ui" / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    draft = scratch / f"draft-{os.getpid()}-{threading.get_ident()}.yaml"
    draft.write_text(text, encoding="utf-8")
    try:
        return load_config(draft, [f"runs_dir={runs_root}"], base_dir=origin.parent)
    except ConfigError as err:
        raise ConfigError(str(err).replace(str(draft), origin.name)) from None
    finally:
        draft.unlink(missing_ok=True)


class Launcher:
    """Starts, watches and stops the runs launched from the page (one at a time)."""

    def __init__(self, runs_root: Path) -> None:
        self.runs_root = runs_root.resolve()
        self.folder = self.runs_root / ".ui" / "launches"
        self.current: Launch | None = None
        self._lock = threading.Lock()

    def start(self, text: str, origin: Path) -> Launch:
        """Validate ``text`` and start ``tuneforge run`` on it.

        Raises:
            ConfigError: the config is not valid, or a launch is still running.
        """
        from tuneforge.config.load import dump_config

        config = validate(text, origin, self.runs_root)
        with self._lock:
            if self.current is not None and self.current.process.poll() is None:
                raise ConfigError(
                    f"run {self.current.name!r} is still running; stop it or wait for it"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            config_file = self.folder / f"{stamp}-{config.name}.yaml"
            config_file.write_text(dump_config(config), encoding="utf-8")
            log_file = config_file.with_suffix(".log")
            before = set((self.runs_root / config.name).glob("*"))
            with open(log_file, "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tuneforge", "run", str(config_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"},
                )
            self.current = Launch(
                config_file, log_file, config.name, time.time(), process, run_dirs_before=before
            )
            return self.current

    def stop(self) -> str:
        """Ask the running launch to stop (SIGTERM: it checkpoints and exits)."""
        launch = self.current
        if launch is None or launch.process.poll() is not None:
            return "nothing is running"
        launch.stopping = True
        launch.process.send_signal(signal.SIGTERM)
        return f"asked {launch.name!r} to stop; it saves a checkpoint first"

    def status(self) -> dict[str, Any]:
        """State, progress and the log's tail of the current launch."""
        launch = self.current
        if launch is None:
            return {"state": "idle", "progress": 0.0, "summary": "no run launched", "log": ""}
        code = launch.process.poll()
        run_dir = self._run_dir(launch)
        step, total = _progress(run_dir)
        state = _state(code, launch.stopping)
        stages = ", ".join(sorted(_stages(run_dir))) or "-"
        summary = (
            f"{state}: {launch.name} ({time.time() - launch.started:.0f}s), stages done: {stages}"
        )
        if total:
            summary += f", training step {step}/{total}"
        if run_dir is not None:
            summary += f", run {run_dir.parent.name}/{run_dir.name}"
        return {
            "state": state,
            "progress": step / total if total else (1.0 if state == "finished" else 0.0),
            "summary": summary,
            "log": log_tail(launch.log_file),
            "run": f"{run_dir.parent.name}/{run_dir.name}" if run_dir else None,
            "exit_code": code,
        }

    def _run_dir(self, launch: Launch) -> Path | None:
        """The run directory the launch created (the newest new one under its name)."""
        new = [
            p for p in (self.runs_root / launch.name).glob("*") if p not in launch.run_dirs_before
        ]
        new = [p for p in new if (p / "config.yaml").is_file()]
        return max(new, key=lambda p: p.stat().st_mtime) if new else None


def _state(code: int | None, stopping: bool) -> str:
    if code is None:
        return "stopping" if stopping else "running"
    if code == 0:
        return "stopped" if stopping else "finished"
    return f"failed (exit {code})"


def _progress(run_dir: Path | None) -> tuple[int, int]:
    """``(step, total_steps)`` of the newest training line in the run's metrics.jsonl (read
    from its end: the page asks every second, and the file grows with every step)."""
    if run_dir is None:
        return 0, 0
    for line in reversed(tail_text(run_dir / "metrics.jsonl").split("\n")):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # empty, or cut at the start of the tail
            continue
        if not isinstance(record, dict) or record.get("stage") != "train":
            continue
        if isinstance(record.get("total_steps"), int):
            return int(record.get("step", 0)), record["total_steps"]
    return 0, 0


def _stages(run_dir: Path | None) -> list[str]:
    if run_dir is None:
        return []
    run = read_run(run_dir, run_dir.parent.parent)
    return list(run.stages) if run is not None else []


def tail_text(path: Path, max_bytes: int = 64_000) -> str:
    """The last ``max_bytes`` of a file as text ("" when it does not exist yet)."""
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, without terminal colour codes or carriage-return redraws."""
    text = tail_text(path)
    cleaned = [
        ANSI.sub("", line).rstrip("\r").split("\r")[-1] for line in text.rstrip("\n").split("\n")
    ]
    return "\n".join(cleaned[-lines:])
