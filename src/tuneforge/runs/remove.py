"""Removing runs without breaking the runs that build on them.

A stage reused from an earlier run is a link to that run's stage folder, and a
config can name a path inside another run (``model.name_or_path: run:NAME``
resolves to an export folder). Removing such a run would leave the others with
broken links, so it is refused with their names; ``hand_over`` first moves each
linked stage folder into the newest run that links to it, where the stage cache
finds it again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.runs.catalog import STAGE_ORDER, RunInfo, read_metrics
from tuneforge.runs.rundir import write_json_atomic


@dataclass(frozen=True)
class Dependency:
    """A run that uses something inside a run about to be removed."""

    run: RunInfo
    stage: str | None  # the stage folder that is a link; None: its config names a path
    target: Path


def describe(dependencies: list[Dependency]) -> str:
    """``q/2 (links base, data); q/3 (names a path in its config)``, one entry per run."""
    uses: dict[str, list[str]] = {}
    for dependency in dependencies:
        uses.setdefault(dependency.run.label, []).append(dependency.stage or "")
    parts = []
    for label, stages in uses.items():
        what = [f"links {', '.join(s for s in stages if s)}"] if any(stages) else []
        what += ["names a path in its config"] if "" in stages else []
        parts.append(f"{label} ({'; '.join(what)})")
    return "; ".join(parts)


def check_inside(run: RunInfo, root: Path) -> None:
    """Refuse a run that is not ``<root>/<name>/<stamp>``.

    Raises:
        ConfigError: the run directory lies outside the runs directory.
    """
    if run.path.resolve().parent.parent != root.resolve():
        raise ConfigError(
            f"run {str(run.path)!r} is not inside the runs directory {str(root)!r}; "
            "pass --runs-dir to remove runs elsewhere"
        )


def dependents(doomed: list[RunInfo], runs: list[RunInfo]) -> list[Dependency]:
    """What the runs outside ``doomed`` use from inside ``doomed``."""
    folders = [run.path.resolve() for run in doomed]
    kept = [run for run in runs if run.path.resolve() not in folders]
    found = []
    for run in kept:
        for stage in STAGE_ORDER:
            link = run.path / stage
            if link.is_symlink() and _inside(link.resolve(), folders):
                found.append(Dependency(run, stage, link.resolve()))
        config = run.path / "config.yaml"
        text = config.read_text(encoding="utf-8") if config.is_file() else ""
        for folder in folders:
            if f"{folder}{os.sep}" in text:
                found.append(Dependency(run, None, folder))
    return found


def hand_over(dependencies: list[Dependency]) -> list[str]:
    """Move each linked stage folder into the newest run linking to it; relink the others.

    Returns:
        One line per moved folder, saying where it went.
    """
    by_target: dict[Path, list[Dependency]] = {}
    for dependency in dependencies:
        if dependency.stage is not None:
            by_target.setdefault(dependency.target, []).append(dependency)
    notes = []
    for target, users in by_target.items():
        owner, *others = users  # runs come newest first
        link = owner.run.path / owner.stage
        link.unlink()
        shutil.move(str(target), str(link))
        _record_owner(owner, target)
        for other in others:
            other_link = other.run.path / other.stage
            other_link.unlink()
            os.symlink(os.path.relpath(link, other_link.parent), other_link)
            _record_reuse(other, link)
        notes.append(f"moved {owner.stage} into {owner.run.label}")
    return notes


def delete_run(run: RunInfo) -> None:
    """Delete the run directory, and its name's folder when that is left empty."""
    shutil.rmtree(run.path)
    parent = run.path.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _record_owner(owner: Dependency, moved_from: Path) -> None:
    """The new owner's manifest: the stage is its own now; its training lines come along."""
    manifest = owner.run.path / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    record = data["stages"].get(owner.stage, {})
    record.pop("reused_from", None)
    record.update(status="done", handed_over_from=str(moved_from))
    write_json_atomic(manifest, data)
    if owner.stage == "train":
        lines = read_metrics(moved_from.parent / "metrics.jsonl")
        with open(owner.run.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in lines if r.get("stage") == "train")


def _record_reuse(user: Dependency, new_target: Path) -> None:
    manifest = user.run.path / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["stages"].setdefault(user.stage, {})["reused_from"] = str(new_target)
    write_json_atomic(manifest, data)
