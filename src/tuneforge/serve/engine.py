"""The local generation engine: one worker thread owns the model and batches every request.

Requests wait in a bounded queue (:class:`QueueFull` beyond ``max_queue``). The worker
runs **continuous batching**: between two decode steps it admits waiting requests as new
rows of the running batch (up to ``max_batch`` rows; a request asks for ``n`` rows), and
a row leaves the batch as soon as it finishes, times out or its consumer goes away, so a
short request never waits for a long one to end. When the batch is empty, the worker
waits up to ``batch_window_ms`` after the first arrival so that requests arriving
together are prefilled together. Rows of different adapters share a batch (see
:mod:`tuneforge.serve.engine_batch`); adapters are loaded on first use from an
:class:`~tuneforge.serve.registry.AdapterRegistry`.

Decoding matches :func:`tuneforge.eval.generate.generate`: greedy at temperature 0,
otherwise choice ``i`` of a request samples from its own stream seeded by
``(seed, i)``, so a seeded or greedy request gives the same text alone or batched (the
property that makes the response cache valid). A request without a seed gets a random one.

Everything the event loop calls returns at once; results come back to the caller's loop
through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tuneforge.eval.generate import pad_id, stop_ids
from tuneforge.models import hardware
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.serve.engine_batch import DecodeBatch, Row
from tuneforge.serve.engine_jobs import (
    Job,
    Outbox,
    TokenStream,
    context_length,
    request_sampling,
)
from tuneforge.serve.registry import AdapterRef, AdapterRegistry, AdapterSlotsBusy
from tuneforge.serve.types import (
    Delta,
    EngineUnavailable,
    Generation,
    GenerationRequest,
    QueueFull,
    UnknownAdapter,
)

log = logging.getLogger(__name__)
_RETRY = object()  # a control operation that must wait for running rows
# Building a model or putting an adapter on one patches torch globally for a moment (weights
# are created on the meta device first): two engines of one process must not do it at once.
_BUILDING = threading.Lock()
COUNTERS = (
    "requests_total",  # answered (cancelled ones included)
    "rejected_total",  # refused with QueueFull
    "cancelled_total",  # whose consumer went away
    "tokens_total",  # generated
    "forward_passes_total",  # prefills and decode steps (tokens / passes: mean batch size)
    "batch_size_last",  # rows in the last forward pass
)


class LocalEngine:
    """Batched generation on this machine, with many LoRA adapters on one base model.

    The model loads in the worker thread: ``ready`` turns true when it is loaded (see
    :meth:`wait_ready`) and false again once :meth:`close` starts. Requests submitted
    before that wait in the queue.

    Args:
        model_dir: Local model folder (safetensors; no remote code).
        registry: Where adapters come from; None serves the base model only.
        max_batch: Most rows decoded together (a request takes ``n`` rows).
        max_queue: Most requests waiting; more are refused with :class:`QueueFull`.
        batch_window_ms: How long an idle worker waits for more requests to arrive.
        name: The base model's name in ``model`` fields (default: the folder's name).
        device: Where the model runs (default: the first GPU, else the CPU).
        dtype: Weight dtype (default: what the device runs natively).
    """

    def __init__(
        self,
        model_dir: str | Path,
        registry: AdapterRegistry | None = None,
        *,
        max_batch: int = 16,
        max_queue: int = 256,
        batch_window_ms: float = 5,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or batch_window_ms < 0:
            raise ValueError(
                f"max_batch {max_batch} and max_queue {max_queue} must be at least 1 and "
                f"batch_window_ms {batch_window_ms} at least 0"
            )
        self.tokenizer = load_tokenizer(str(model_dir))
        self.registry = registry
        self.name = name or Path(model_dir).resolve().name
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batch_window_s = batch_window_ms / 1000
        self._model_dir = str(model_dir)
        self._device = torch.device(device) if device is not None else hardware.device()
        self._dtype = dtype or hardware.auto_dtype(self._device)
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._control: deque[tuple[Callable[[], Any], Outbox]] = deque()
        self._draining: set[str] = set()  # adapters waiting to unload: not admitted meanwhile
        self._closing = self._aborting = False
        self._loaded = threading.Event()
        self._failure: str | None = None
        self._model: Any = None
        self._batch: DecodeBatch | None = None
        self._context = context_length(self._model_dir)
        self._request_s = 1.0  # moving average of a request's total time (for Retry-After)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._thread = threading.Thread(target=self._work, name="tuneforge-engine", daemon=True)
        self._thread.start()

    # -- what the event loop calls -------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and the engine accepts requests."""
        return self._loaded.is_set() and self._failure is None and not self._closing

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until the model is loaded.

        Raises:
            EngineUnavailable: the model failed to load, or did not within ``timeout_s``.
        """
        if not await asyncio.to_thread(self._loaded.wait, timeout_s):
            raise EngineUnavailable(f"model {self.name!r}: not loaded after {timeout_s}s")
        if self._failure is not None:
            raise EngineUnavailable(self._failure)

    def model_names(self) -> list[str]:
        """The base model's name, then each adapter's (see :meth:`AdapterRegistry.model_names`)."""
        return [self.name, *(self.registry.model_names(self.name) if self.registry else [])]

    def resolve_model(self, model: str) -> str | None:
        """The adapter a request's ``model`` names (None for the base model).

        Raises:
            UnknownAdapter: no such model or adapter.
            InvalidAdapter: an unsafe adapter name (answer 400).
        """
        if model == self.name:
            return None
        if self.registry is None:
            raise UnknownAdapter(f"model {model!r}: this server serves {self.name!r} only")
        return self.registry.resolve_model(self.name, model)

    async def generate(self, request: GenerationRequest) -> Generation:
        """All ``n`` choices of ``request``.

        Raises:
            QueueFull, UnknownAdapter, InvalidAdapter, EngineUnavailable; ValueError for a
            request that cannot be decoded (say which field).
        """
        job = self._submit(request, streaming=False)
        try:
            item = await job.outbox.queue.get()
        except asyncio.CancelledError:
            job.cancelled = True
            self._wake()
            raise
        if isinstance(item, BaseException):
            raise item
        return item

    def stream(self, request: GenerationRequest) -> TokenStream:
        """Choice 0 of ``request`` piece by piece (``n`` must be 1).

        The request is queued now, so QueueFull and the other refusals of
        :meth:`generate` are raised here, before anything is streamed.
        """
        if request.n != 1:
            raise ValueError(f"n {request.n}: streaming returns one choice; use n 1")
        return TokenStream(self._submit(request, streaming=True), self._wake)

    def stats(self) -> dict[str, float]:
        """Gauges and counters for metrics: queue depth, running rows, last batch size, ..."""
        batch = self._batch
        rows = list(batch.rows) if batch is not None else []
        return {
            "queue_depth": len(self._queue),
            "max_batch": self.max_batch,
            "running": len(rows),
            "running_requests": len({id(row.owner) for row in rows}),
            "loaded_adapters": len(self.registry.loaded()) if self.registry else 0,
            "ready": float(self.ready),
            **self._counts,
        }

    async def load_adapter(self, name: str) -> AdapterRef:
        """Load adapter ``name`` (or reload it when its files changed) now.

        Raises:
            UnknownAdapter, InvalidAdapter; AdapterSlotsBusy when every slot is held.
        """
        registry = self._require_registry(name)

        def load() -> AdapterRef:
            self._model, ref = registry.load(self._model, name, held=self._held())
            return ref

        return await self._call_in_worker(load)

    async def unload_adapter(self, name: str) -> bool:
        """Unload adapter ``name`` once no running request uses it; False if not loaded.

        Requests for it that arrive meanwhile wait, then load it again.
        """
        registry = self._require_registry(name)
        target = name if name in registry.loaded() else registry.aliases().get(name, name)

        def unload() -> Any:
            if target not in registry.loaded():
                return False
            if target in self._held():
                self._draining.add(target)
                return _RETRY
            self._draining.discard(target)
            self._model = registry.unload(self._model, target)
            return True

        return await self._call_in_worker(unload)

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, finish every accepted request, then free the model.

        Requests still unfinished after ``timeout_s`` end with finish reason "cancelled".
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join, timeout_s)
        if self._thread.is_alive():
            with self._cond:
                self._aborting = True
                self._cond.notify_all()
            await asyncio.to_thread(self._thread.join)

    # -- submission ----------------------------------------------------------------------

    def _submit(self, request: GenerationRequest, *, streaming: bool) -> Job:
        """Check ``request``, queue it, and wake the worker."""
        if self._closing or self._failure is not None:
            raise EngineUnavailable(self._failure or f"model {self.name!r}: shutting down")
        sampling = request_sampling(request, self.max_batch, self._context)
        adapter = None
        if request.adapter is not None:
            adapter = self._require_registry(request.adapter).resolve(request.adapter).name
        now = time.monotonic()
        deadline = None if request.timeout_s is None else now + request.timeout_s
        job = Job(request, adapter, streaming, Outbox(), now, deadline)
        job.rows = [Row(job, i, request.prompt_ids, adapter, sampling) for i in range(request.n)]
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._counts["rejected_total"] += 1
                raise QueueFull(self._retry_after())
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def _require_registry(self, name: str) -> AdapterRegistry:
        if self.registry is None:
            raise UnknownAdapter(f"adapter {name!r}: this server has no adapter registry")
        return self.registry

    def _retry_after(self) -> float:
        """Seconds until the queue has likely moved by one batch."""
        return max(1.0, self._request_s * (len(self._queue) / self.max_batch + 1))

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    async def _call_in_worker(self, operation: Callable[[], Any]) -> Any:
        """Run ``operation`` on the worker thread between two steps; its result."""
        outbox = Outbox()
        with self._cond:
            self._control.append((operation, outbox))
            self._cond.notify_all()
        item = await outbox.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    # -- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._start()
        except Exception as err:  # the model cannot load: refuse everything, say why
            self._failure = f"model {self._model_dir!r}: cannot load: {_first_line(err)}"
            log.error(self._failure)
            self._loaded.set()
            self._abort_all(EngineUnavailable(self._failure))
            return
        self._loaded.set()
        with torch.inference_mode():
            while self._wait_for_work():
                try:
                    self._iterate()
                except Exception as err:  # a failed step fails its rows, not the server
                    log.exception("generation step failed")
                    self._fail_running(RuntimeError(f"generation failed: {_first_line(err)}"))
        self._abort_all(EngineUnavailable(f"model {self.name!r}: shut down"))
        self._model = self._batch = None
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _iterate(self) -> None:
        """Admin operations, expired waiters, new rows in, one decode step."""
        self._run_controls()
        self._expire_queued()
        self._admit(self._take())
        if self._batch.size:
            self._batch.step(self._model)
            self._after_tokens(self._batch.rows)

    def _start(self) -> None:
        """Load the model and set up the batch."""
        with _BUILDING:
            model = load_model(self._model_dir, dtype=self._dtype, device=self._device)
        self._model = model.eval()
        self._batch = DecodeBatch(
            self.tokenizer,
            stop_ids=stop_ids(self._model, self.tokenizer),
            pad_id=pad_id(self.tokenizer),
            device=self._device,
        )

    def _wait_for_work(self) -> bool:
        """Block while idle; False once closing with nothing left (or when aborting)."""
        with self._cond:
            while True:
                if self._aborting:
                    return False
                if self._queue or self._control or self._batch.size:
                    return True
                if self._closing:
                    return False
                self._cond.wait()

    def _take(self) -> list[Job]:
        """Waiting jobs whose rows fit the batch now, first come first served.

        An idle worker first waits up to the batch window for more requests.
        """
        with self._cond:
            if not self._batch.size and self._queue:
                until = self._queue[0].submitted + self.batch_window_s
                while (
                    sum(len(job.rows) for job in self._queue) < self.max_batch
                    and (left := until - time.monotonic()) > 0
                    and not self._aborting
                ):
                    self._cond.wait(left)
            if not self._batch.can_join():
                return []
            room, taken = self.max_batch - self._batch.size, []
            for job in list(self._queue):
                if job.adapter in self._draining:
                    continue
                if len(job.rows) > room:
                    break
                self._queue.remove(job)
                taken.append(job)
                room -= len(job.rows)
            return taken

    def _admit(self, jobs: list[Job]) -> None:
        """Load the jobs' adapters, prefill their rows into the batch."""
        rows: list[Row] = []
        for position, job in enumerate(jobs):
            if job.cancelled:
                continue
            if job.adapter is not None:
                try:
                    with _BUILDING:
                        self._model, _ = self.registry.load(
                            self._model, job.adapter, held=self._held(rows)
                        )
                    self._batch.adapters_changed()
                except AdapterSlotsBusy:  # back to the front: they go once a slot frees
                    with self._cond:
                        self._queue.extendleft(reversed(jobs[position:]))
                    break
                except Exception as err:
                    job.outbox.put(err)
                    continue
            job.admitted = time.monotonic()
            rows += job.rows
        if not rows:
            return
        try:
            self._batch.admit(self._model, rows)
        except Exception as err:  # a failed prefill fails its requests, not the server
            log.exception("prefill failed")
            failure = RuntimeError(f"generation failed: {_first_line(err)}")
            for job in {id(row.owner): row.owner for row in rows}.values():
                job.outbox.put(failure)
            return
        self._after_tokens(rows)

    def _after_tokens(self, rows: list[Row]) -> None:
        """Stream new pieces, end rows that finished, timed out or lost their consumer."""
        now, leaving, done = time.monotonic(), [], []
        self._counts["batch_size_last"] = len(rows)
        self._counts["tokens_total"] += len(rows)
        self._counts["forward_passes_total"] += 1
        for row in rows:
            job = row.owner
            job.first_token = job.first_token or now
            if job.cancelled:
                leaving.append(row)
                continue
            if row.finish is None and job.deadline is not None and now >= job.deadline:
                row.finish = "cancelled"
            if row.finish is not None:
                leaving.append(row)
                if all(r.finish is not None for r in job.rows):
                    done.append(job)
            elif job.streaming and (piece := row.take_piece()):
                job.outbox.put(Delta(piece))
        self._counts["cancelled_total"] += len({id(r.owner) for r in leaving if r.owner.cancelled})
        self._batch.remove(leaving)  # before delivering: a caller who got its result sees it gone
        for job in done:
            self._deliver(job, now)

    def _deliver(self, job: Job, now: float) -> None:
        """Send a finished job's Generation (once)."""
        if job.delivered:
            return
        job.delivered = True
        generation = job.generation(now)
        self._counts["requests_total"] += 1
        self._request_s = 0.9 * self._request_s + 0.1 * generation.timings["total_s"]
        if not job.outbox.put(generation):
            job.cancelled = True

    def _held(self, joining: list[Row] = ()) -> set[str]:
        """Adapters that running (or joining) rows use."""
        return {row.adapter for row in (*self._batch.rows, *joining) if row.adapter}

    def _run_controls(self) -> None:
        """Run admin operations (adapter load/unload) queued by the event loop."""
        with self._cond:
            pending = list(self._control)
            self._control.clear()
        for operation, outbox in pending:
            try:
                with _BUILDING:
                    result = operation()
            except Exception as err:
                result = err
            self._batch.adapters_changed()
            if result is _RETRY:
                with self._cond:
                    self._control.append((operation, outbox))
            else:
                outbox.put(result)

    def _expire_queued(self) -> None:
        """End waiting jobs past their deadline, and drop those whose consumer left."""
        now = time.monotonic()
        with self._cond:
            expired = [
                job
                for job in self._queue
                if job.cancelled or (job.deadline is not None and job.deadline <= now)
            ]
            for job in expired:
                self._queue.remove(job)
        for job in expired:
            if job.cancelled:
                self._counts["cancelled_total"] += 1
                continue
            for row in job.rows:
                row.finish = "cancelled"
            self._deliver(job, now)

    def _fail_running(self, error: BaseException) -> None:
        """Fail every running row's request with ``error`` and empty the batch."""
        for job in {id(row.owner): row.owner for row in self._batch.rows}.values():
            job.outbox.put(error)
        self._batch.remove(list(self._batch.rows))

    def _abort_all(self, error: BaseException) -> None:
        """End everything left: running and queued requests finish "cancelled"."""
        now = time.monotonic()
        running = list(self._batch.rows) if self._batch is not None else []
        with self._cond:
            queued, controls = list(self._queue), list(self._control)
            self._queue.clear()
            self._control.clear()
        jobs = {id(row.owner): row.owner for row in running}
        for job in [*jobs.values(), *queued]:
            if self._failure is not None:
                job.outbox.put(error)
                continue
            for row in job.rows:
                row.finish = row.finish or "cancelled"
            self._deliver(job, now)
        for _, outbox in controls:
            outbox.put(error)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
