"""One request's path: resolve the model, guard the input, render, cache, generate, guard.

Prompts are rendered by the function training used (``data.render``), so a tuned
model sees at serving time exactly the prompt layout it was trained on. Output
guardrails need the whole text; while they are on, a streamed reply is generated
in full, checked, then sent as one chunk.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from tuneforge.config.serve_schema import ServeConfig
from tuneforge.data.render import render_prompt
from tuneforge.serve import protocol
from tuneforge.serve.auth import KeyRing, RateLimiter
from tuneforge.serve.cache import ResponseCache, cacheable, request_key
from tuneforge.serve.guardrails import Guardrails
from tuneforge.serve.metrics import ServerMetrics
from tuneforge.serve.types import Choice, Engine, Generation, GenerationRequest

DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    """Answered as OpenAI's error object with ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.headers = headers or {}


@dataclass
class ServeContext:
    """Everything the routes share."""

    engine: Engine
    settings: ServeConfig
    guardrails: Guardrails
    keys: KeyRing
    limiter: RateLimiter | None
    cache: ResponseCache | None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    started: int = field(default_factory=lambda: int(time.time()))
    draining: bool = False
    body_limits: dict[str, int] = field(default_factory=dict)  # path -> bytes, above the default

    def adapter_version(self, adapter: str | None) -> str | None:
        registry = getattr(self.engine, "registry", None)
        if adapter is None or registry is None:
            return None
        return registry.resolve(adapter).version


@dataclass
class Prepared:
    """A request ready for the engine, with what answering it needs."""

    model: str
    request: GenerationRequest
    json_mode: bool
    cache_key: str | None


def prepare_chat(
    ctx: ServeContext, body: protocol.ChatRequest, tenant: str, request_id: str
) -> Prepared:
    """Resolve, guard and render a chat request (raises ApiError for 400/404)."""
    adapter = resolve(ctx, body.model)
    messages = body.as_messages()
    tokenizer: Any = ctx.engine.tokenizer
    ids = render_prompt(tokenizer, messages, tools=body.tools)
    verdict = ctx.guardrails.check_input(messages, len(ids), request_id)
    if verdict.action == "block":
        raise ApiError(400, _blocked("prompt", verdict.reasons), "messages", "content_policy")
    if verdict.action == "redact":
        ids = render_prompt(tokenizer, verdict.messages or messages, tools=body.tools)
    request = _request(ctx, body, ids, adapter, request_id, body.limit(DEFAULT_MAX_TOKENS))
    fmt = body.response_format.model_dump() if body.response_format else None
    return Prepared(body.model, request, body.json_mode(), _key(ctx, tenant, request, fmt))


def prepare_completion(
    ctx: ServeContext, body: protocol.CompletionRequest, tenant: str, request_id: str
) -> Prepared:
    """Resolve, guard and tokenize a raw completion request (no chat template)."""
    adapter = resolve(ctx, body.model)
    tokenizer: Any = ctx.engine.tokenizer
    ids = body.token_ids()
    if ids is not None:
        vocab = len(tokenizer)
        if any(not 0 <= i < vocab for i in ids):
            raise ApiError(400, f"prompt: token ids must be in [0, {vocab})", "prompt")
        text = tokenizer.decode(ids)
    else:
        text = body.text()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    verdict = ctx.guardrails.check_input(text, len(ids), request_id)
    if verdict.action == "block":
        raise ApiError(400, _blocked("prompt", verdict.reasons), "prompt", "content_policy")
    if verdict.action == "redact":
        ids = tokenizer(verdict.text or "", add_special_tokens=False)["input_ids"]
    request = _request(ctx, body, ids, adapter, request_id, body.max_tokens or 16)
    return Prepared(body.model, request, False, _key(ctx, tenant, request, None))


def resolve(ctx: ServeContext, model: str) -> str | None:
    """The adapter a ``model`` names; 404 for an unknown one, 400 for an unsafe name."""
    from tuneforge.serve.registry import InvalidAdapter
    from tuneforge.serve.types import UnknownAdapter

    try:
        return ctx.engine.resolve_model(model)  # type: ignore[attr-defined]
    except InvalidAdapter as err:
        raise ApiError(400, str(err), "model", "invalid_model") from None
    except UnknownAdapter:
        names = ", ".join(ctx.engine.model_names()[:20])
        raise ApiError(
            404, f"model {model!r} not found; served: {names}", "model", "model_not_found"
        ) from None


async def complete(ctx: ServeContext, prepared: Prepared) -> tuple[Generation, bool]:
    """The guarded generation of a prepared request, from the cache when it has it."""
    cached = await _cache_get(ctx, prepared.cache_key)
    if cached is not None:
        return guard_output(ctx, prepared, cached), True
    generation = await ctx.engine.generate(prepared.request)
    await _cache_set(ctx, prepared.cache_key, generation)
    ctx.metrics.record_generation(
        prepared.model,
        generation.timings,
        generation.prompt_tokens,
        generation.completion_tokens,
    )
    return guard_output(ctx, prepared, generation), False


def guard_output(ctx: ServeContext, prepared: Prepared, generation: Generation) -> Generation:
    """Each choice through the output guardrails: redacted, or emptied with content_filter."""
    choices = []
    for choice in generation.choices:
        verdict = ctx.guardrails.check_output(
            choice.text, prepared.json_mode, prepared.request.request_id
        )
        if verdict.action == "block":
            choices.append(Choice("", choice.token_ids, "content_filter"))  # type: ignore[arg-type]
        else:
            choices.append(replace(choice, text=verdict.text or ""))
    return replace(generation, choices=choices)


def output_guarded(ctx: ServeContext, json_mode: bool) -> bool:
    """Whether any output policy is on (then a stream is checked whole before it is sent)."""
    config = ctx.guardrails.config
    scans = "output" in config.apply_to and (
        config.pii != "off" or bool(config.blocklist) or bool(config.regex)
    )
    return scans or (json_mode and config.check_json)


async def stream_pieces(
    ctx: ServeContext, prepared: Prepared
) -> AsyncIterator[tuple[str, str | None]]:
    """``(text, finish_reason)`` pieces of choice 0: live, or whole when guarded or cached.

    A cached reply is sent whole; a live stream does not fill the cache (the
    non-streaming answer of the same request does).
    """
    cached = None
    if not output_guarded(ctx, prepared.json_mode):
        cached = await _cache_get(ctx, prepared.cache_key)
        if cached is None:
            async for piece in _live(ctx, prepared):
                yield piece
            return
    generation = (
        guard_output(ctx, prepared, cached) if cached else (await complete(ctx, prepared))[0]
    )
    choice = generation.choices[0]
    yield choice.text, choice.finish_reason


async def _live(ctx: ServeContext, prepared: Prepared) -> AsyncIterator[tuple[str, str | None]]:
    started = time.monotonic()
    stream = ctx.engine.stream(prepared.request)
    first = True
    try:
        async for delta in stream:
            if first and delta.text:
                ctx.metrics.first_token.labels(prepared.model).observe(time.monotonic() - started)
                first = False
            yield delta.text, delta.finish_reason
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _request(
    ctx: ServeContext,
    body: protocol.ChatRequest | protocol.CompletionRequest,
    ids: list[int],
    adapter: str | None,
    request_id: str,
    max_tokens: int,
) -> GenerationRequest:
    return GenerationRequest(
        prompt_ids=tuple(ids),
        adapter=adapter,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        n=body.n,
        seed=body.seed,
        request_id=request_id,
        timeout_s=ctx.settings.request_timeout_s,
    )


def _key(
    ctx: ServeContext, tenant: str, request: GenerationRequest, fmt: dict[str, Any] | None
) -> str | None:
    if ctx.cache is None or not cacheable(request):
        return None
    version = ctx.adapter_version(request.adapter)
    name = getattr(ctx.engine, "name", "")
    return request_key(tenant, name, version, request, fmt)


async def _cache_get(ctx: ServeContext, key: str | None) -> Generation | None:
    if key is None or ctx.cache is None:
        return None
    return await asyncio.to_thread(ctx.cache.get, key)


async def _cache_set(ctx: ServeContext, key: str | None, generation: Generation) -> None:
    if key is not None and ctx.cache is not None:
        await asyncio.to_thread(ctx.cache.set, key, generation)


def _blocked(what: str, reasons: list[str]) -> str:
    return f"the {what} was blocked by the server's guardrails ({', '.join(reasons)})"
