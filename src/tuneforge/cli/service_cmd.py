"""`tuneforge service start` and `tuneforge service worker`: fine-tuning as a service."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from tuneforge.cli.common import ConfigArg, SetOpt
from tuneforge.console import err

service_app = typer.Typer(
    help="OpenAI's files and fine-tuning jobs API on your hardware, with its job workers.",
    no_args_is_help=True,
)


@service_app.command("start")
def start(
    config: ConfigArg,
    host: Annotated[str | None, typer.Option("--host", help="Overrides serve.host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides serve.port.")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Overrides service.workers.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Serve the base model, its fine-tuned adapters and the jobs API; run the workers."""
    from tuneforge.service.runtime import Runtime
    from tuneforge.service.server import serve_service

    runtime = Runtime.load(config, _with(set_, workers))
    serve = runtime.config.serve
    host, port = host or serve.host, port or serve.port
    err.print(
        f"fine-tuning service for [bold]{runtime.base_name}[/bold] on http://{host}:{port}/v1 "
        f"({runtime.settings.workers} worker(s); jobs in {runtime.root})"
    )
    serve_service(runtime, host, port)


@service_app.command("worker")
def worker(
    config: ConfigArg,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after one job (a Kubernetes Job's pod).")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Take jobs from the service's queue (its database) and run them here until stopped."""
    import signal

    from tuneforge.service.runtime import Runtime
    from tuneforge.service.worker import Worker

    runtime = Runtime.load(config, set_)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # the running job checkpoints, then stops
    err.print(f"worker on {runtime.database_url.split('@')[-1]} (root {runtime.root})")
    ran = Worker(runtime, "cli", stop).run(once=once)
    err.print(f"worker stopped after {ran} job(s)")


def _with(overrides: list[str] | None, workers: int | None) -> list[str]:
    extra = [] if workers is None else [f"service.workers={workers}"]
    return [*(overrides or []), *extra]
