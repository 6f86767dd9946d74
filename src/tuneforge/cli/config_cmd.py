"""`tuneforge config validate|schema`."""

from __future__ import annotations

import json

import typer

from tuneforge.cli.common import ConfigArg, SetOpt
from tuneforge.config import Config, dump_config, load_config
from tuneforge.console import out

config_app = typer.Typer(
    help="Check a config file, or print the config schema.", no_args_is_help=True
)


@config_app.command("validate")
def validate(
    config: ConfigArg,
    set_: SetOpt = None,
    show: bool = typer.Option(False, "--show", help="Print the resolved config."),
) -> None:
    """Validate a config file (and overrides); exit 2 with the first problem."""
    resolved = load_config(config, set_)
    if show:
        out.print(dump_config(resolved), markup=False)
    out.print(f"{config}: valid")


@config_app.command("schema")
def schema() -> None:
    """Print the JSON schema of the config file."""
    print(json.dumps(Config.model_json_schema(), indent=2))
