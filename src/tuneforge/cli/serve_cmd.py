"""`tuneforge serve`: an OpenAI-compatible server over an exported model and its adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import SetOpt
from tuneforge.console import err


def serve(
    target: Annotated[
        Path,
        typer.Argument(help="A run directory, an export folder, or a safetensors model folder."),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Take the serve section from this YAML config."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Overrides serve.host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides serve.port.")] = None,
    adapters: Annotated[
        Path | None,
        typer.Option("--adapters", help="Folder of named LoRA adapters (serve.adapters_dir)."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Serve the model behind the OpenAI API, with adapters, cache, guardrails and auth."""
    from tuneforge.serve.runner import find_target
    from tuneforge.serve.runner import serve as run_server

    settings = _settings(config, target, set_)
    overrides = {"host": host, "port": port, "adapters_dir": str(adapters) if adapters else None}
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    found = find_target(target, settings)
    err.print(
        f"serving [bold]{found.name}[/bold] from {found.model_dir} on "
        f"http://{settings.host}:{settings.port}/v1"
    )
    run_server(found)


def _settings(config: Path | None, target: Path, overrides: list[str] | None):
    """The serve section: from --config (a whole config, or a file with only ``serve:``),
    else the run's saved config, else the defaults; ``--set serve.KEY=VALUE`` on top."""
    import yaml
    from pydantic import ValidationError

    from tuneforge.config import load_config
    from tuneforge.config.load import apply_override
    from tuneforge.config.serve_schema import ServeConfig
    from tuneforge.errors import ConfigError

    source = config or (target / "config.yaml" if (target / "config.yaml").is_file() else None)
    raw: dict = {}
    if source is not None:
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{source}: cannot read it as YAML ({err})") from None
        if "model" in raw:  # a whole project config
            return load_config(source, overrides).serve
    for item in overrides or []:
        apply_override(raw, item)  # full keys: serve.cache.redis_url=...
    try:
        return ServeConfig.model_validate(raw.get("serve") or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source or '--set'}: serve.{where}: {first['msg']}") from None
