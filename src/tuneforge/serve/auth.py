"""API keys and per-key rate limits of the server.

Keys come from an environment variable (comma-separated) and/or a file (one a line,
``#`` comments); ``name:key`` names the key's tenant, and a key without a name gets
``key-<first 8 hex of its SHA-256>``, so logs, metrics and cache keys never hold a key.
Two keys may share a tenant (rotation); one key may not have two tenants.

A presented key is compared with every key, always all of them, as SHA-256 digests
with :func:`hmac.compare_digest`: the time taken says neither which key came close nor
how long the keys are.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    from tuneforge.config.serve_schema import AuthConfig

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_BEARER = re.compile(r"^bearer\s+", re.IGNORECASE)


@dataclass(frozen=True)
class ApiKey:
    """One key and the tenant it stands for (the key is left out of repr)."""

    tenant: str
    key: str = field(repr=False)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str) -> str:
    """The tenant name of an unnamed key: ``key-`` and 8 hex of its SHA-256."""
    return f"key-{_digest(key).hex()[:8]}"


def parse_key(entry: str, where: str) -> ApiKey:
    """``name:key`` or ``key`` as an :class:`ApiKey`.

    Raises:
        ConfigError: an empty key, or a tenant name that is not a short label.
    """
    name, sep, key = entry.strip().partition(":")
    if not sep:
        name, key = "", name
    if not key:
        raise ConfigError(f"{where}: an API key is empty; write name:key or key")
    if sep and not _TENANT.fullmatch(name):
        raise ConfigError(
            f"{where}: tenant name {name!r} must be up to 64 letters, digits, '_', '.', '-'"
        )
    return ApiKey(name or fingerprint(key), key)


def keys_from_env(name: str, environ: Mapping[str, str] | None = None) -> list[ApiKey]:
    """The comma-separated keys in environment variable ``name`` ([] when unset or empty)."""
    raw = (os.environ if environ is None else environ).get(name, "")
    return [parse_key(item, f"${name}") for item in raw.split(",") if item.strip()]


def keys_from_file(path: str | Path) -> list[ApiKey]:
    """The keys in a file: one a line; blank lines and ``#`` comments are skipped.

    Raises:
        ConfigError: the file cannot be read, or a line is not a key.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(
            f"serve.auth.api_keys_file: cannot read {path} ({err.strerror}); fix the path"
        ) from None
    return [
        parse_key(line, f"{path}:{number}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class KeyRing:
    """The server's API keys; empty means auth is off.

    Raises:
        ConfigError: the same key is given to two tenants.
    """

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        tenants: dict[str, str] = {}
        for api_key in keys:
            if tenants.setdefault(api_key.key, api_key.tenant) != api_key.tenant:
                raise ConfigError(
                    f"serve.auth: one API key is given to tenants {tenants[api_key.key]!r} "
                    f"and {api_key.tenant!r}; give each tenant its own key"
                )
        self._digests = [(_digest(key), tenant) for key, tenant in tenants.items()]

    @property
    def enabled(self) -> bool:
        """Whether any key is set (then every route but health, ready and ping needs one)."""
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def tenants(self) -> list[str]:
        """The tenant names, each once."""
        return list(dict.fromkeys(tenant for _, tenant in self._digests))

    def authenticate(self, header_value: str | None) -> str | None:
        """The tenant of a presented key, or None when it matches none.

        Args:
            header_value: ``Authorization`` header value (``Bearer <key>``) or a bare key
                (``X-API-Key``).
        """
        if not header_value:
            return None
        candidate = _digest(_BEARER.sub("", header_value.strip(), count=1).strip())
        found = None
        for digest, tenant in self._digests:  # every key, no early exit
            if hmac.compare_digest(candidate, digest):
                found = tenant
        return found


def load_keys(
    config: AuthConfig, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> KeyRing:
    """The keys ``serve.auth`` names: its environment variable and its file, together.

    Args:
        config: The auth section.
        environ: Environment to read (the process's when None).
        base_dir: Folder a relative ``api_keys_file`` is relative to (else the working dir).
    """
    keys = keys_from_env(config.api_keys_env, environ)
    if config.api_keys_file:
        path = Path(config.api_keys_file)
        keys += keys_from_file(base_dir / path if base_dir and not path.is_absolute() else path)
    return KeyRing(keys)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per tenant: ``per_minute`` requests a minute, bursts up to ``burst``.

    Args:
        per_minute: Refill rate, in requests per minute.
        burst: Bucket size (a full bucket is what an idle tenant may send at once);
            ``per_minute`` when None.
        clock: Monotonic seconds (tests pass their own).
        max_tenants: Buckets kept; past it, full (idle) buckets are dropped.
    """

    def __init__(
        self,
        per_minute: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 10_000,
    ) -> None:
        if per_minute <= 0 or (burst is not None and burst < 1):
            raise ConfigError(
                f"serve.auth.rate_limit_per_minute={per_minute}: must be positive (burst >= 1)"
            )
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(per_minute, 1.0))
        self.max_tenants = max_tenants
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> float | None:
        """Take one request from ``tenant``'s bucket.

        Returns:
            None when allowed; else the seconds until a request would be (Retry-After).
        """
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                self._prune(now)
                bucket = self._buckets[tenant] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        """Tenants with a bucket."""
        with self._lock:
            return len(self._buckets)

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        """``seconds`` as a Retry-After value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(seconds)))

    def _prune(self, now: float) -> None:
        if len(self._buckets) < self.max_tenants:
            return
        for tenant, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.capacity:
                del self._buckets[tenant]
