"""Exact-match response cache for deterministic requests: in-process LRU or Redis.

A request is cacheable when its output is a function of its input: greedy decoding
(temperature 0) or sampling with a fixed seed. The key is a SHA-256 over a canonical
JSON of everything that can change the output (model, adapter and its version, the
rendered prompt, every sampling parameter, ``response_format``) and of the tenant, so
two API keys never share an entry, even for the same request.

Entries hold the :class:`~tuneforge.serve.types.Generation` as JSON (its choices and
token counts; timings belong to the request that measured them). The backends are
synchronous; the Redis one uses short socket timeouts, and an async caller that wants
no blocking at all runs it in a thread (``asyncio.to_thread``). A Redis failure never
fails a request: it is counted, logged once per outage, and reads as a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tuneforge.errors import ConfigError
from tuneforge.serve.types import Choice, Generation, GenerationRequest

if TYPE_CHECKING:
    from tuneforge.config.serve_schema import CacheConfig

log = logging.getLogger(__name__)

KEY_VERSION = 1  # bump when the key's payload changes: old entries then simply miss
NAMESPACE = "tuneforge:cache:"
# Fields of a GenerationRequest that cannot change its output; every other field (any
# sampling parameter added later included) goes into the key.
NOT_IN_KEY = frozenset({"prompt_ids", "request_id", "timeout_s"})
COUNTERS = ("hits", "misses", "sets", "skipped", "evictions", "expirations", "errors")
Clock = Callable[[], float]


def _canonical(value: Any) -> Any:
    """``value`` with tuples as lists and mapping keys as strings, for a stable JSON."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def cache_key(
    tenant: str,
    model: str,
    adapter_version: str | None,
    prompt: Sequence[int] | str,
    *,
    response_format: Mapping[str, Any] | None = None,
    **sampling: Any,
) -> str:
    """The cache key of one request: SHA-256 hex over a canonical JSON of all its inputs.

    Args:
        tenant: Who asks (the API key's tenant name; "" without auth). Entries are never
            shared between tenants.
        model: Name of the base model served.
        adapter_version: Content hash (or version) of the adapter; None for the base model.
        prompt: The rendered prompt: token ids, or its text.
        response_format: The OpenAI ``response_format`` (JSON mode changes the reply).
        **sampling: Every sampling parameter: max_tokens, temperature, top_p, stop, n,
            seed, adapter name, and any other that can change the output.

    Returns:
        64 hex characters.
    """
    if "temperature" in sampling:  # 0 and 0.0 are the same request
        sampling["temperature"] = float(sampling["temperature"])
    if "top_p" in sampling:
        sampling["top_p"] = float(sampling["top_p"])
    payload = {
        "v": KEY_VERSION,
        "tenant": tenant,
        "model": model,
        "adapter_version": adapter_version,
        "prompt": prompt if isinstance(prompt, str) else [int(t) for t in prompt],
        "response_format": _canonical(response_format),
        "sampling": _canonical(sampling),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def request_key(
    tenant: str,
    model: str,
    adapter_version: str | None,
    request: GenerationRequest,
    response_format: Mapping[str, Any] | None = None,
) -> str:
    """:func:`cache_key` of a :class:`GenerationRequest`: every field that shapes the output."""
    sampling = {
        f.name: getattr(request, f.name)
        for f in dataclasses.fields(request)
        if f.name not in NOT_IN_KEY
    }
    return cache_key(
        tenant,
        model,
        adapter_version,
        request.prompt_ids,
        response_format=response_format,
        **sampling,
    )


def cacheable(request: GenerationRequest) -> bool:
    """Whether the request's output is repeatable: greedy, or sampled with a fixed seed."""
    return request.temperature == 0 or request.seed is not None


def dump_generation(generation: Generation) -> str:
    """The generation as the JSON an entry holds (choices and token counts, not timings)."""
    return json.dumps(
        {
            "choices": [dataclasses.asdict(choice) for choice in generation.choices],
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def load_generation(text: str | bytes) -> Generation:
    """The generation an entry holds. Raises ValueError (or KeyError, TypeError) if corrupt."""
    data = json.loads(text)
    return Generation(
        choices=[Choice(**choice) for choice in data["choices"]],
        prompt_tokens=int(data["prompt_tokens"]),
        completion_tokens=int(data["completion_tokens"]),
    )


def storable(generation: Generation) -> bool:
    """Whether to cache a result: a cancelled (timed-out) choice is not the request's answer."""
    return all(choice.finish_reason != "cancelled" for choice in generation.choices)


class ResponseCache(Protocol):
    """What the HTTP layer needs from a cache backend."""

    def get(self, key: str) -> Generation | None:
        """The cached generation, or None (a miss, also when the backend fails)."""
        ...

    def set(self, key: str, generation: Generation) -> None:
        """Store a generation under ``key`` (with the backend's TTL); never raises."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for metrics: hits, misses, sets, skipped, evictions, expirations, errors."""
        ...


class _Counted:
    """Thread-safe counters shared by the backends."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._count_lock:
            self._counts[name] += amount

    def stats(self) -> dict[str, int]:
        """Counters for metrics: hits, misses, sets, skipped, evictions, expirations, errors."""
        with self._count_lock:
            return {name: self._counts[name] for name in COUNTERS}


class MemoryCache(_Counted):
    """In-process LRU with a TTL; thread-safe.

    Args:
        max_entries: Entries kept; the least recently used goes first.
        ttl_s: Seconds an entry lives.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self, max_entries: int = 4096, ttl_s: float = 3600, clock: Clock = time.monotonic
    ) -> None:
        super().__init__()
        if max_entries < 1 or ttl_s <= 0:
            raise ConfigError(
                f"serve.cache: max_entries={max_entries}, ttl_s={ttl_s}; both must be positive"
            )
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key: (expiry, json)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str) -> Generation | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= self._clock():
                del self._entries[key]
                self._count("expirations")
                entry = None
            if entry is None:
                self._count("misses")
                return None
            self._entries.move_to_end(key)
        self._count("hits")
        return load_generation(entry[1])

    def set(self, key: str, generation: Generation) -> None:
        if not storable(generation):
            self._count("skipped")
            return
        value = dump_generation(generation)
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl_s, value)
            self._entries.move_to_end(key)
            evicted = 0
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                evicted += 1
        self._count("sets")
        if evicted:
            self._count("evictions", evicted)


def _redis_module() -> Any:
    try:
        import redis
    except ImportError as err:
        raise ConfigError(
            "serve.cache.redis_url: redis-py is not installed; pip install 'tuneforge[serve]', "
            "or set serve.cache.redis_url: null for the in-process cache"
        ) from err
    return redis


class RedisCache(_Counted):
    """Shared cache in Redis: ``SET tuneforge:cache:<key> <json> EX <ttl>``.

    A failing Redis reads as a miss and a set is dropped: each failure is counted in
    ``errors``, the first of an outage is logged (and the recovery), and Redis is not
    asked again for ``backoff_s`` so that a dead server costs one timeout, not one a request.

    Args:
        url: ``redis://host:port/db`` (``rediss://``, ``unix://`` too).
        ttl_s: Seconds an entry lives (Redis expires it).
        namespace: Prefix of every key.
        timeout_s: Connect and read timeout of each command.
        backoff_s: Seconds to serve without Redis after a failure.
        clock: Monotonic seconds (tests pass their own).
        client: A ready redis-py client (else one is made from ``url``).
    """

    def __init__(
        self,
        url: str,
        ttl_s: int = 3600,
        *,
        namespace: str = NAMESPACE,
        timeout_s: float = 0.5,
        backoff_s: float = 1.0,
        clock: Clock = time.monotonic,
        client: Any = None,
    ) -> None:
        super().__init__()
        redis = _redis_module()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if int(ttl_s) != ttl_s or ttl_s < 1:
            raise ConfigError(f"serve.cache.ttl_s={ttl_s}: Redis expiry needs whole seconds >= 1")
        self.ttl_s = int(ttl_s)
        self.namespace = namespace
        self.backoff_s = backoff_s
        self._clock = clock
        # One immediate retry: a pooled connection that went stale (Redis restarted)
        # reconnects, while a dead server fails fast.
        self._client = client or redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._errors = (redis.RedisError, OSError)
        self._state_lock = threading.Lock()
        self._down_until: float | None = None

    def _call(self, op: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """``(True, fn())``, or ``(False, None)`` when Redis fails or is backed off."""
        now = self._clock()
        with self._state_lock:
            if self._down_until is not None and now < self._down_until:
                return False, None
        try:
            result = fn()
        except self._errors as err:
            self._count("errors")
            with self._state_lock:
                first = self._down_until is None
                self._down_until = now + self.backoff_s
            if first:
                log.warning(
                    "response cache: Redis %s failed (%s: %s); serving without the cache "
                    "until it answers",
                    op,
                    type(err).__name__,
                    err,
                )
            return False, None
        with self._state_lock:
            recovered, self._down_until = self._down_until is not None, None
        if recovered:
            log.info("response cache: Redis answers again")
        return True, result

    def get(self, key: str) -> Generation | None:
        ok, raw = self._call("GET", lambda: self._client.get(self.namespace + key))
        if not ok or raw is None:
            self._count("misses")
            return None
        try:
            generation = load_generation(raw)
        except (ValueError, KeyError, TypeError):
            self._count("errors")
            self._count("misses")
            return None
        self._count("hits")
        return generation

    def set(self, key: str, generation: Generation) -> None:
        if not storable(generation):
            self._count("skipped")
            return
        value = dump_generation(generation)
        ok, _ = self._call(
            "SET", lambda: self._client.set(self.namespace + key, value, ex=self.ttl_s)
        )
        if ok:
            self._count("sets")

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


def build_cache(config: CacheConfig) -> ResponseCache | None:
    """The backend ``serve.cache`` names: Redis when ``redis_url`` is set, else the LRU.

    Returns:
        None when the cache is off.
    """
    if not config.enabled:
        return None
    if config.redis_url:
        return RedisCache(config.redis_url, ttl_s=config.ttl_s)
    return MemoryCache(config.max_entries, ttl_s=config.ttl_s)
