"""The Redis response cache against a real redis-server: sharing, TTL, isolation, outages."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from tuneforge.serve.cache import NAMESPACE, RedisCache, request_key
from tuneforge.serve.types import Choice, Generation, GenerationRequest

pytestmark = pytest.mark.redis
redis = pytest.importorskip("redis", reason="redis-py missing; pip install -e '.[serve]'")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def generation(text: str) -> Generation:
    choice = Choice(text=text, token_ids=[11, 12], finish_reason="length")
    return Generation(choices=[choice], prompt_tokens=3, completion_tokens=2)


def test_entries_are_shared_namespaced_and_expire(redis_server: str) -> None:
    writer = RedisCache(redis_server, ttl_s=30)
    reader = RedisCache(redis_server, ttl_s=30)  # another server process, same Redis
    key = request_key("team-a", "tiny", None, GenerationRequest(prompt_ids=(1, 2)))
    writer.set(key, generation("shared"))
    hit = reader.get(key)
    assert hit is not None and hit.choices[0].text == "shared"
    assert (hit.choices[0].token_ids, hit.completion_tokens) == ([11, 12], 2)
    client = redis.Redis.from_url(redis_server)
    assert client.keys("*") == [f"{NAMESPACE}{key}".encode()]
    assert 28 <= client.ttl(f"{NAMESPACE}{key}") <= 30  # SET ... EX 30
    assert writer.stats()["sets"] == 1 and reader.stats()["hits"] == 1
    client.close()


def test_redis_expires_entries_after_ttl(redis_server: str) -> None:
    cache = RedisCache(redis_server, ttl_s=1)
    cache.set("k", generation("brief"))
    assert cache.get("k") is not None
    time.sleep(1.2)
    assert cache.get("k") is None
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (1, 1)


def test_tenants_never_share_an_entry(redis_server: str) -> None:
    cache = RedisCache(redis_server)
    request = GenerationRequest(prompt_ids=(5, 6, 7), seed=3, temperature=0.9)
    key_a = request_key("team-a", "tiny", "v1", request)
    key_b = request_key("team-b", "tiny", "v1", request)
    cache.set(key_a, generation("a's answer"))
    assert cache.get(key_b) is None
    cache.set(key_b, generation("b's answer"))
    assert [cache.get(k).choices[0].text for k in (key_a, key_b)] == ["a's answer", "b's answer"]


def test_a_corrupt_entry_is_a_miss(redis_server: str) -> None:
    cache = RedisCache(redis_server)
    client = redis.Redis.from_url(redis_server)
    client.set(f"{NAMESPACE}bad", b"{not json")
    assert cache.get("bad") is None
    assert (cache.stats()["errors"], cache.stats()["misses"]) == (1, 1)
    client.close()


def test_redis_dying_mid_request_stream_is_a_miss_logged_once(
    redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    cache = RedisCache(redis_server, backoff_s=5.0, clock=clock)
    cache.set("k", generation("before"))
    assert cache.get("k") is not None
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="tuneforge.serve.cache")

    assert cache.get("k") is None  # fails: counted, logged, then backed off
    cache.set("k2", generation("dropped"))  # backed off: not even tried
    assert cache.get("k") is None
    clock.now += 5.0
    assert cache.get("k") is None  # tried again, fails again, not logged again
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["errors"], stats["sets"]) == (1, 3, 2, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis GET failed" in warnings[0].getMessage()

    restarted = subprocess.Popen(
        redis_server.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(redis_server):
            assert time.monotonic() < deadline, "the restarted redis-server never answered"
            time.sleep(0.02)
        clock.now += 5.0
        assert cache.get("k") is None  # answers again, but a restart without persistence
        cache.set("k", generation("after"))
        assert cache.get("k").choices[0].text == "after"
        assert cache.stats()["errors"] == 2
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        restarted.kill()
        restarted.wait(timeout=10)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_an_unreachable_redis_never_raises() -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", timeout_s=0.2)
    cache.set("k", generation("nowhere"))
    assert cache.get("k") is None
    stats = cache.stats()
    assert (stats["errors"], stats["misses"], stats["sets"]) == (1, 1, 0)
