"""The response cache: what the key covers, tenant isolation, LRU eviction, TTL, counters."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import pytest

from tuneforge.config.serve_schema import CacheConfig
from tuneforge.serve.cache import (
    NOT_IN_KEY,
    MemoryCache,
    RedisCache,
    build_cache,
    cache_key,
    cacheable,
    dump_generation,
    load_generation,
    request_key,
)
from tuneforge.serve.types import Choice, Generation, GenerationRequest


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def generation(text: str = "hello", finish: str = "stop") -> Generation:
    return Generation(
        choices=[Choice(text=text, token_ids=[5, 6, 7], finish_reason=finish)],
        prompt_tokens=4,
        completion_tokens=3,
        timings={"total_s": 0.25},
    )


BASE = dict(
    max_tokens=64,
    temperature=0.0,
    top_p=1.0,
    stop=["\n\n"],
    n=1,
    seed=None,
    adapter="support",
)
# One other value for every input of the key.
CHANGES = {
    "tenant": "team-b",
    "model": "tiny-2",
    "adapter_version": "sha256:bbb",
    "prompt": [1, 2, 4],
    "response_format": {"type": "json_object"},
    "max_tokens": 65,
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["\n"],
    "n": 2,
    "seed": 7,
    "adapter": "legal",
    "frequency_penalty": 0.5,  # a parameter the key has never heard of counts too
}


def key_with(**change: object) -> str:
    args = {
        "tenant": "team-a",
        "model": "tiny",
        "adapter_version": "sha256:aaa",
        "prompt": [1, 2, 3],
        "response_format": None,
    }
    sampling = dict(BASE)
    for name, value in change.items():
        (args if name in args else sampling)[name] = value
    return cache_key(
        args["tenant"],
        args["model"],
        args["adapter_version"],
        args["prompt"],
        response_format=args["response_format"],
        **sampling,
    )


def test_changing_any_input_changes_the_key() -> None:
    base = key_with()
    keys = {name: key_with(**{name: value}) for name, value in CHANGES.items()}
    assert len(base) == 64 and int(base, 16) >= 0
    assert all(key != base for key in keys.values())
    assert len(set(keys.values())) == len(CHANGES)  # and no two changes collide


def test_the_key_is_canonical() -> None:
    base = key_with()
    assert key_with(temperature=0) == base  # int 0 and float 0.0 are one request
    assert key_with(stop=("\n\n",)) == base  # tuple or list
    assert key_with(prompt=(1, 2, 3)) == base
    assert key_with(prompt="1 2 3") != base  # text and ids are different prompts
    # The key is SHA-256 over this exact JSON: a change of format must bump KEY_VERSION.
    canonical = (
        '{"adapter_version":null,"model":"m","prompt":[1],"response_format":null,'
        '"sampling":{"seed":null,"temperature":0.0},"tenant":"t","v":1}'
    )
    assert cache_key("t", "m", None, [1], temperature=0, seed=None) == (
        hashlib.sha256(canonical.encode()).hexdigest()
    )


def test_request_key_covers_every_field_of_a_request() -> None:
    request = GenerationRequest(prompt_ids=(1, 2, 3), adapter="support", stop=("\n",))
    base = request_key("team-a", "tiny", "v1", request)
    others = {
        "prompt_ids": (1, 2),
        "adapter": None,
        "max_tokens": 10,
        "temperature": 0.5,
        "top_p": 0.5,
        "stop": (),
        "n": 3,
        "seed": 1,
        "request_id": "req-2",
        "timeout_s": 5.0,
    }
    assert set(others) == {f.name for f in dataclasses.fields(GenerationRequest)}
    for name, value in others.items():
        changed = request_key("team-a", "tiny", "v1", dataclasses.replace(request, **{name: value}))
        assert (changed == base) is (name in NOT_IN_KEY - {"prompt_ids"}), name
    assert request_key("team-b", "tiny", "v1", request) != base
    assert request_key("team-a", "tiny", "v2", request) != base
    assert request_key("team-a", "tiny", "v1", request, {"type": "json_object"}) != base


def test_cacheable_means_repeatable() -> None:
    assert cacheable(GenerationRequest(prompt_ids=(1,), temperature=0.0))
    assert cacheable(GenerationRequest(prompt_ids=(1,), temperature=0.8, seed=3))
    assert not cacheable(GenerationRequest(prompt_ids=(1,), temperature=0.8))


def test_a_generation_round_trips_without_timings() -> None:
    original = generation('héllo "quoted"')
    loaded = load_generation(dump_generation(original))
    assert loaded.choices == original.choices
    assert (loaded.prompt_tokens, loaded.completion_tokens) == (4, 3)
    assert loaded.timings == {}


def test_tenants_never_share_an_entry() -> None:
    cache = MemoryCache(max_entries=10)
    request = GenerationRequest(prompt_ids=(1, 2, 3))
    key_a = request_key("team-a", "tiny", None, request)
    key_b = request_key("team-b", "tiny", None, request)
    cache.set(key_a, generation("for a"))
    assert cache.get(key_b) is None
    assert cache.get(key_a).choices[0].text == "for a"
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1


def test_least_recently_used_is_evicted_first() -> None:
    cache = MemoryCache(max_entries=2)
    cache.set("a", generation("a"))
    cache.set("b", generation("b"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.set("c", generation("c"))
    assert cache.get("b") is None
    assert [cache.get(k).choices[0].text for k in ("a", "c")] == ["a", "c"]
    assert len(cache) == 2
    stats = cache.stats()
    assert (stats["sets"], stats["evictions"], stats["hits"], stats["misses"]) == (3, 1, 3, 1)


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=10, ttl_s=30, clock=clock)
    cache.set("k", generation())
    clock.now += 29.9
    assert cache.get("k") is not None
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0
    cache.set("k", generation("again"))  # a set after expiry starts a fresh TTL
    clock.now += 29
    assert cache.get("k").choices[0].text == "again"
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (2, 1, 1)


def test_cancelled_results_are_not_stored() -> None:
    cache = MemoryCache()
    cache.set("k", generation(finish="cancelled"))
    assert cache.get("k") is None
    assert cache.stats()["skipped"] == 1 and cache.stats()["sets"] == 0


def test_a_stored_entry_is_a_copy() -> None:
    cache = MemoryCache()
    original = generation("kept")
    cache.set("k", original)
    original.choices[0].text = "changed by the caller"
    first = cache.get("k")
    first.choices[0].token_ids.append(99)
    assert cache.get("k").choices[0].text == "kept"
    assert cache.get("k").choices[0].token_ids == [5, 6, 7]


def test_counters_balance_under_threads() -> None:
    cache = MemoryCache(max_entries=50)

    def work(worker: int) -> None:
        for i in range(200):
            key = f"w{worker}-{i % 20}"  # 80 keys in all, no key shared by two threads
            if cache.get(key) is None:
                cache.set(key, generation(key))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 800
    assert stats["sets"] == stats["misses"]
    assert len(cache) == 50
    assert stats["evictions"] == stats["sets"] - 50


def test_build_cache_follows_the_config() -> None:
    assert build_cache(CacheConfig(enabled=False)) is None
    memory = build_cache(CacheConfig(max_entries=3, ttl_s=9))
    assert isinstance(memory, MemoryCache)
    assert (memory.max_entries, memory.ttl_s) == (3, 9)
    pytest.importorskip("redis")
    shared = build_cache(CacheConfig(redis_url="redis://127.0.0.1:1/0", ttl_s=9))
    assert isinstance(shared, RedisCache)  # made without connecting
    assert shared.ttl_s == 9
