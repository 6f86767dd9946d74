"""Serving through HTTP: a response-cache hit against the same request generated.

Usage: ``python benchmarks/serve_cache.py [--requests N] [--max-new-tokens M] [--redis URL]``
(about a minute on 2 CPU cores).

The server is the real app under uvicorn on a loopback port, with the project's tiny model
(built into a temporary folder, 20 pre-training steps). One client sends the same
deterministic chat request (temperature 0) ``--requests`` times one after another:

* **generated**, the baseline: the cache is off, so every request runs the model;
* **cache hit**: the cache is on (in-process LRU, or Redis with ``--redis``), warmed by one
  request; every timed request is a hit.

Latency is the client's wall time per request (HTTP, JSON, auth-free). The target: the cache
hit's p99 is below 5 ms; the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serve_support import running_server
from tuneforge.config.schema import TinyModelConfig
from tuneforge.config.serve_schema import ServeConfig
from tuneforge.console import quiet_libraries
from tuneforge.models.tiny import build_tiny_model

TARGET_P99_MS = 5.0


def timed(url: str, body: dict, count: int) -> list[float]:
    """Milliseconds per request, ``count`` requests one after another on one connection."""
    found = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/v1/chat/completions", json=body).raise_for_status()  # warm (and fill)
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post("/v1/chat/completions", json=body)
            found.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
    return found


def row(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"| {name} | {statistics.median(ordered):.2f} | {p99:.2f} | {len(ordered)} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--redis", default=None, help="redis://... for the shared cache")
    args = parser.parse_args()
    quiet_libraries()
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "My parcel has not arrived yet."}],
        "max_tokens": args.max_new_tokens,
        "temperature": 0,
    }
    with tempfile.TemporaryDirectory() as work:
        model = Path(work) / "tiny"
        build_tiny_model(model, TinyModelConfig(pretrain_steps=20), seed=0)
        off = ServeConfig.model_validate({"cache": {"enabled": False}})
        with running_server(model, off) as (url, _):
            generated = timed(url, body, max(20, args.requests // 10))
        cache = {"redis_url": args.redis} if args.redis else {}
        with running_server(model, ServeConfig.model_validate({"cache": cache})) as (url, ctx):
            hits = timed(url, body, args.requests)
            assert ctx.cache is not None and ctx.cache.stats()["hits"] >= args.requests
    backend = "Redis" if args.redis else "in-process LRU"
    print("| run | p50 ms | p99 ms | requests |\n|---|---|---|---|")
    print(row("generated (baseline, cache off)", generated))
    print(row(f"cache hit ({backend})", hits))
    p99 = sorted(hits)[min(len(hits) - 1, int(0.99 * len(hits)))]
    speedup = statistics.median(generated) / statistics.median(hits)
    print(
        f"\ncache hit p50 is {speedup:.0f}x faster than generating; p99 {p99:.2f} ms "
        f"(target < {TARGET_P99_MS} ms)"
    )
    return 0 if p99 < TARGET_P99_MS else 1


if __name__ == "__main__":
    sys.exit(main())
