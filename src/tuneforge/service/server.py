"""``tuneforge service start``: the serving API with the fine-tuning routes and its workers.

One process serves the base model (and every succeeded job's adapter, under its ``ft:``
name, as soon as the job publishes it), answers the files and jobs routes, and runs
``service.workers`` worker threads, each training one job at a time in a child process.
SIGTERM drains the API, checkpoints the running jobs and queues them again; the next
start (or another replica on the same database) resumes them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tuneforge.service.runtime import Runtime

log = logging.getLogger("tuneforge.service")
UPLOAD_OVERHEAD = 1 << 20  # multipart framing around the file
STOP_WAIT_S = 120.0  # how long a stopping server waits for running jobs to checkpoint


def build_app(runtime: Runtime) -> tuple[Any, Any]:
    """The app (serving + files + jobs routes) and its serving context."""
    from tuneforge.serve.app import create_app
    from tuneforge.serve.runner import Target, build_context
    from tuneforge.service.api import add_service_routes

    settings = runtime.config.serve.model_copy(deep=True)
    settings.adapters_dir = str(runtime.root / "models")
    target = Target(Path(runtime.base_model_path()), runtime.base_name, settings)
    ctx = build_context(target)
    ctx.body_limits = {"/v1/files": runtime.settings.limits.max_file_bytes + UPLOAD_OVERHEAD}
    app = create_app(ctx)
    add_service_routes(app, runtime)
    return app, ctx


def start_workers(runtime: Runtime, count: int, stop: threading.Event) -> list[threading.Thread]:
    """``count`` worker threads on the runtime's queue, until ``stop`` is set."""
    from tuneforge.service.worker import Worker

    threads = []
    for number in range(count):
        worker = Worker(runtime, f"w{number}", stop)
        thread = threading.Thread(target=worker.run, name=f"tuneforge-worker-{number}")
        thread.start()
        threads.append(thread)
    return threads


def serve_service(runtime: Runtime, host: str, port: int) -> None:
    """Run the service in the foreground until SIGTERM/Ctrl-C."""
    import uvicorn

    from tuneforge.serve.runner import DrainingServer, _json_logging

    _json_logging()
    app, ctx = build_app(runtime)
    stop = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        threads = start_workers(runtime, runtime.settings.workers, stop)
        yield
        ctx.draining = True
        stop.set()
        for thread in threads:
            thread.join(STOP_WAIT_S)
        await ctx.engine.close()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(runtime.config.serve.request_timeout_s) + 5,
    )
    DrainingServer(config, ctx).run()
