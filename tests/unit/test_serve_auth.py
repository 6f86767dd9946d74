"""API keys (env, file, tenants, every wrong key refused) and the per-tenant rate limit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tuneforge.config.serve_schema import AuthConfig
from tuneforge.errors import ConfigError
from tuneforge.serve.auth import (
    ApiKey,
    KeyRing,
    RateLimiter,
    fingerprint,
    keys_from_env,
    keys_from_file,
    load_keys,
)

KEY_A = "sk-team-a-0123456789abcdef"
KEY_B = "sk-team-b-fedcba9876543210"


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_env_keys_with_and_without_tenant_names() -> None:
    keys = keys_from_env("KEYS", {"KEYS": f" alpha:{KEY_A} ,, {KEY_B} ,"})
    assert keys == [ApiKey("alpha", KEY_A), ApiKey(fingerprint(KEY_B), KEY_B)]
    assert fingerprint(KEY_B).startswith("key-") and len(fingerprint(KEY_B)) == 12
    assert KEY_A not in repr(keys)  # a key never shows in a repr (nor in logs made from it)
    assert keys_from_env("UNSET", {}) == []


def test_file_keys_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"# production keys\n\nalpha:{KEY_A}\n   # rotated\nbeta:{KEY_B}\n")
    assert keys_from_file(path) == [ApiKey("alpha", KEY_A), ApiKey("beta", KEY_B)]


def test_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.txt"):
        keys_from_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text(f"ok:{KEY_A}\nbad name:{KEY_B}\n")
    with pytest.raises(ConfigError, match=r"bad\.txt:2: tenant name 'bad name'"):
        keys_from_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("alpha:\n")
    with pytest.raises(ConfigError, match=r"empty\.txt:1: an API key is empty"):
        keys_from_file(empty)


def test_load_keys_joins_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"beta:{KEY_B}\n")
    config = AuthConfig(api_keys_env="MY_KEYS", api_keys_file="keys.txt")
    ring = load_keys(config, environ={"MY_KEYS": f"alpha:{KEY_A}"}, base_dir=tmp_path)
    assert ring.enabled and len(ring) == 2
    assert ring.tenants() == ["alpha", "beta"]
    assert not load_keys(AuthConfig(), environ={}).enabled  # no keys: auth is off


def test_authenticate_finds_the_tenant() -> None:
    ring = KeyRing([ApiKey("alpha", KEY_A), ApiKey("beta", KEY_B), ApiKey("alpha", "sk-rotated")])
    assert ring.authenticate(f"Bearer {KEY_A}") == "alpha"
    assert ring.authenticate(f"bearer   {KEY_B} ") == "beta"
    assert ring.authenticate(KEY_B) == "beta"  # a bare key (X-API-Key)
    assert ring.authenticate("Bearer sk-rotated") == "alpha"  # two keys, one tenant
    assert ring.authenticate(None) is None
    assert ring.authenticate("") is None
    assert ring.authenticate("Bearer ") is None
    assert ring.authenticate(f"Basic {KEY_A}") is None


def test_every_wrong_key_is_refused() -> None:
    ring = KeyRing([ApiKey("alpha", KEY_A)])
    # Every prefix and extension, a changed last character, other lengths and bytes.
    wrong = [KEY_A[:n] for n in range(len(KEY_A))]
    wrong += [KEY_A + "x", KEY_A[:-1] + "g", KEY_A.upper(), " " * len(KEY_A), "é" * 40]
    wrong += ["x" * n for n in (1, 16, 26, 64, 1000)]
    assert [ring.authenticate(f"Bearer {key}") for key in wrong] == [None] * len(wrong)


def test_one_key_for_two_tenants_is_an_error() -> None:
    with pytest.raises(ConfigError, match="one API key is given to tenants 'alpha' and 'beta'"):
        KeyRing([ApiKey("alpha", KEY_A), ApiKey("beta", KEY_A)])


def test_rate_limit_allows_a_burst_then_refills_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, clock=clock)  # one a second, bursts of 60
    assert [limiter.acquire("alpha") for _ in range(60)] == [None] * 60
    assert limiter.acquire("alpha") == pytest.approx(1.0)
    assert limiter.acquire("beta") is None  # tenants have their own buckets
    clock.now += 0.5
    assert limiter.acquire("alpha") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("alpha") is None
    assert limiter.acquire("alpha") == pytest.approx(1.0)
    clock.now += 3600  # an idle hour refills to the burst, not beyond
    assert sum(limiter.acquire("alpha") is None for _ in range(100)) == 60


def test_burst_and_retry_after_header() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=2, clock=clock)  # one every 10 s
    assert [limiter.acquire("t") for _ in range(2)] == [None, None]
    wait = limiter.acquire("t")
    assert wait == pytest.approx(10.0)
    assert RateLimiter.retry_after_header(wait) == "10"
    assert RateLimiter.retry_after_header(0.01) == "1"
    assert RateLimiter.retry_after_header(9.2) == "10"
    clock.now += 10
    assert limiter.acquire("t") is None
    with pytest.raises(ConfigError, match="rate_limit_per_minute=0"):
        RateLimiter(per_minute=0)


def test_rate_limit_is_exact_under_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=100, clock=clock)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        results = [limiter.acquire("t") is None for _ in range(100)]
        with lock:
            allowed.extend(results)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (sum(allowed), len(allowed)) == (100, 400)


def test_idle_buckets_are_pruned_past_max_tenants() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, clock=clock, max_tenants=3)
    for tenant in ("a", "b", "c"):
        limiter.acquire(tenant)
    clock.now += 1.0  # a, b, c are full again
    assert len(limiter) == 3
    limiter.acquire("d")
    assert len(limiter) == 1  # only d's bucket is left
    assert limiter.acquire("a") is None
