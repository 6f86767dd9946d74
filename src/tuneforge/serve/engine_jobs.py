"""What the local engine hands between the event loop and its worker thread.

A :class:`Job` is one request inside the engine; its :class:`Outbox` carries stream
pieces, the finished :class:`~tuneforge.serve.types.Generation` or an error from the
worker thread to the consumer's event loop; a :class:`TokenStream` is what
``LocalEngine.stream`` returns. :func:`request_sampling` checks a request before it queues.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig

from tuneforge.errors import ModelError
from tuneforge.eval.generate import Sampling
from tuneforge.serve.engine_batch import Row
from tuneforge.serve.types import Choice, Delta, Generation, GenerationRequest


class Outbox:
    """Hands items from the worker thread to a consumer on its event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> bool:
        """Queue ``item`` on the consumer's loop; False when that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True


@dataclass(eq=False)
class Job:
    """One request in the engine: its rows, deadline and where its results go."""

    request: GenerationRequest
    adapter: str | None
    streaming: bool
    outbox: Outbox
    submitted: float
    deadline: float | None
    rows: list[Row] = field(default_factory=list)
    cancelled: bool = False  # set from the consumer's side: the rows leave at the next step
    admitted: float | None = None
    first_token: float | None = None
    delivered: bool = False

    def generation(self, now: float) -> Generation:
        """The result so far: every row's text and tokens, usage counts and timings."""
        choices = [Choice(row.text, row.tokens, row.finish or "cancelled") for row in self.rows]
        timings = {
            "queue_s": (self.admitted or now) - self.submitted,
            "first_token_s": (self.first_token or now) - self.submitted,
            "total_s": now - self.submitted,
        }
        return Generation(
            choices,
            prompt_tokens=len(self.request.prompt_ids),
            completion_tokens=sum(len(choice.token_ids) for choice in choices),
            timings=timings,
        )


class TokenStream:
    """Choice 0 of a request as :class:`Delta` pieces; closing it cancels the request.

    Dropping the stream (or its consumer's task being cancelled) cancels too. After the
    last piece, ``generation`` holds the whole result (its usage counts included).
    """

    def __init__(self, job: Job, wake: Callable[[], None]) -> None:
        self._job, self._wake = job, wake
        self._sent = 0
        self._done = False
        self.generation: Generation | None = None

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._job.outbox.queue.get()
        except asyncio.CancelledError:
            self._cancel()
            raise
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if isinstance(item, Delta):
            self._sent += len(item.text)
            return item
        self._done, self.generation = True, item
        choice = item.choices[0]
        return Delta(choice.text[self._sent :], choice.finish_reason)

    async def aclose(self) -> None:
        """Stop generating: the request's row leaves the batch at the next step."""
        self._cancel()

    def __del__(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            self._job.cancelled = True
            self._wake()


def request_sampling(request: GenerationRequest, max_batch: int, context: int | None) -> Sampling:
    """The decoding spec of ``request``; ValueError names the field that cannot work.

    A sampled request without a seed gets a random one.
    """
    if not request.prompt_ids:
        raise ValueError("prompt renders to no tokens")
    if not 1 <= request.n <= max_batch:
        raise ValueError(f"n {request.n}: must be between 1 and {max_batch}")
    if request.timeout_s is not None and request.timeout_s <= 0:
        raise ValueError(f"timeout_s {request.timeout_s}: must be positive")
    if context is not None and len(request.prompt_ids) + request.max_tokens > context:
        raise ValueError(
            f"max_tokens {request.max_tokens}: with the prompt's {len(request.prompt_ids)} "
            f"tokens it exceeds the model's context of {context}; lower it"
        )
    seed = request.seed
    if seed is None:
        seed = 0 if request.temperature == 0 else secrets.randbits(63)
    return Sampling(
        max_new_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=tuple(request.stop),
        seed=seed,
    )


def context_length(model_dir: str) -> int | None:
    """The model's context length from its config (None when it states none).

    Raises:
        ModelError: the config cannot be read.
    """
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelError(f"model {model_dir!r}: cannot read config.json: {first}") from None
    return getattr(config, "max_position_embeddings", None)
