"""What every stage command shares: options, config loading, run directory, result tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from tuneforge.config import Config, dump_config, load_config
from tuneforge.config.load import resolve_run_references
from tuneforge.console import err, out
from tuneforge.errors import DataError
from tuneforge.models.local import check_local_model_dir, is_local
from tuneforge.pipeline import Pipeline
from tuneforge.runs import create_run, latest_run

ConfigArg = Annotated[Path, typer.Argument(help="The project's YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a value: --set train.lr=1e-4 (repeatable)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run stages even if unchanged.")]
NewRunOpt = Annotated[
    bool, typer.Option("--new-run", help="Start a new run directory instead of the latest one.")
]


def open_pipeline(
    config_file: Path, overrides: list[str] | None, force: bool, new_run: bool
) -> Pipeline:
    """Load the config, show it, and open the latest matching run directory or a new one."""
    config = resolve_run_references(load_config(config_file, overrides))
    preflight(config)
    show_config(config)
    run = None if new_run else latest_run(config)
    if run is None:
        run = create_run(config, config_file)
    err.print(f"run directory: [bold]{run.path}[/bold]")
    return Pipeline(config=config, run=run, config_file=str(config_file), force=force)


def preflight(config: Config) -> None:
    """Fail on a missing dataset or an unsafe model folder before any run directory exists."""
    if not Path(config.data.path).exists():
        raise DataError(f"data.path {config.data.path!r}: file not found")
    if config.model.name_or_path != "tiny" and is_local(config.model.name_or_path):
        check_local_model_dir(config.model.name_or_path)


def show_config(config: Config) -> None:
    """Print the resolved config (it is also saved as config.yaml in the run)."""
    err.print(Syntax(dump_config(config), "yaml", theme="ansi_dark", background_color="default"))


def metrics_table(report: dict) -> Table:
    """Base vs tuned metrics, with the change, as a rich table."""
    metrics = report["metrics"]
    table = Table(title=f"Evaluation on {report['samples']} held-out {report['split']} samples")
    table.add_column("metric")
    for model in metrics:
        table.add_column(model, justify="right")
    if "base" in metrics:
        table.add_column("change", justify="right")
    for name in metrics["tuned"]:
        cells = [f"{metrics[m][name]:.3f}" for m in metrics]
        if "base" in metrics:
            change = metrics["tuned"][name] - metrics["base"][name]
            colour = "green" if change > 0 else "red" if change < 0 else "white"
            cells.append(f"[{colour}]{change:+.3f}[/{colour}]")
        table.add_row(name, *cells)
    return table


def print_metrics(report: dict) -> None:
    out.print(metrics_table(report))
