"""`tuneforge runs reproduce RUN`: every stage again from the saved config, then the numbers.

The re-run is an ordinary new run directory made with ``--force`` (no stage is
taken from the cache, or nothing would be re-computed), from the resolved
``config.yaml`` the original saved before any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from tuneforge.cli.common import open_pipeline
from tuneforge.config import Config
from tuneforge.console import err, out
from tuneforge.errors import ConfigError, GateFailed
from tuneforge.pipeline import STAGES
from tuneforge.runs.catalog import RunInfo, read_run
from tuneforge.runs.hashing import cached_file_sha256
from tuneforge.runs.reproduce import (
    Check,
    environment_changes,
    reproduction_checks,
    table_rows,
    verdict,
)


def reproduce_run(original: RunInfo, tolerance: float) -> RunInfo:
    """Re-run ``original``'s stages into a new run, print the comparison, judge it.

    Raises:
        NotReproduced: a number differs (beyond ``tolerance``); names the first one.
    """
    stages = [stage for stage in STAGES if stage in original.stages]
    if not {"train", "eval"} & set(stages):
        raise ConfigError(f"run {original.label}: it has no train or eval stage to reproduce")
    _warn_changed_inputs(original)
    again = _run_again(original, stages)
    checks = reproduction_checks(original, again)
    out.print(_checks_table(original, again, checks))
    changes = environment_changes(original.manifest, again.manifest)
    if changes:
        err.print(
            "[yellow]warning:[/yellow] numbers are only promised to repeat on the same machine "
            f"and versions; these differ: {escape('; '.join(changes))}",
            soft_wrap=True,
        )
    out.print(verdict(checks, tolerance, original.label, again.label))
    return again


def _run_again(original: RunInfo, stages: list[str]) -> RunInfo:
    from tuneforge.cli.stages import run_stages

    pipeline = open_pipeline(
        original.path / "config.yaml", _overrides(original), force=True, new_run=True
    )
    pipeline.override_gates = bool(original.summary("export").get("gates_overridden"))
    _warn_config_changes(original, pipeline.config)
    try:
        with pipeline:
            run_stages(pipeline, stages)
    except GateFailed as failed:  # compared all the same: the numbers say what changed
        err.print(f"[yellow]note:[/yellow] the re-run stopped before its export: {failed}")
    again = read_run(pipeline.run.path, original.root)
    assert again is not None  # create_run wrote its manifest
    return again


def _overrides(original: RunInfo) -> list[str]:
    """Put the re-run beside the original (the saved runs_dir may be relative to another CWD)."""
    saved = original.config.get("runs_dir")
    if saved and Path(saved).expanduser().resolve() == original.root.resolve():
        return []
    return [f"runs_dir={json.dumps(str(original.root))}"]  # a JSON string is a YAML scalar


def _warn_changed_inputs(original: RunInfo) -> None:
    """Input files (data, model weights) that are gone or hash differently than they did."""
    changed = []
    for path, digest in (original.manifest.get("inputs") or {}).items():
        file = Path(path)
        if not file.is_file():
            changed.append(f"{path} (missing)")
        elif cached_file_sha256(file, original.root / ".hash-cache.json") != digest:
            changed.append(path)
    if changed:
        err.print(
            "[yellow]warning:[/yellow] inputs changed since the original run, the numbers will "
            f"differ: {escape(', '.join(changed))}",
            soft_wrap=True,
        )


def _warn_config_changes(original: RunInfo, config: Config) -> None:
    """Keys the saved config gains or loses when read by this tuneforge (a changed schema)."""
    from tuneforge.runs.compare import config_diff

    diff = config_diff([original.config, config.model_dump(mode="json")])
    keys = [key for key in diff if key != "runs_dir" and not key.startswith("track.")]
    if keys:
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        err.print(
            "[yellow]warning:[/yellow] the saved config reads differently with this tuneforge "
            f"(new or changed keys): {escape(shown)}",
            soft_wrap=True,
        )


def _checks_table(original: RunInfo, again: RunInfo, checks: list[Check]) -> Table:
    table = Table(title=f"Reproduction of {original.label} in {again.label}", title_justify="left")
    for column in ("metric", "original", "reproduced", "difference", "identical"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in table_rows(checks):
        same = "[green]yes[/green]" if row.identical else "[red]no[/red]"
        table.add_row(
            row.metric, _cell(row.original), _cell(row.reproduced), _diff(row.difference), same
        )
    return table


def _cell(value: Any) -> str:
    return "-" if value is None else escape(repr(value) if isinstance(value, float) else str(value))


def _diff(value: float | None) -> str:
    if value is None:
        return ""
    return "0" if value == 0 else f"{value:+.3g}"
