"""`tuneforge runs list | show | compare | rm | reproduce`: the run directories, read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from tuneforge.cli.common import print_metrics
from tuneforge.console import err, out
from tuneforge.errors import ConfigError
from tuneforge.runs.catalog import (
    RunInfo,
    find_runs,
    resolve_run,
    run_names,
    run_row,
    stage_states,
)

runs_app = typer.Typer(help="List, show, compare, remove and reproduce runs.", no_args_is_help=True)

RunsDirOpt = Annotated[
    Path, typer.Option("--runs-dir", help="Root of the run directories (the config's runs_dir).")
]
RunArg = Annotated[str, typer.Argument(help="A run directory, NAME/STAMP, or NAME (its newest).")]
RunsArg = Annotated[
    list[str], typer.Argument(help="Run directories, NAME/STAMP, or NAME (its newest).")
]
NOTED_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate")


@runs_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="Only the runs of this name.")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """Every run, newest first: method, stages, key metrics and gate status."""
    runs = find_runs(runs_dir)
    if name is not None:
        runs = [run for run in runs if run.name == name]
        if not runs:
            raise ConfigError(
                f"no run named {name!r} under {runs_dir}; runs: {run_names(runs_dir)}"
            )
    rows = [run_row(run) for run in runs]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no runs under {runs_dir}")
        return
    table = Table(caption="stages: * reused from an earlier run", caption_justify="left")
    for column in ("run", "created", "method", "stages", "key metrics", "gates"):
        table.add_column(column, overflow="fold")
    for row in rows:
        stages = " ".join(s + ("*" if v == "reused" else "") for s, v in row["stages"].items())
        metrics = ", ".join(f"{k} {_short(v)}" for k, v in row["metrics"].items()) or "-"
        when, gates = _when(row["created"]), _gate_colour(row["gates"])
        table.add_row(row["run"], when, row["method"], stages, metrics, gates)
    out.print(table)


@runs_app.command("show")
def show(run: RunArg, runs_dir: RunsDirOpt = Path("runs")) -> None:
    """A run's manifest, config, stages, training summary, eval tables and export."""
    info = resolve_run(run, runs_dir)
    out.print(_overview(info))
    config = info.path / "config.yaml"
    if config.is_file():
        out.print("[bold]Config[/bold] (resolved)")
        out.print(Syntax(config.read_text(), "yaml", theme="ansi_dark", background_color="default"))
    out.print(_stages_table(info))
    train = info.summary("train")
    if train:
        out.print(
            f"[bold]Training[/bold]: {train.get('steps')} steps ({train.get('method')}, "
            f"{train.get('objective')}), val loss {train.get('val_loss_before')} -> "
            f"{train.get('val_loss_after')}, train loss (last 10) {train.get('train_loss_last')}"
        )
    report_file = info.path / "eval" / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else info.summary("eval")
    if report.get("samples") is not None:
        print_metrics(report)
    if "export" in info.stages:
        out.print(f"exported: {(info.path / 'export').resolve()}")


def _overview(info: RunInfo) -> Table:
    m = info.manifest
    git = m.get("git") or {}
    hardware = m.get("hardware") or {}
    packages = m.get("packages") or {}
    device = ", ".join(hardware.get("gpus") or []) or f"CPU x{hardware.get('cpu_count')}"
    facts = {
        "run": info.label,
        "directory": str(info.path),
        "created": _when(m.get("created")),
        "config file": str(m.get("config_file") or "-"),
        "config hash": str(m.get("config_hash")),
        "seed": str(m.get("seed")),
        "tuneforge": str(m.get("tuneforge_version")),
        "git": f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}" or "-",
        "packages": ", ".join(f"{p} {packages[p]}" for p in NOTED_PACKAGES if packages.get(p)),
        "hardware": f"{hardware.get('platform')}, {device}, "
        f"{hardware.get('torch_threads')} torch threads",
    }
    table = Table(show_header=False, title=f"Run {info.label}", title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in facts.items():
        table.add_row(key, escape(value))
    return table


def _stages_table(info: RunInfo) -> Table:
    table = Table(title="Stages", title_justify="left")
    for column in ("stage", "status", "seconds", "reused from"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for stage, state in stage_states(info).items():
        record = info.stages[stage]
        source = record.get("reused_from")
        if source:
            source = _relative(Path(source), info.root)
        seconds = record.get("seconds")
        table.add_row(stage, state, "-" if seconds is None else f"{seconds:g}", source or "")
    return table


@runs_app.command("compare")
def compare(
    runs: RunsArg,
    runs_dir: RunsDirOpt = Path("runs"),
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="PNG of the loss curves (default: RUNS_DIR/compare-STAMP.png)."),
    ] = None,
) -> None:
    """Config differences, a metric table (best in bold) and overlaid loss curves of 2+ runs."""
    from tuneforge.runs.compare import config_diff, loss_curves, metric_rows, plot_loss_curves

    infos = [resolve_run(run, runs_dir) for run in runs]
    if len({info.path for info in infos}) < 2:
        raise ConfigError(f"runs compare needs two different runs; got {', '.join(runs)}")
    labels = [info.label for info in infos]
    diff = config_diff([info.config for info in infos])
    if len({info.root for info in infos}) == 1:  # same root: only the spelling can differ
        diff.pop("runs_dir", None)
    if diff:
        out.print(_value_table("Config differences", "key", labels, diff, highlight=False))
    else:
        out.print("configs: identical")
    out.print(_value_table("Metrics", "metric", labels, metric_rows(infos), highlight=True))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = out_file or runs_dir / f"compare-{stamp}.png"
    curves = {info.label: loss_curves(info.train_records()) for info in infos}
    plot_loss_curves(curves, target)
    out.print(f"loss curves: {target}")


def _value_table(
    title: str, first: str, labels: list[str], rows: dict[str, list[Any]], *, highlight: bool
) -> Table:
    from tuneforge.runs.compare import best_index

    table = Table(title=title, title_justify="left")
    table.add_column(first, overflow="fold")
    for label in labels:
        table.add_column(label, justify="right", overflow="fold")
    for key, values in rows.items():
        best = best_index(key, values) if highlight else None
        cells = [_short(v) for v in values]
        if best is not None:
            cells[best] = f"[bold green]{cells[best]}[/bold green]"
        table.add_row(key, *cells)
    return table


@runs_app.command("rm")
def rm(
    runs: RunsArg,
    runs_dir: RunsDirOpt = Path("runs"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove runs that others link to: their shared stages move into those runs first.",
        ),
    ] = False,
) -> None:
    """Delete run directories (only inside the runs directory)."""
    from tuneforge.runs.remove import check_inside, delete_run, dependents, describe, hand_over

    doomed = list({info.path: info for info in (resolve_run(r, runs_dir) for r in runs)}.values())
    for info in doomed:
        check_inside(info, runs_dir)
    used = dependents(doomed, find_runs(runs_dir))
    if used and not force:
        raise ConfigError(
            f"{', '.join(i.label for i in doomed)}: used by {describe(used)}; remove those too, "
            "or pass --force to move the shared stages into them first"
        )
    broken = [d for d in used if d.stage is None]
    if broken:
        err.print(f"[yellow]warning:[/yellow] {escape(describe(broken))}: that path will be gone")
    if not yes:
        typer.confirm(f"delete {', '.join(i.label for i in doomed)}?", abort=True)
    for note in hand_over(used):
        out.print(note)
    for info in doomed:
        delete_run(info)
        out.print(f"deleted {info.label}")


@runs_app.command("reproduce")
def reproduce(
    run: RunArg,
    runs_dir: RunsDirOpt = Path("runs"),
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance", min=0.0, help="Accept numbers this far apart (default: bitwise equal)."
        ),
    ] = 0.0,
) -> None:
    """Re-run every stage of a run from its saved config into a new run, and compare the numbers."""
    from tuneforge.cli.runs_reproduce import reproduce_run

    reproduce_run(resolve_run(run, runs_dir), tolerance)


def _when(created: str | None) -> str:
    if not created:
        return "-"
    try:
        return datetime.fromisoformat(created).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created


def _short(value: Any) -> str:
    from tuneforge.runs.compare import ABSENT

    if value is ABSENT:
        return "(absent)"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return escape(text if len(text) <= 48 else text[:45] + "...")


def _gate_colour(state: str) -> str:
    colour = {"passed": "green", "none": "dim", "-": "dim"}.get(state.split()[0], "red")
    return f"[{colour}]{state}[/{colour}]"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
