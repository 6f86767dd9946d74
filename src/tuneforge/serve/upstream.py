"""``serve.backend: vllm``: generation forwarded to an OpenAI-compatible server (vLLM).

tuneforge keeps everything in front: prompt rendering with the training template,
auth, rate limits, the response cache, guardrails and metrics. The upstream gets
the rendered prompt as token ids on ``/v1/completions`` (vLLM takes them as they
are, so its own chat template never gets a say), and a request for an adapter
names it as the upstream ``model`` (vLLM: ``--lora-modules NAME=PATH``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tuneforge.models.load import load_tokenizer
from tuneforge.serve.types import (
    Choice,
    Delta,
    EngineUnavailable,
    Generation,
    GenerationRequest,
    QueueFull,
    UnknownAdapter,
)

MODELS_TTL_S = 10.0
UPSTREAM_KEY_ENV = "TUNEFORGE_UPSTREAM_API_KEY"  # vLLM's --api-key, when it has one


class UpstreamEngine:
    """The Engine protocol over HTTP to an upstream OpenAI-compatible server."""

    def __init__(self, url: str, model_dir: str | Path, *, name: str, timeout_s: float = 600):
        self.url = url.rstrip("/")
        self.name = name
        self.tokenizer = load_tokenizer(str(model_dir))
        self.registry = None
        key = os.environ.get(UPSTREAM_KEY_ENV)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s, headers=self._headers
        )
        self._models: tuple[float, list[str]] = (0.0, [])
        self._in_flight = 0
        self._counts = {"requests_total": 0, "upstream_errors_total": 0}

    @property
    def ready(self) -> bool:
        """Whether the upstream answers its model list (checked at most every 10 s)."""
        return bool(self._upstream_models())

    def model_names(self) -> list[str]:
        adapters = [m for m in self._upstream_models()[1:]]
        return [self.name, *(f"{self.name}:{a}" for a in adapters)]

    def resolve_model(self, model: str) -> str | None:
        if model == self.name:
            return None
        adapter = model.removeprefix(f"{self.name}:")
        if adapter not in self._upstream_models()[1:]:
            raise UnknownAdapter(f"model {model!r}: the upstream does not serve it")
        return adapter

    async def generate(self, request: GenerationRequest) -> Generation:
        started = time.monotonic()
        body = self._body(request, stream=False)
        data = await self._post(body)
        choices = [
            Choice(c.get("text", ""), [], _reason(c.get("finish_reason")))
            for c in sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        ]
        usage = data.get("usage") or {}
        return Generation(
            choices,
            int(usage.get("prompt_tokens", len(request.prompt_ids))),
            int(usage.get("completion_tokens", 0)),
            {"total_s": time.monotonic() - started},
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        body = self._body(request, stream=True)
        self._in_flight += 1
        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choice = json.loads(line[6:])["choices"][0]
                    reason = choice.get("finish_reason")
                    yield Delta(choice.get("text", ""), _reason(reason) if reason else None)
        except httpx.HTTPError as err:
            raise self._unavailable(err) from None
        finally:
            self._in_flight -= 1

    def stats(self) -> dict[str, float]:
        return {"running_requests": self._in_flight, "ready": float(self.ready), **self._counts}

    async def close(self) -> None:
        await self._client.aclose()

    def _body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        self._counts["requests_total"] += 1
        body: dict[str, Any] = {
            "model": request.adapter or self._upstream_models()[0] or self.name,
            "prompt": list(request.prompt_ids),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "n": request.n,
            "stream": stream,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        self._in_flight += 1
        try:
            response = await self._client.post("/v1/completions", json=body)
        except httpx.HTTPError as err:
            raise self._unavailable(err) from None
        finally:
            self._in_flight -= 1
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    def _raise(self, response: httpx.Response) -> None:
        """The upstream's refusal as ours: 429 -> QueueFull, 404 -> UnknownAdapter, else 503."""
        self._counts["upstream_errors_total"] += 1
        if response.status_code == 429:
            raise QueueFull(float(response.headers.get("retry-after", "1") or 1))
        if response.status_code == 404:
            raise UnknownAdapter(f"the upstream does not serve it ({response.text[:200]})")
        if response.status_code in (400, 422):
            raise ValueError(f"the upstream refused the request: {response.text[:300]}")
        raise EngineUnavailable(f"upstream {self.url} answered {response.status_code}")

    def _unavailable(self, err: Exception) -> EngineUnavailable:
        self._counts["upstream_errors_total"] += 1
        return EngineUnavailable(f"upstream {self.url}: {type(err).__name__}: {err}")

    def _upstream_models(self) -> list[str]:
        """The upstream's model ids (base first), refreshed every ``MODELS_TTL_S``."""
        checked, models = self._models
        if time.monotonic() - checked < MODELS_TTL_S and models:
            return models
        try:
            answer = httpx.get(f"{self.url}/v1/models", timeout=5, headers=self._headers)
            data = answer.raise_for_status().json()
            models = [m["id"] for m in data.get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            models = []
        base = [m for m in models if ":" not in m][:1]
        adapters = [m.split(":", 1)[1] if ":" in m else m for m in models if m not in base]
        self._models = (time.monotonic(), [*base, *adapters])
        return self._models[1]


def _reason(reason: str | None) -> Any:
    return reason if reason in ("stop", "length") else "stop"
