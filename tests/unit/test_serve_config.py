"""The serve section: defaults, nested sub-sections, and the errors a user can act on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneforge.config.serve_schema import ServeConfig


def _error(raw: dict) -> dict:
    with pytest.raises(ValidationError) as caught:
        ServeConfig.model_validate(raw)
    return caught.value.errors()[0]


def test_defaults_are_safe_and_local() -> None:
    config = ServeConfig()
    assert (config.host, config.port, config.backend) == ("127.0.0.1", 8000, "local")
    assert config.cors_origins == []  # CORS off
    assert (config.max_batch, config.max_queue, config.max_loaded_adapters) == (8, 64, 4)
    assert config.request_timeout_s == 120.0
    assert (config.cache.enabled, config.cache.redis_url) == (True, None)
    assert (config.cache.max_entries, config.cache.ttl_s) == (4096, 3600)
    assert config.guardrails.pii == "off"
    assert config.guardrails.apply_to == ["input", "output"]
    assert config.guardrails.check_json is True
    assert config.auth.api_keys_env == "TUNEFORGE_API_KEYS"
    assert config.auth.api_keys_file is None
    assert config.auth.rate_limit_per_minute is None
    assert config.auth.max_body_bytes == 1_048_576


def test_a_full_section_validates() -> None:
    config = ServeConfig.model_validate(
        {
            "host": "0.0.0.0",
            "port": 9000,
            "cors_origins": ["https://app.example.com", "http://localhost:3000"],
            "backend": "vllm",
            "upstream_url": "http://vllm:8000/",
            "cache": {"redis_url": "redis://redis:6379/0", "ttl_s": 60, "max_entries": 10},
            "guardrails": {
                "pii": "redact",
                "pii_types": ["email", "secret"],
                "blocklist": ["project zeus"],
                "regex": [{"name": "ticket", "pattern": r"TCK-\d+", "action": "redact"}],
                "max_input_tokens": 2048,
                "apply_to": ["output"],
            },
            "auth": {"api_keys_file": "keys.txt", "rate_limit_per_minute": 120},
        }
    )
    assert config.upstream_url == "http://vllm:8000"  # trailing slash dropped
    assert config.cache.ttl_s == 60
    assert config.guardrails.regex[0].action == "redact"
    assert config.guardrails.regex[0].ignore_case is False
    assert config.auth.rate_limit_per_minute == 120


@pytest.mark.parametrize(
    ("raw", "loc", "says"),
    [
        ({"cache": {"ttl": 5}}, ("cache", "ttl"), "Extra inputs"),
        ({"cache": {"redis_url": "localhost:6379"}}, ("cache", "redis_url"), "redis://"),
        ({"cache": {"ttl_s": 0}}, ("cache", "ttl_s"), "greater than or equal to 1"),
        ({"guardrails": {"pii": "drop"}}, ("guardrails", "pii"), "'off', 'redact' or 'block'"),
        ({"guardrails": {"pii_types": ["emails"]}}, ("guardrails", "pii_types"), "'emails'"),
        ({"guardrails": {"blocklist": ["ok", " "]}}, ("guardrails", "blocklist"), "empty word"),
        ({"guardrails": {"apply_to": ["input", "input"]}}, ("guardrails", "apply_to"), "once"),
        (
            {"guardrails": {"regex": [{"name": "x", "pattern": "(unclosed"}]}},
            ("guardrails", "regex", 0, "pattern"),
            "not a valid regular expression",
        ),
        (
            {"guardrails": {"regex": [{"name": "has space", "pattern": "a"}]}},
            ("guardrails", "regex", 0, "name"),
            "policy names",
        ),
        (
            {
                "guardrails": {
                    "regex": [{"name": "a", "pattern": "x"}, {"name": "a", "pattern": "y"}]
                }
            },
            ("guardrails",),
            "'a' is used twice",
        ),
        ({"auth": {"api_keys_env": "MY-KEYS"}}, ("auth", "api_keys_env"), "environment variable"),
        ({"auth": {"max_body_bytes": 10}}, ("auth", "max_body_bytes"), "1024"),
        ({"auth": {"rate_limit_per_minute": 0}}, ("auth", "rate_limit_per_minute"), "1"),
        ({"cors_origins": ["https://a.example.com/"]}, ("cors_origins",), "no path"),
        ({"backend": "vllm"}, (), "needs upstream_url"),
        ({"upstream_url": "http://vllm:8000"}, (), "backend is local"),
        ({"backend": "vllm", "upstream_url": "vllm:8000"}, ("upstream_url",), "http://"),
        ({"port": 70000}, ("port",), "65535"),
    ],
)
def test_errors_name_the_key_and_the_fix(raw: dict, loc: tuple, says: str) -> None:
    error = _error(raw)
    assert tuple(error["loc"]) == loc
    assert says in error["msg"]


def test_assignment_is_validated() -> None:
    config = ServeConfig()
    with pytest.raises(ValidationError):
        config.cache.max_entries = 0
    config.guardrails.pii = "block"
    assert config.guardrails.pii == "block"
