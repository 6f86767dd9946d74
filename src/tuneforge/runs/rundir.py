"""Every run is a self-describing directory: ``<root>/<name>/<timestamp>/``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.config import Config, config_hash, dump_config
from tuneforge.runs.hashing import cached_file_sha256
from tuneforge.runs.manifest import git_state, hardware, package_versions


@dataclass
class RunDir:
    """A run's directory and its manifest."""

    path: Path
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def update_manifest(self, **fields: Any) -> None:
        """Merge top-level fields into manifest.json (written atomically)."""
        manifest = self.read_manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest_path, manifest)

    def record_stage(self, name: str, record: dict[str, Any]) -> None:
        manifest = self.read_manifest()
        manifest.setdefault("stages", {})[name] = record
        write_json_atomic(self.manifest_path, manifest)

    def record_input(self, path: str | Path) -> str:
        """Hash an input file into the manifest and return its sha256.

        Hashes are remembered under the runs root by path, size and mtime, so big
        weights are read once; the manifest is rewritten only when the entry changes.
        """
        digest = cached_file_sha256(path, self.root / ".hash-cache.json")
        manifest = self.read_manifest()
        if manifest.setdefault("inputs", {}).get(str(path)) != digest:
            manifest["inputs"][str(path)] = digest
            write_json_atomic(self.manifest_path, manifest)
        return digest

    def log_metrics(self, stage: str, **values: Any) -> None:
        """Append one line to metrics.jsonl."""
        line = {"time": round(time.time(), 3), "stage": stage, **values}
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def create_run(config: Config, config_file: str | Path | None = None) -> RunDir:
    """Make a new run directory and write its resolved config and manifest before any work."""
    root = Path(config.runs_dir).resolve()
    parent = root / config.name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = parent / stamp
    suffix = 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            suffix += 1
            path = parent / f"{stamp}-{suffix}"
    run = RunDir(path=path, root=root)
    (path / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    manifest = {
        "tuneforge_version": __version__,
        "name": config.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_file": str(config_file) if config_file else None,
        "config_hash": config_hash(config),
        "seed": config.seed,
        "inputs": {},
        "packages": package_versions(),
        "git": git_state(Path(config_file).parent if config_file else "."),
        "hardware": hardware(),
        "stages": {},
    }
    write_json_atomic(path / "manifest.json", manifest)
    run.metrics_path.touch()
    return run


def latest_run(config: Config) -> RunDir | None:
    """The newest run of this config's name whose config hash equals this config's."""
    root = Path(config.runs_dir).resolve()
    parent = root / config.name
    if not parent.is_dir():
        return None
    wanted = config_hash(config)
    for path in sorted(parent.iterdir(), reverse=True):
        manifest = path / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            if json.loads(manifest.read_text()).get("config_hash") == wanted:
                return RunDir(path=path, root=root)
        except (OSError, json.JSONDecodeError):
            continue
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
