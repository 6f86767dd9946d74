"""What the server's parts hand each other: a generation request and its results.

The HTTP layer (``serve/app.py``) turns an OpenAI request into a
:class:`GenerationRequest` (prompt already rendered to token ids by the training
renderer), asks the cache, then an :class:`Engine`; guardrails look at the text
on both sides. Engines: the local batching engine (``serve/engine.py``) and the
vLLM forwarder (``serve/upstream.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete, ``n`` times, with one adapter (or the base model).

    Attributes:
        prompt_ids: The rendered prompt's token ids.
        adapter: Registry name of the adapter, or None for the base model.
        max_tokens: Most tokens to generate per choice.
        temperature: 0 is greedy.
        top_p: Nucleus sampling mass (with temperature > 0).
        stop: Strings that end a choice (not included in its text).
        n: Choices to generate.
        seed: Makes sampling repeatable (each choice gets its own stream from it).
        request_id: For logs and metrics.
        timeout_s: Give up (finish_reason "cancelled") after this long.
    """

    prompt_ids: tuple[int, ...]
    adapter: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    request_id: str = ""
    timeout_s: float | None = None


@dataclass
class Choice:
    """One finished completion."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason


@dataclass
class Generation:
    """Every choice of a request, and the token counts OpenAI's ``usage`` reports."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # queue_s, first_token_s, total_s


@dataclass
class Delta:
    """A piece of a streamed completion (choice 0); the last one has a finish reason."""

    text: str
    finish_reason: FinishReason | None = None


class QueueFull(Exception):
    """The engine's queue is at its bound: answer 429 with Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"queue full; retry after {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


class UnknownAdapter(LookupError):
    """No adapter of that name in the registry: answer 404."""


class EngineUnavailable(RuntimeError):
    """The engine is shutting down or failed to load its model: answer 503."""


class Engine(Protocol):
    """What the HTTP layer needs from whatever generates text."""

    tokenizer: object  # the model's tokenizer (renders prompts, counts tokens)

    @property
    def ready(self) -> bool: ...

    def model_names(self) -> list[str]:
        """The base model's name and ``base:adapter`` for every adapter in the registry."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation:
        """All ``n`` choices. Raises QueueFull, UnknownAdapter."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Choice 0 piece by piece (n must be 1); closing the iterator frees the slot."""
        ...

    def stats(self) -> dict[str, float]:
        """queue_depth, running, batch_size_last, loaded_adapters, ..."""
        ...

    async def close(self) -> None:
        """Stop accepting, finish what is running, free the model."""
        ...
