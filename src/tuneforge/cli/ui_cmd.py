"""`tuneforge ui`: the web UI over the runs directory (runs, data, playground, launch, feedback)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.console import err
from tuneforge.errors import ConfigError

PASSWORD_ENV = "TUNEFORGE_UI_PASSWORD"


def ui(
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Root of the run directories.")
    ] = Path("runs"),
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; 0.0.0.0 exposes the UI.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 7860,
    configs: Annotated[
        list[Path] | None,
        typer.Option("--configs", help="Config files (or folders of them) for the Launch tab."),
    ] = None,
    serve_url: Annotated[
        str | None,
        typer.Option("--serve-url", help="Chat through this running server instead of in-process."),
    ] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", help="Another model folder for the playground (repeatable)."),
    ] = None,
    feedback: Annotated[
        Path | None, typer.Option("--feedback", help="A labelling file to rank (feedback sample).")
    ] = None,
    password_env: Annotated[
        str,
        typer.Option("--password-env", help="Ask for the password held by this variable."),
    ] = PASSWORD_ENV,
) -> None:
    """Open the web UI: runs dashboard, data browser, side-by-side playground, launch, feedback."""
    try:
        from tuneforge.ui.app import UiSettings, launch_ui
    except ImportError as missing:
        raise ConfigError(
            f"tuneforge ui needs {missing.name or 'gradio'}: pip install 'tuneforge[ui]'"
        ) from None

    password = os.environ.get(password_env) or None
    if host not in ("127.0.0.1", "localhost", "::1") and not password:
        err.print(
            f"[yellow]warning[/yellow]: the UI on {host} can launch runs and has no password; "
            f"set {password_env}"
        )
    settings = UiSettings(
        runs_dir=runs_dir,
        configs=config_files(configs or [Path("examples")]),
        serve_url=serve_url,
        api_key=os.environ.get("TUNEFORGE_API_KEY"),
        models=list(model or []),
        feedback=feedback,
    )
    err.print(f"tuneforge ui on http://{host}:{port} (runs in {runs_dir.resolve()})")
    launch_ui(settings, host=host, port=port, password=password)


def config_files(paths: list[Path]) -> list[Path]:
    """The YAML files named, and those inside the folders named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            found.append(path)
    return found
