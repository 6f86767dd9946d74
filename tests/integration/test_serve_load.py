"""A bounded load test through real HTTP: no 5xx, every request answered or told to retry.

2,000 requests from 32 concurrent clients: non-streaming, streaming, and streams
the client abandons after the first chunk. The queue is kept small so some are
refused with 429; the test asserts that nothing else goes wrong, that no row is
left running, and that the server's memory does not grow from one half to the next.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import resource
from pathlib import Path

import httpx
import pytest

from serve_support import running_server
from tuneforge.config.serve_schema import ServeConfig

CLIENTS = 32
REQUESTS = 2000


async def one(client: httpx.AsyncClient, index: int, counts: collections.Counter) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": f"Ticket {index % 50}: my order is late"}],
        "max_tokens": 6,
        "temperature": 0.7,
        "seed": index,
        "stream": index % 3 != 0,
    }
    if not body["stream"]:
        answer = await client.post("/v1/chat/completions", json=body)
        counts[answer.status_code] += 1
        if answer.status_code == 200:
            assert answer.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return
    async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
        counts[answer.status_code] += 1
        if answer.status_code != 200:
            await answer.aread()
            return
        async for line in answer.aiter_lines():
            if index % 3 == 2 and line.startswith("data: "):
                counts["abandoned"] += 1
                return  # the client goes away mid-stream
            if line == "data: [DONE]":
                counts["completed_streams"] += 1


async def load(url: str, start: int, total: int, counts: collections.Counter) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(start, start + total):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                await one(client, queue.get_nowait(), counts)

        await asyncio.gather(*(worker() for _ in range(CLIENTS)))


def rss_mb() -> float:
    gc.collect()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_two_thousand_requests_from_32_clients(tiny_model_dir: Path) -> None:
    settings = ServeConfig(max_batch=16, max_queue=24, cache={"enabled": False})
    counts: collections.Counter = collections.Counter()
    with running_server(tiny_model_dir, settings) as (url, ctx):
        asyncio.run(load(url, 0, REQUESTS // 2, counts))
        half = rss_mb()
        asyncio.run(load(url, REQUESTS // 2, REQUESTS // 2, counts))
        after = rss_mb()
        stats = ctx.engine.stats()
    answered = counts[200] + counts[429]
    assert answered == REQUESTS, counts
    assert not [code for code in counts if isinstance(code, int) and code >= 500], counts
    assert counts[200] > REQUESTS / 2, counts  # most get through; the rest were told to retry
    assert counts["abandoned"] > 100 and counts["completed_streams"] > 100, counts
    assert stats["running"] == 0 and stats["queue_depth"] == 0, stats
    assert after - half < 64, (half, after)  # peak RSS flat from one half to the next
