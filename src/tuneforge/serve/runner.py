"""Build a server from what the user points at, and run it under uvicorn until SIGTERM.

``tuneforge serve`` takes a run directory (its export's merged model, and its
config's ``serve`` section), an export folder, or any safetensors model folder.
On SIGTERM or Ctrl-C the server stops accepting work (503 on every route but
health), lets the requests in flight finish, then frees the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.serve_schema import ServeConfig
from tuneforge.errors import ConfigError
from tuneforge.serve.handlers import ServeContext

log = logging.getLogger("tuneforge.serve")


@dataclass
class Target:
    """The model folder to serve, the name clients use for it, and the settings."""

    model_dir: Path
    name: str
    settings: ServeConfig


def find_target(path: Path, settings: ServeConfig | None = None) -> Target:
    """A run directory, an export folder or a model folder -> what to serve.

    Raises:
        ConfigError: nothing servable there (names what was looked for).
    """
    from tuneforge.config import load_config

    path = path.expanduser()
    config = None
    if (path / "config.yaml").is_file() and (path / "manifest.json").is_file():
        config = load_config(path / "config.yaml")
        folder = path / "export" / "merged"
    elif (path / "merged" / "config.json").is_file():
        folder = path / "merged"
        run = path.resolve().parent  # an export inside its run: the run's config names it
        if (run / "config.yaml").is_file() and (run / "manifest.json").is_file():
            config = load_config(run / "config.yaml")
    else:
        folder = path
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise ConfigError(
            f"{path}: nothing to serve; give a run directory with a merged export "
            "(export.formats includes hf), an export folder, or a safetensors model folder"
        )
    if settings is None:
        settings = config.serve if config is not None else ServeConfig()
    name = config.name if config is not None else folder.resolve().name
    if name == "merged":
        name = folder.resolve().parent.parent.name or "model"
    return Target(folder.resolve(), name, settings)


def build_context(target: Target, engine: Any = None) -> ServeContext:
    """The engine (local, or the vLLM forwarder), cache, guardrails and keys of a server."""
    from tuneforge.serve.auth import RateLimiter, load_keys
    from tuneforge.serve.cache import build_cache
    from tuneforge.serve.guardrails import Guardrails

    settings = target.settings
    if engine is None:
        engine = _engine(target)
    limit = settings.auth.rate_limit_per_minute
    return ServeContext(
        engine=engine,
        settings=settings,
        guardrails=Guardrails(settings.guardrails),
        keys=load_keys(settings.auth),
        limiter=RateLimiter(limit) if limit else None,
        cache=build_cache(settings.cache),
    )


def _engine(target: Target) -> Any:
    settings = target.settings
    if settings.backend == "vllm":
        from tuneforge.serve.upstream import UpstreamEngine

        return UpstreamEngine(settings.upstream_url or "", target.model_dir, name=target.name)
    from tuneforge.serve.engine import LocalEngine
    from tuneforge.serve.registry import AdapterRegistry

    registry = None
    if settings.adapters_dir:
        registry = AdapterRegistry(settings.adapters_dir, settings.max_loaded_adapters)
    return LocalEngine(
        target.model_dir,
        registry,
        max_batch=settings.max_batch,
        max_queue=settings.max_queue,
        name=target.name,
    )


def serve(target: Target) -> None:
    """Run the server in the foreground until SIGTERM/Ctrl-C; the port comes from settings
    (or Vertex AI's ``AIP_HTTP_PORT``)."""
    import uvicorn

    from tuneforge.serve.app import create_app

    _json_logging()
    ctx = build_context(target)
    app = create_app(ctx)
    app.router.lifespan_context = _lifespan(ctx)
    port = int(os.environ.get("AIP_HTTP_PORT", target.settings.port))
    config = uvicorn.Config(
        app,
        host=target.settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(target.settings.request_timeout_s) + 5,
    )
    DrainingServer(config, ctx).run()


class DrainingServer:
    """uvicorn's server, which first marks the context draining when told to exit."""

    def __new__(cls, config: Any, ctx: ServeContext) -> Any:
        import uvicorn

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                ctx.draining = True  # new work gets 503 while the rest finishes
                super().handle_exit(sig, frame)

            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                # uvicorn re-raises the signal after draining; a drained server exits 0
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handled = (signal.SIGINT, signal.SIGTERM)
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        return _Server(config)


def _lifespan(ctx: ServeContext):
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield  # /ready answers 503 until the engine has loaded the model
        ctx.draining = True
        await ctx.engine.close()

    return lifespan


def _json_logging() -> None:
    """Our JSON lines to stderr; nothing else of the libraries' access logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tuneforge.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
