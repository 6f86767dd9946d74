"""`tuneforge adapters list` and `tuneforge adapters combine`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from tuneforge.console import out
from tuneforge.errors import ConfigError

adapters_app = typer.Typer(help="Inspect and combine saved adapters.", no_args_is_help=True)


@adapters_app.command("list")
def list_(
    folders: Annotated[list[Path], typer.Argument(help="Adapter folders.")],
) -> None:
    """Show each adapter folder's name, kind, rank, target modules and size."""
    from tuneforge.train.adapters import adapter_info

    table = Table()
    for column in ("name", "kind", "rank", "target modules", "size"):
        justify = "right" if column in ("rank", "size") else "left"
        table.add_column(column, justify=justify, overflow="fold")
    for folder in folders:
        info = adapter_info(folder)
        tokens = info["virtual_tokens"]
        rank = str(info["rank"]) if info["rank"] else f"{tokens} tokens" if tokens else "-"
        size = f"{info['bytes'] / 1024:,.1f} KiB"
        table.add_row(str(folder), info["kind"], rank, info["target_modules"], size)
    out.print(table)


@adapters_app.command("combine")
def combine(
    base: Annotated[str, typer.Option("--base", help="The base model (folder or hub id).")],
    adapter: Annotated[
        list[str], typer.Option("--adapter", help="NAME=DIR of a LoRA adapter (repeatable).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the combined adapter.")],
    weights: Annotated[
        str | None, typer.Option("--weights", help="One weight per adapter, e.g. 0.5,0.5.")
    ] = None,
    how: Annotated[
        str,
        typer.Option(
            "--type", help="linear: mix A and B factors (same rank); cat: exact weighted sum."
        ),
    ] = "linear",
    name: Annotated[str, typer.Option("--name", help="Name of the combined adapter.")] = "combined",
) -> None:
    """Combine LoRA adapters trained on the same base into one, weighted (default: the mean)."""
    folders = dict(_name_and_dir(spec) for spec in adapter)
    if len(folders) < 2:
        raise ConfigError("--adapter: give at least two NAME=DIR adapters to combine")
    mix = _weights(weights, len(folders))
    combination = _combination(how)

    import torch

    from tuneforge.console import quiet_libraries
    from tuneforge.models.load import load_model
    from tuneforge.train.adapters import combine_adapters, load_adapters, save_adapter

    quiet_libraries()
    model = load_adapters(load_model(base, dtype=torch.float32), folders)
    combine_adapters(model, list(folders), mix, name, combination)
    save_adapter(model, out_dir, name)
    out.print(f"combined {', '.join(folders)} ({combination}, weights {mix}) -> {out_dir}")


def _name_and_dir(spec: str) -> tuple[str, str]:
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise ConfigError(f"--adapter {spec!r}: expected NAME=DIR")
    return name, folder


def _weights(text: str | None, count: int) -> list[float]:
    if text is None:
        return [1.0 / count] * count
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights {text!r}: expected comma-separated numbers") from None
    if len(values) != count:
        raise ConfigError(f"--weights {text!r}: {len(values)} weights for {count} adapters")
    return values


def _combination(how: str) -> Literal["linear", "cat"]:
    if how not in ("linear", "cat"):
        raise ConfigError(f"--type {how!r}: use 'linear' or 'cat'")
    return "linear" if how == "linear" else "cat"
