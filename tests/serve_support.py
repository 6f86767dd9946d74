"""A real tuneforge server on a loopback port, in a thread, for the serving tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from tuneforge.config.serve_schema import ServeConfig
from tuneforge.serve.app import create_app
from tuneforge.serve.handlers import ServeContext
from tuneforge.serve.runner import Target, build_context


def make_registry(root: Path, model_dir: Path, names: tuple[str, ...] = ("alpha", "beta")) -> Path:
    """LoRA adapters with random B matrices large enough to change replies, one per name."""
    import torch

    from tuneforge.config.schema import Config
    from tuneforge.train.adapters import save_adapter
    from tuneforge.train.methods import prepare_model

    for seed, name in enumerate(names):
        method = {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "adapter_name": name}
        config = Config(
            name="t", model={"name_or_path": str(model_dir)}, data={"path": "-"}, method=method
        )
        model = prepare_model(str(model_dir), config, torch.float32, torch.device("cpu"))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        save_adapter(model, root / name, name)
    return root


@contextlib.contextmanager
def running_server(
    model_dir: Path,
    settings: ServeConfig | None = None,
    name: str = "tiny",
    engine: Any = None,
    extend: Callable[[Any], None] | None = None,
) -> Iterator[tuple[str, ServeContext]]:
    """Start the app (with ``extend(app)``'s routes) under uvicorn on a free port; yield its
    base URL and context."""
    ctx = build_context(Target(Path(model_dir), name, settings or ServeConfig()), engine)
    app = create_app(ctx)
    if extend is not None:
        extend(app)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and ctx.engine.ready):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", ctx
    finally:
        server.should_exit = True
        thread.join(30)
        import asyncio

        asyncio.run(ctx.engine.close())


def fuzz_operations(
    operations: list[Any],
    url: str,
    examples: int,
    prepare: Callable[[Any], None] | None = None,
) -> dict[str, set[int]]:
    """schemathesis cases of each operation against ``url``: none may answer 5xx.

    Returns:
        The status codes seen per operation label.
    """
    from hypothesis import HealthCheck, given, settings

    seen: dict[str, set[int]] = {}
    for operation in operations:

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(operation.as_strategy())
        def check(case: Any) -> None:
            if prepare is not None:
                prepare(case)
            response = case.call(base_url=url, timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.operation.label, response.text[:300])

        check()
    return seen
