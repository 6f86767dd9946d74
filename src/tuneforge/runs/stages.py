"""Stage execution: atomic outputs, and skipping a stage whose inputs are unchanged.

A stage writes into a temporary folder beside its final place and is renamed
into place only when it finished, with a ``_stage.json`` marker inside. A later
stage whose key (hash of its config section and its inputs) matches a finished
stage anywhere under the runs root is skipped, and the earlier output is linked
into the new run, so a half-written folder can never pass for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.runs.hashing import object_sha256
from tuneforge.runs.rundir import RunDir

MARKER = "_stage.json"


@dataclass
class StageResult:
    """What a stage left behind."""

    name: str
    path: Path
    key: str
    skipped: bool
    summary: dict[str, Any]
    reused_from: Path | None = None


def stage_key(name: str, material: dict[str, Any]) -> str:
    """Hash that identifies a stage's output: its name, inputs, config and tuneforge version."""
    return object_sha256({"stage": name, "tuneforge": __version__, **material})


def find_finished(root: Path, name: str, key: str) -> Path | None:
    """The newest finished stage folder under ``root`` with this key, or None."""
    best: tuple[float, Path] | None = None
    for marker in root.glob(f"*/*/{name}/{MARKER}"):
        folder = marker.parent
        if folder.is_symlink():
            continue  # a link to another run's stage; that run is found in its own right
        try:
            record = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("key") == key and (best is None or marker.stat().st_mtime > best[0]):
            best = (marker.stat().st_mtime, folder)
    return best[1] if best else None


def run_stage(
    run: RunDir,
    name: str,
    material: dict[str, Any],
    work: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> StageResult:
    """Run one stage into ``run.path/name``, or reuse a finished one with the same key.

    Args:
        run: The run directory.
        name: Stage name, also the sub-folder.
        material: JSON-able inputs that decide the output (config section, input hashes).
        work: Writes the stage's outputs into the folder it is given; returns a summary.
        force: Run even when a finished stage with the same key exists.
        say: Where to report skipping.
    """
    key = stage_key(name, material)
    final = run.path / name
    if not force:
        earlier = find_finished(run.root, name, key)
        if earlier is not None:
            record = json.loads((earlier / MARKER).read_text())
            if earlier.resolve() == final.resolve():  # this run's own output: keep its record
                say(f"stage {name}: up to date in this run")
            else:
                _replace_with_link(final, earlier)
                say(f"stage {name}: skipped, inputs unchanged since {_relative(earlier, run.root)}")
                reuse = {
                    "status": "skipped",
                    "key": key,
                    "reused_from": str(earlier),
                    "summary": record.get("summary", {}),
                }
                run.record_stage(name, reuse)
            return StageResult(name, final, key, True, record.get("summary", {}), earlier)
    tmp = run.path / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.time()
    try:
        summary = work(tmp)
        seconds = round(time.time() - started, 2)
        record = {
            "stage": name,
            "key": key,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": seconds,
            "summary": summary,
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        _remove(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The summary (for data: the books and the sha256 of each output) goes in the manifest.
    run.record_stage(name, {"status": "done", "key": key, "seconds": seconds, "summary": summary})
    return StageResult(name, final, key, False, summary)


def _replace_with_link(final: Path, target: Path) -> None:
    _remove(final)
    try:
        os.symlink(os.path.relpath(target, final.parent), final, target_is_directory=True)
    except OSError:  # file systems without symlinks get a copy
        shutil.copytree(target, final)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
