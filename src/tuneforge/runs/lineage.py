"""Lineage: the chain of hashed inputs from raw data to an exported artifact, and its check.

The export stage writes ``lineage.json`` beside the artifact. Each link of the
chain (raw data, prepared dataset, config, base model, checkpoint, eval, artifact)
names its files with the sha256 they had when they were produced or read, so
``tuneforge lineage PATH`` can re-hash whatever still exists and say which link,
if any, no longer matches. Artifact files are stored relative to the lineage
file, so a copied export folder still verifies; the rest are absolute paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.errors import ConfigError
from tuneforge.runs.hashing import file_sha256

LINEAGE_FILE = "lineage.json"
FORMAT = 1
LINKS = ("raw data", "prepared dataset", "config", "base model", "checkpoint", "eval", "artifact")


@dataclass
class Link:
    """One link of the chain: what it is, where its files are, and their hashes."""

    step: str
    where: str
    files: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "where": self.where, "files": self.files, "info": self.info}


def folder_hashes(
    folder: Path, hasher: Callable[[Path], str] = file_sha256, relative: bool = False
) -> dict[str, str]:
    """sha256 of every file under ``folder`` (following a linked stage folder), by path."""
    folder = folder.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {(str(p.relative_to(folder)) if relative else str(p)): hasher(p) for p in files}


def write_lineage(out_dir: Path, links: list[Link], **info: Any) -> dict[str, Any]:
    """Hash the artifact files in ``out_dir``, add them as the last link, write the record."""
    artifact = Link("artifact", ".", folder_hashes(out_dir, relative=True))
    record = {
        "format": FORMAT,
        "tuneforge_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
        "chain": [link.as_dict() for link in [*links, artifact]],
    }
    (out_dir / LINEAGE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def find_lineage(path: str | Path) -> Path:
    """The ``lineage.json`` for an export folder, a file inside one, or a run directory."""
    start = Path(path).resolve()
    if not start.exists():
        raise ConfigError(f"{path}: no such file or folder")
    candidates = [start / LINEAGE_FILE, start / "export" / LINEAGE_FILE]
    candidates += [parent / LINEAGE_FILE for parent in start.parents]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(
            f"{path}: no {LINEAGE_FILE} here or above; point at an export folder "
            "(runs/NAME/STAMP/export) or a run directory that has one"
        )
    return found


@dataclass
class Check:
    """A file of the chain re-hashed: ``ok``, ``changed`` or ``missing``."""

    step: str
    path: str
    expected: str
    actual: str | None

    @property
    def status(self) -> str:
        if self.actual is None:
            return "missing"
        return "ok" if self.actual == self.expected else "changed"


def verify(lineage_file: Path) -> tuple[dict[str, Any], list[Check]]:
    """Read a lineage record and re-hash every file it names."""
    try:
        record = json.loads(lineage_file.read_text(encoding="utf-8"))
        chain = record["chain"]
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ConfigError(f"{lineage_file}: not a readable lineage record ({error})") from None
    return record, list(_checks(chain, lineage_file.parent))


def _checks(chain: list[dict[str, Any]], base: Path) -> Iterator[Check]:
    for link in chain:
        for name, expected in link.get("files", {}).items():
            path = Path(name) if Path(name).is_absolute() else base / name
            actual = file_sha256(path) if path.is_file() else None
            yield Check(link["step"], name, expected, actual)


def summarize(checks: list[Check]) -> dict[str, dict[str, int]]:
    """Per link: how many files are ok, changed and missing."""
    counts: dict[str, dict[str, int]] = {}
    for check in checks:
        row = counts.setdefault(check.step, {"ok": 0, "changed": 0, "missing": 0})
        row[check.status] += 1
    return counts
