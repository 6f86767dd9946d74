"""Asking the teacher: bounded concurrency, retries with backoff, the cache, and the bill.

Requests go through the official ``openai`` client to any OpenAI-compatible endpoint
(tuneforge's own server included). At most ``concurrency`` are in flight. A rate
limit (429), a server error (5xx), a timeout or a dropped connection is retried after
``backoff_s * 2**attempt`` seconds (with jitter, or the server's Retry-After when it
sends one), up to ``max_retries`` times; any other error (a 400, a 404 model) is not
retried. Every answer is cached the moment it arrives (:mod:`.cache`).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Any

from tuneforge.config.synth_schema import TeacherConfig
from tuneforge.data.synth.cache import Answer, AnswerCache, request_key

RETRY_CAP_S = 60.0


class TeacherError(RuntimeError):
    """A request that failed for good; ``reason`` is one short word or status."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Bill:
    """What the teacher was asked and what it cost."""

    sent: int = 0  # requests that reached the endpoint and came back
    cached: int = 0  # answered from the cache, nothing sent
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def cost(self, config: TeacherConfig) -> float:
        """This run's spend at the configured prices (cached answers cost nothing now)."""
        return (
            self.prompt_tokens * config.input_price_per_1m
            + self.completion_tokens * config.output_price_per_1m
        ) / 1e6

    def to_json(self, config: TeacherConfig) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "cached": self.cached,
            "retries": self.retries,
            "failed": self.failed,
            "failures": dict(self.failures),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost(config), 6),
        }


class Teacher:
    """An OpenAI-compatible chat endpoint with a cache in front of it."""

    def __init__(self, config: TeacherConfig, cache: AnswerCache) -> None:
        from openai import AsyncOpenAI

        self.config, self.cache = config, cache
        key = os.environ.get(config.api_key_env) or "none"
        self.client = AsyncOpenAI(
            base_url=config.base_url, api_key=key, max_retries=0, timeout=config.timeout_s
        )
        self.bill = Bill()
        self._slots = asyncio.Semaphore(config.concurrency)

    async def ask(self, body: dict[str, Any]) -> Answer:
        """The answer to a request: from the cache, or from the endpoint (then cached).

        Raises:
            TeacherError: the request failed for good (after the retries it deserved).
        """
        key = request_key(body)
        found = self.cache.get(key)
        if found is not None:
            self.bill.cached += 1
            return found
        async with self._slots:
            answer = await self._send(body)
        self.cache.put(key, self.config.model, answer)
        self.bill.sent += 1
        self.bill.prompt_tokens += answer.prompt_tokens
        self.bill.completion_tokens += answer.completion_tokens
        return answer

    async def _send(self, body: dict[str, Any]) -> Answer:
        import openai

        for attempt in range(self.config.max_retries + 1):
            try:
                reply = await self.client.chat.completions.create(**body)
            except (openai.RateLimitError, openai.InternalServerError) as err:
                retry, why = _retry_after(err), f"http {err.status_code}"
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                retry, why = None, type(err).__name__
            except openai.APIStatusError as err:
                raise self._fail(f"http {err.status_code}", _message(err)) from None
            else:
                return _answer(reply)
            if attempt == self.config.max_retries:
                raise self._fail(why, f"gave up after {attempt + 1} tries")
            self.bill.retries += 1
            await asyncio.sleep(retry or self._backoff(attempt))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        wait = min(RETRY_CAP_S, self.config.backoff_s * 2**attempt)
        return wait * random.uniform(0.5, 1.5)

    def _fail(self, reason: str, detail: str) -> TeacherError:
        self.bill.failed += 1
        self.bill.failures[reason] = self.bill.failures.get(reason, 0) + 1
        return TeacherError(reason, detail)

    async def close(self) -> None:
        await self.client.close()


def _answer(reply: Any) -> Answer:
    text = (reply.choices[0].message.content or "") if reply.choices else ""
    usage = reply.usage
    return Answer(
        text,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
    )


def _retry_after(err: Any) -> float | None:
    """The server's Retry-After, in seconds, when it sent one."""
    value = getattr(err, "response", None) and err.response.headers.get("retry-after")
    try:
        return min(RETRY_CAP_S, float(value)) if value else None
    except ValueError:
        return None


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(err).splitlines()[0]
