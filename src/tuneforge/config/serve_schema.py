"""The serve section: the OpenAI-compatible server, its cache, guardrails and auth.

Serving settings never change what a training stage produces, so this section is
meant to be left out of the config hash and of every stage key.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A policy's name is what logs and metric labels show (never the matched text), so it must
# be a short, label-safe word.
_POLICY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORIGIN = re.compile(r"https?://[^/\s]+")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class _Section(BaseModel):
    # The same rules as config.schema.Section, which imports this module (hence no import).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CacheConfig(_Section):
    """Exact-match response cache for deterministic requests (temperature 0 or a seed)."""

    enabled: bool = True
    redis_url: str | None = Field(
        None,
        description="Shared Redis backend, e.g. redis://localhost:6379/0; null: in-process LRU.",
    )
    max_entries: int = Field(4096, ge=1, description="Entries the in-process LRU keeps.")
    ttl_s: int = Field(3600, ge=1, description="Seconds an entry lives.")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(_REDIS_SCHEMES):
            raise ValueError(
                f"not a Redis URL; start it with {', '.join(_REDIS_SCHEMES)} "
                "(e.g. redis://localhost:6379/0), or set null for the in-process cache"
            )
        return url


class RegexPolicy(_Section):
    """A named regular expression; text it matches is blocked or redacted."""

    name: str = Field(description="Shown in logs, metrics and reasons (never the match).")
    pattern: str = Field(description="Python regular expression.")
    action: Literal["block", "redact"] = "block"
    ignore_case: bool = False

    @field_validator("name")
    @classmethod
    def _label_safe(cls, name: str) -> str:
        if not _POLICY_NAME.fullmatch(name):
            raise ValueError(
                "policy names are a letter then up to 63 letters, digits, '_', '.' or '-'"
            )
        return name

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        if not pattern:
            raise ValueError("empty pattern matches everything; write the text to catch")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return pattern


class GuardrailsConfig(_Section):
    """Input and output policies: PII (the data layer's detectors), blocklist, regexes."""

    pii: Literal["off", "redact", "block"] = Field(
        "off", description="redact: typed placeholders (<EMAIL>); block: refuse the text."
    )
    pii_types: list[str] | None = Field(
        None, description="Only these PII types (e.g. [email, secret]); all when null."
    )
    blocklist: list[str] = Field(
        default_factory=list, description="Words or phrases (whole words, any case) to block."
    )
    blocklist_action: Literal["block", "redact"] = "block"
    regex: list[RegexPolicy] = Field(default_factory=list, description="Named regex policies.")
    max_input_tokens: int | None = Field(
        None, ge=1, description="Refuse longer prompts; null: the model's context decides."
    )
    check_json: bool = Field(
        True, description="Block replies that are not valid JSON when response_format asks."
    )
    apply_to: list[Literal["input", "output"]] = Field(
        default_factory=lambda: ["input", "output"],
        description="Which side the PII, blocklist and regex policies look at.",
    )

    @field_validator("pii_types")
    @classmethod
    def _known_types(cls, types: list[str] | None) -> list[str] | None:
        from tuneforge.data.pii import TYPES  # lazily: the detectors compile many regexes

        unknown = sorted(set(types or ()) - set(TYPES))
        if unknown:
            raise ValueError(f"unknown PII type {unknown[0]!r}; choose from {', '.join(TYPES)}")
        return types

    @field_validator("blocklist")
    @classmethod
    def _no_blank_words(cls, words: list[str]) -> list[str]:
        if any(not word.strip() for word in words):
            raise ValueError("the blocklist holds an empty word; remove it")
        return words

    @field_validator("apply_to")
    @classmethod
    def _sides_once(cls, sides: list[str]) -> list[str]:
        if len(set(sides)) != len(sides):
            raise ValueError("list each of input, output at most once")
        return sides

    @model_validator(mode="after")
    def _unique_policy_names(self) -> GuardrailsConfig:
        names = [policy.name for policy in self.regex]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"regex policy name {repeated[0]!r} is used twice; name each once")
        return self


class AuthConfig(_Section):
    """API keys, per-key rate limit and body size limit."""

    api_keys_env: str = Field(
        "TUNEFORGE_API_KEYS",
        description="Environment variable holding comma-separated keys (name:key names a tenant).",
    )
    api_keys_file: str | None = Field(
        None, description="File of keys, one per line (name:key allowed, # comments)."
    )
    rate_limit_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute per key (token bucket); null: no limit."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")

    @field_validator("api_keys_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError("not an environment variable name (letters, digits, '_')")
        return name


class ServeConfig(_Section):
    """``tuneforge serve``: an OpenAI-compatible API over the base model and its adapters."""

    host: str = Field("127.0.0.1", description="0.0.0.0 listens on every interface.")
    port: int = Field(8000, ge=0, le=65535, description="0 picks a free port.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Allowed browser origins; [] turns CORS off."
    )
    max_batch: int = Field(8, ge=1, description="Requests decoded together.")
    max_queue: int = Field(64, ge=1, description="Waiting requests before 429.")
    request_timeout_s: float = Field(120.0, gt=0)
    adapters_dir: str | None = Field(None, description="Folder of adapters to serve by name.")
    max_loaded_adapters: int = Field(4, ge=1, description="Adapters kept in memory (LRU).")
    backend: Literal["local", "vllm"] = "local"
    upstream_url: str | None = Field(
        None, description="The vLLM server's base URL (backend: vllm), e.g. http://vllm:8000."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"origin {origin!r} is not scheme://host[:port] (no path or trailing /) or *"
                )
        return origins

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("start the upstream URL with http:// or https://")
        return url.rstrip("/") if url else url

    @model_validator(mode="after")
    def _upstream_matches_backend(self) -> ServeConfig:
        if self.backend == "vllm" and not self.upstream_url:
            raise ValueError("backend vllm needs upstream_url (the vLLM server's base URL)")
        if self.backend == "local" and self.upstream_url:
            raise ValueError("upstream_url is set but backend is local; set backend: vllm")
        return self
