"""The HTTP app: OpenAI routes, health and readiness, metrics, managed-platform routes, admin.

Every route but ``/health``, ``/ready`` and ``/ping`` (and Vertex AI's health
route) passes the app-wide ``guard`` dependency: when API keys are set it needs
one, and it applies the per-key rate limit; a draining server answers 503.
Errors use OpenAI's error object. Logs are JSON lines with a request id and
never hold a request or reply body.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.serve import protocol
from tuneforge.serve.handlers import (
    ApiError,
    Prepared,
    ServeContext,
    complete,
    prepare_chat,
    prepare_completion,
    sse,
    stream_pieces,
)
from tuneforge.serve.types import EngineUnavailable, QueueFull

log = logging.getLogger("tuneforge.serve")
OPEN_ROUTES = frozenset({"/health", "/ready", "/ping"})


def create_app(ctx: ServeContext) -> FastAPI:
    """The server for one context (engine, settings, cache, guardrails, keys, metrics)."""
    open_routes = OPEN_ROUTES | {os.environ.get("AIP_HEALTH_ROUTE", "/health")}

    async def guard(request: Request) -> None:
        if request.url.path in open_routes:
            return
        if ctx.draining:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        tenant = ""
        if ctx.keys.enabled:
            presented = request.headers.get("authorization") or request.headers.get("x-api-key")
            found = ctx.keys.authenticate(presented)
            if found is None:
                raise ApiError(401, "missing or invalid API key", code="invalid_api_key")
            tenant = found
        request.state.tenant = tenant
        if ctx.limiter is not None:
            wait = ctx.limiter.acquire(tenant)
            if wait is not None:
                retry = ctx.limiter.retry_after_header(wait)
                raise ApiError(
                    429,
                    "rate limit reached for this API key",
                    code="rate_limit",
                    headers={"Retry-After": retry},
                )

    # no /docs, /redoc or /openapi.json: every route there is would need the key check too;
    # the spec is app.openapi() (tests run schemathesis on it)
    app = FastAPI(
        title="tuneforge",
        dependencies=[Depends(guard)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ctx = ctx
    _errors(app)
    _routes(app, ctx)
    _platform_routes(app, ctx)
    _admin_routes(app, ctx)
    _watch(ctx)
    if ctx.settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=ctx.settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(
        BodyLimit, max_bytes=ctx.settings.auth.max_body_bytes, larger=ctx.body_limits
    )
    app.add_middleware(AccessLog, metrics=ctx.metrics)
    return app


def _routes(app: FastAPI, ctx: ServeContext) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        return _readiness(ctx)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, kind = ctx.metrics.exposition()
        return Response(body, media_type=kind)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return protocol.model_list(ctx.engine.model_names(), ctx.started)

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        if model not in ctx.engine.model_names():
            raise ApiError(404, f"model {model!r} not found", "model", "model_not_found")
        return protocol.model_list([model], ctx.started)["data"][0]

    @app.post("/v1/chat/completions")
    async def chat(body: protocol.ChatRequest, request: Request) -> Response:
        return await answer_chat(ctx, body, request)

    @app.post("/v1/completions")
    async def completions(body: protocol.CompletionRequest, request: Request) -> Response:
        request_id = _request_id(request)
        prepared = prepare_completion(ctx, body, request.state.tenant, request_id)
        request.state.model = prepared.model
        if body.stream:
            return await _stream(ctx, prepared, request_id, chat=False)
        generation, hit = await complete(ctx, prepared)
        payload = protocol.completion_response(request_id, body.model, generation)
        return JSONResponse(payload, headers=_cache_header(prepared, hit))


async def answer_chat(ctx: ServeContext, body: protocol.ChatRequest, request: Request) -> Response:
    """A chat completion, streamed as server-sent events when asked."""
    request_id = _request_id(request)
    prepared = prepare_chat(ctx, body, request.state.tenant, request_id)
    request.state.model = prepared.model
    if body.stream:
        return await _stream(ctx, prepared, request_id, chat=True)
    generation, hit = await complete(ctx, prepared)
    payload = protocol.chat_response(request_id, body.model, generation)
    return JSONResponse(payload, headers=_cache_header(prepared, hit))


async def _stream(ctx: ServeContext, prepared: Prepared, request_id: str, *, chat: bool):
    """SSE: the first piece is awaited here, so a refusal (429, 503) is still a status code."""
    pieces = stream_pieces(ctx, prepared)
    first = await pieces.__anext__()
    model = prepared.model

    async def events() -> AsyncIterator[bytes]:
        if chat:
            yield sse(protocol.chat_chunk(request_id, model, {"role": "assistant", "content": ""}))
        piece: tuple[str, str | None] | None = first
        try:
            while piece is not None:
                text, finish = piece
                if chat:
                    delta = {"content": text} if text else {}
                    yield sse(protocol.chat_chunk(request_id, model, delta, finish))
                else:
                    yield sse(protocol.completion_chunk(request_id, model, text, finish))
                piece = await anext(pieces, None)
            yield sse("[DONE]")
        finally:
            await pieces.aclose()  # a client that went away frees its rows now

    return StreamingResponse(events(), media_type="text/event-stream")


def _platform_routes(app: FastAPI, ctx: ServeContext) -> None:
    """SageMaker (``/ping``, ``/invocations``) and Vertex AI (``AIP_*``) conventions."""

    @app.get("/ping")
    async def ping() -> Response:
        return _readiness(ctx)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await _json_body(request)
        if "messages" in body:
            body.setdefault("model", ctx.engine.model_names()[0])
            return await answer_chat(ctx, _parse(protocol.ChatRequest, body), request)
        raise ApiError(400, "send an OpenAI chat request body (with 'messages')", "messages")

    predict = os.environ.get("AIP_PREDICT_ROUTE", "/predict")

    @app.post(predict)
    async def vertex_predict(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise ApiError(
                400, "'instances' must be a non-empty list of chat requests", "instances"
            )
        predictions = []
        for instance in instances:
            instance = {**body.get("parameters", {}), **instance, "stream": False}
            instance.setdefault("model", ctx.engine.model_names()[0])
            parsed = _parse(protocol.ChatRequest, instance)
            response = await answer_chat(ctx, parsed, request)
            predictions.append(json.loads(bytes(response.body)))
        return {"predictions": predictions}


def _admin_routes(app: FastAPI, ctx: ServeContext) -> None:
    engine: Any = ctx.engine

    @app.get("/admin/adapters")
    async def adapters() -> dict[str, Any]:
        registry = getattr(engine, "registry", None)
        names = registry.names() if registry else []
        loaded = registry.loaded() if registry else []
        return {"adapters": [{"name": n, "loaded": n in loaded} for n in names]}

    @app.post("/admin/adapters/{name}")
    async def load(name: str) -> dict[str, Any]:
        ref = await engine.load_adapter(name)
        return {"name": ref.name, "version": ref.version, "loaded": True}

    @app.delete("/admin/adapters/{name}")
    async def unload(name: str) -> dict[str, Any]:
        return {"name": name, "unloaded": bool(await engine.unload_adapter(name))}


def _errors(app: FastAPI) -> None:
    from tuneforge.serve.registry import AdapterSlotsBusy, InvalidAdapter
    from tuneforge.serve.types import UnknownAdapter

    def reply(status: int, message: str, param=None, code=None, headers=None) -> JSONResponse:
        body = protocol.error_body(status, message, param, code)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return reply(err.status, str(err), err.param, err.code, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return reply(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", where)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return reply(err.status_code, str(err.detail))

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, err: QueueFull) -> JSONResponse:
        retry = str(max(1, round(err.retry_after_s)))
        return reply(
            429,
            "the server is busy; retry later",
            code="overloaded",
            headers={"Retry-After": retry},
        )

    @app.exception_handler(UnknownAdapter)
    async def unknown(_: Request, err: UnknownAdapter) -> JSONResponse:
        return reply(404, str(err), "model", "model_not_found")

    @app.exception_handler(InvalidAdapter)
    async def unsafe(_: Request, err: InvalidAdapter) -> JSONResponse:
        return reply(400, str(err), "model", "invalid_model")

    @app.exception_handler(AdapterSlotsBusy)
    async def busy(_: Request, err: AdapterSlotsBusy) -> JSONResponse:
        return reply(429, str(err), code="adapters_busy", headers={"Retry-After": "1"})

    @app.exception_handler(EngineUnavailable)
    async def unavailable(_: Request, err: EngineUnavailable) -> JSONResponse:
        return reply(503, str(err), code="not_ready")

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, err: BodyTooLarge) -> JSONResponse:
        return reply(413, str(err), code="body_too_large")

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, err: ValueError) -> JSONResponse:
        return reply(400, str(err))


def _readiness(ctx: ServeContext) -> Response:
    if ctx.engine.ready and not ctx.draining:
        return JSONResponse({"status": "ready"})
    state = "draining" if ctx.draining else "loading"
    return JSONResponse({"status": state}, status_code=503, headers={"Retry-After": "5"})


def _watch(ctx: ServeContext) -> None:
    ctx.metrics.watch("engine", "Engine state", ctx.engine.stats)
    if ctx.cache is not None:
        ctx.metrics.watch(
            "cache",
            "Response cache",
            lambda: {
                f"{k}_total": v
                for k, v in ctx.cache.stats().items()  # type: ignore[union-attr]
            },
        )
    ctx.metrics.watch_labelled(
        "guardrail_actions",
        "Guardrail matches by side, policy and action.",
        ["side", "policy", "action"],
        ctx.guardrails.stats,
    )


def _request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id") or protocol.new_id("req")


def _cache_header(prepared: Prepared, hit: bool) -> dict[str, str]:
    return {"X-Cache": "hit" if hit else "miss"} if prepared.cache_key else {}


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _parse(model: type, body: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{where or 'body'}: {first['msg']}", where) from None


class BodyTooLarge(Exception):
    """A request body above ``serve.auth.max_body_bytes``: 413."""


class BodyLimit:
    """Refuse bodies above ``max_bytes`` (``larger[path]`` for the routes it names, e.g.
    uploads): by Content-Length at once, or while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.default_max, self.larger = app, max_bytes, dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default_max)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = protocol.error_body(413, f"body above {limit} bytes", None, "body_too_large")
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"body above {limit} bytes")
            return message

        await self.app(scope, counted, send)


class AccessLog:
    """A request id on every request; one JSON log line and the metrics when it ends."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        state["request_id"] = given or f"req-{uuid.uuid4().hex[:24]}"
        started, status = time.monotonic(), 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (b"x-request-id", state["request_id"].encode())
                )
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            self._record(scope, state, status, time.monotonic() - started)

    def _record(self, scope: Scope, state: dict, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        model = state.get("model", "")
        self.metrics.requests.labels(path, model, str(status)).inc()
        self.metrics.latency.labels(path, model).observe(seconds)
        log.info(
            json.dumps(
                {
                    "request_id": state["request_id"],
                    "method": scope.get("method"),
                    "route": path,
                    "status": status,
                    "ms": round(seconds * 1000, 1),
                    "model": model,
                    "tenant": state.get("tenant", ""),
                }
            )
        )
