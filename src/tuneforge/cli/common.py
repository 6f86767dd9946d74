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
from tuneforge.errors import ConfigError, DataError
from tuneforge.models.local import check_local_model_dir, is_local
from tuneforge.pipeline import Pipeline
from tuneforge.runs import RunDir, create_run, latest_run
from tuneforge.track.backends import check_backends
from tuneforge.track.session import RunTracking

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
    config_file: Path,
    overrides: list[str] | None,
    force: bool,
    new_run: bool,
    synthesize: bool = False,
) -> Pipeline:
    """Load the config, show it, open the latest matching run directory (or a new one).

    With ``synthesize`` (the commands that may prepare data), the synth tasks run first
    when ``synth.auto`` is on. Use the pipeline as a context manager: leaving the
    ``with`` block ends its trackers' run.
    """
    run = None
    if config_file.is_dir():  # a run directory: its saved config, continued in place
        run = open_run_dir(config_file)
        config_file = run.path / "config.yaml"
    config = resolve_run_references(load_config(config_file, overrides))
    if synthesize and run is None:
        from tuneforge.cli.data_synth import synthesize_first

        synthesize_first(config)
    preflight(config)
    show_config(config)
    if run is None and not new_run:
        run = latest_run(config)
    if run is None:
        run = create_run(config, config_file)
    err.print(f"run directory: [bold]{run.path}[/bold]")
    pipeline = Pipeline(config=config, run=run, config_file=str(config_file), force=force)
    pipeline.tracking = RunTracking.open(config, run)  # ended when the `with` block exits
    return pipeline


def open_run_dir(path: Path) -> RunDir:
    """An existing run directory, named on the command line in place of a config file."""
    if not (path / "config.yaml").is_file() or not (path / "manifest.json").is_file():
        raise ConfigError(
            f"{path}: a directory, but not a run directory (no config.yaml and manifest.json); "
            "give a config file or runs/NAME/STAMP"
        )
    path = path.resolve()
    return RunDir(path=path, root=path.parent.parent)


def preflight(config: Config) -> None:
    """Fail before any run directory exists: no dataset, unsafe model, tracker package missing."""
    data = config.data
    keys = [f"data.sources[{i}].path" for i in range(len(data.sources or []))] or ["data.path"]
    written = {
        str(Path(config.synth.out_dir) / f"{task.name}.jsonl"): task.name
        for task in config.synth.tasks
    }
    for key, path in zip(keys, data.input_paths(), strict=True):
        if not Path(path).exists():
            hint = ""
            if path in written:
                hint = (
                    f" (synth task {written[path]!r} writes it: run tuneforge data prepare, "
                    "or tuneforge data synth, with synth.auto on)"
                )
            raise DataError(f"{key} {path!r}: file not found{hint}")
    if config.model.name_or_path != "tiny" and is_local(config.model.name_or_path):
        check_local_model_dir(config.model.name_or_path)
    check_backends(config.track)
    if "onnx" in config.export.formats:
        import importlib.util

        missing = [
            m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)
        ]
        if missing:
            raise ConfigError(
                f"export.formats has onnx, which needs {', '.join(missing)}: "
                "pip install 'tuneforge[export]' (or drop onnx from export.formats)"
            )


def show_config(config: Config) -> None:
    """Print the resolved config (it is also saved as config.yaml in the run)."""
    err.print(Syntax(dump_config(config), "yaml", theme="ansi_dark", background_color="default"))


def print_metrics(report: dict) -> None:
    """The eval report's sections (gates, metrics with intervals, suites) as rich tables."""
    from tuneforge.eval.report import report_sections

    title = f"Evaluation on {report['samples']} held-out {report['split']} samples"
    out.print(f"[bold]{title}[/bold]")
    for name, body in report_sections(report):
        if name.startswith("Largest"):  # examples read better in report.html
            continue
        if isinstance(body, str):
            out.print(f"[bold]{name}[/bold]\n{body}")
            continue
        header, rows = body
        table = Table(title=name, title_justify="left")
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in rows:
            cells = [str(cell) for cell in row]
            if cells and cells[0] in ("pass", "FAIL"):
                colour = "green" if cells[0] == "pass" else "red"
                cells[0] = f"[{colour}]{cells[0]}[/{colour}]"
            table.add_row(*cells)
        out.print(table)
