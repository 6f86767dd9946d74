"""The server through real HTTP: the official openai client, errors, auth, cache, guardrails."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from serve_support import make_registry, running_server
from tuneforge.config.serve_schema import ServeConfig

KEYS = {"TUNEFORGE_API_KEYS": "alice:sk-alice-123,bob:sk-bob-456"}
HELLO = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    """One server for the module: no keys, in-process cache, PII redaction on the way out."""
    settings = ServeConfig.model_validate(
        {"guardrails": {"pii": "redact", "regex": [{"name": "codename", "pattern": "zebra7"}]}}
    )
    with running_server(tiny_model_dir, settings) as (url, ctx):
        yield url, ctx


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def test_chat_stream_and_completion_with_the_openai_client(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=12, temperature=0
    )
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 12
    chunks = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=12, temperature=0, stream=True, seed=None
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text
    done = client.completions.create(model="tiny", prompt="The order", max_tokens=5, temperature=0)
    assert done.object == "text_completion" and done.usage.completion_tokens <= 5
    assert [m.id for m in client.models.list()] == ["tiny"]
    two = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8, temperature=0.8, seed=3, n=2
    )
    assert len(two.choices) == 2


def test_deterministic_requests_are_cached_per_tenant(server) -> None:
    url, ctx = server
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 6, "temperature": 0}
    first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert first.headers["x-cache"] == "miss" and again.headers["x-cache"] == "hit"
    assert again.json()["choices"] == first.json()["choices"]
    sampled = httpx.post(f"{url}/v1/chat/completions", json={**body, "temperature": 0.7})
    assert "x-cache" not in sampled.headers  # no seed: not repeatable, never cached
    assert ctx.cache.stats()["hits"] >= 1


def test_errors_have_openai_shape_and_status(client: openai.OpenAI, server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert missing.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=HELLO, temperature=5)
    with pytest.raises(openai.NotFoundError):  # no adapter registry: nothing but the base
        client.chat.completions.create(model="tiny:../../etc", messages=HELLO)
    big = httpx.post(f"{server[0]}/v1/chat/completions", content=b"x" * 2_000_000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"


def test_guardrails_redact_and_block(client: openai.OpenAI, server) -> None:
    with pytest.raises(openai.BadRequestError, match="codename"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "the zebra7 plan"}]
        )
    stats = server[1].guardrails.stats()
    assert stats[("input", "regex:codename", "block")] == 1
    metrics = httpx.get(f"{server[0]}/metrics").text
    assert 'tuneforge_guardrail_actions_total{action="block",policy="regex:codename"' in metrics
    assert "tuneforge_requests_total" in metrics and "tuneforge_engine_queue_depth" in metrics


def test_platform_routes(server) -> None:
    url = server[0]
    assert httpx.get(f"{url}/ping").status_code == 200
    assert httpx.get(f"{url}/ready").json() == {"status": "ready"}
    body = {"messages": HELLO, "max_tokens": 4, "temperature": 0}
    invoked = httpx.post(f"{url}/invocations", json=body, timeout=60)
    assert invoked.status_code == 200 and invoked.json()["object"] == "chat.completion"
    predicted = httpx.post(f"{url}/predict", json={"instances": [body, body]}, timeout=60)
    assert [p["object"] for p in predicted.json()["predictions"]] == ["chat.completion"] * 2


def test_every_route_but_health_needs_a_key(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    settings = ServeConfig.model_validate({"auth": {"rate_limit_per_minute": 2}})
    with running_server(tiny_model_dir, settings) as (url, ctx):
        app_routes = {(m, r.path) for r in _app_routes(ctx) for m in r.methods - {"HEAD"}}
        assert len(app_routes) >= 12
        for method, path in sorted(app_routes):
            concrete = path.replace("{model:path}", "tiny").replace("{name}", "x")
            answer = httpx.request(method, url + concrete, json={}, timeout=30)
            if path in ("/health", "/ready", "/ping"):
                assert answer.status_code == 200, path
            else:
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert answer.json()["error"]["type"] == "authentication_error"
        alice = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-alice-123", max_retries=0)
        assert [m.id for m in alice.models.list()] == ["tiny"]
        alice.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            alice.models.list()
        assert int(limited.value.response.headers["retry-after"]) >= 1
        bob = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-bob-456", max_retries=0)
        assert bob.models.list().data  # each key has its own bucket


def _app_routes(ctx):
    """Every route of the app; each one must go through the key check."""
    from fastapi.routing import APIRoute

    from tuneforge.serve.app import create_app

    routes = create_app(ctx).routes
    assert all(isinstance(r, APIRoute) for r in routes), [r.path for r in routes]
    return routes


def test_vllm_backend_forwards_and_keeps_the_front(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second tuneforge server stands in for vLLM; the front adds auth and the cache."""
    with running_server(tiny_model_dir, name="tiny") as (upstream_url, _):
        direct = openai.OpenAI(base_url=f"{upstream_url}/v1", api_key="x", max_retries=0)
        expected = direct.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=10, temperature=0
        )
        monkeypatch.setenv("TUNEFORGE_API_KEYS", "sk-front")
        settings = ServeConfig(backend="vllm", upstream_url=upstream_url)
        with running_server(tiny_model_dir, settings, name="tiny") as (url, ctx):
            front = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-front", max_retries=0)
            got = front.chat.completions.create(
                model="tiny", messages=HELLO, max_tokens=10, temperature=0
            )
            assert got.choices[0].message.content == expected.choices[0].message.content
            assert got.usage.prompt_tokens == expected.usage.prompt_tokens
            streamed = front.chat.completions.create(
                model="tiny", messages=HELLO, max_tokens=10, temperature=0, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            assert text == expected.choices[0].message.content
            assert ctx.cache.stats()["hits"] == 1  # the stream was served from the front's cache
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key="bad", max_retries=0).models.list()


@pytest.mark.redis
def test_a_redis_cache_is_shared_by_servers_but_never_across_tenants(
    tiny_model_dir: Path, redis_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEFORGE_API_KEYS", "alice:sk-a,bob:sk-b")
    settings = ServeConfig.model_validate({"cache": {"redis_url": str(redis_server)}})
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 6, "temperature": 0}

    def ask(url: str, key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)

    with running_server(tiny_model_dir, settings) as (first, _):
        assert ask(first, "sk-a").headers["x-cache"] == "miss"
    with running_server(tiny_model_dir, settings) as (second, _):  # a second replica
        shared = ask(second, "sk-a")
        assert shared.headers["x-cache"] == "hit"
        assert ask(second, "sk-b").headers["x-cache"] == "miss"  # bob never sees alice's


def test_adapters_by_name_hot_loaded_and_refused_when_unsafe(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = make_registry(tmp_path / "adapters", tiny_model_dir)
    (root / "aliases.json").write_text('{"support": "alpha"}')
    (root / "evil").symlink_to(tmp_path)  # a folder that escapes the registry
    settings = ServeConfig(adapters_dir=str(root), max_loaded_adapters=1)
    with running_server(tiny_model_dir, settings) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        ids = [m.id for m in client.models.list()]
        assert {"tiny", "tiny:alpha", "tiny:beta", "tiny:support"} <= set(ids)

        def reply(model: str) -> str:
            answer = client.chat.completions.create(
                model=model, messages=HELLO, max_tokens=8, temperature=0
            )
            return answer.choices[0].message.content

        base, alpha, beta = reply("tiny"), reply("tiny:alpha"), reply("beta")
        assert len({base, alpha, beta}) == 3  # each adapter changes the reply
        assert reply("tiny:support") == alpha  # an alias names the same adapter
        admin = httpx.get(f"{url}/admin/adapters").json()["adapters"]
        assert sum(a["loaded"] for a in admin) == 1  # max_loaded_adapters 1: LRU evicted one
        assert httpx.delete(f"{url}/admin/adapters/beta").json() == {
            "name": "beta",
            "unloaded": True,
        }
        loaded = httpx.post(f"{url}/admin/adapters/alpha").json()
        assert loaded["loaded"] and len(loaded["version"]) == 64
        for unsafe in ("tiny:../alpha", "tiny:a/b", "tiny:%2e%2e"):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model=unsafe, messages=HELLO)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="tiny:evil", messages=HELLO)
