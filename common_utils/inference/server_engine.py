"""The generation side of the course server: Lab-2.3's continuous-batching engine, driven by one worker
thread, with per-request sampling, cancellation and metrics.

Why Lab-2.3's engine and not `model.generate` on batches
    `generate` runs a batch until its longest member ends, so a request that arrives meanwhile waits for
    the whole batch (head-of-line blocking, the static batching Lab-2.3 measured). The paged engine
    schedules at every step (*Orca*, Yu et al., 2022): a new request joins the running batch at the next
    model step, and a finished or cancelled one leaves it at once and frees its KV blocks. Cancelling is
    therefore one flag that the worker reads between steps; no StoppingCriteria is needed. Its greedy
    tokens equal `generate(do_sample=False)` (tests/test_inference_paged_engine.py).

Why one worker thread
    A model step is blocking torch code. Running it in the event loop would freeze every HTTP connection
    for the step's duration; running steps from several threads at once would make them fight for the
    same cores and the same KV pool. One thread owns the model and the KV pool; the HTTP side only puts
    requests in a queue (`submit`), sets cancel flags (`cancel`) and receives events through a callback.

Sampling
    The taught `model_step` returns the arg-max of the logits. To let each request sample with its own
    temperature, top-p and seed without changing the taught engine, the model is wrapped for each step
    (`_SamplingModel`): for a sampling request, the drawn token is made the only finite logit, so the
    arg-max picks it; greedy requests (temperature 0) are left untouched and stay exactly `generate`'s.
    The filters are Lab-2.1's (`apply_temperature`, `apply_top_p`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common_utils.reference.paged_engine import PagedKVCache, Request, model_step, use_paged_attention
from common_utils.reference.sampling import apply_temperature, apply_top_p

logger = logging.getLogger("common_utils.inference.server")


@dataclass(frozen=True)
class TokenEvent:
    """One new token of a request (sent from the worker thread)."""

    token_id: int


@dataclass(frozen=True)
class FinishEvent:
    """A request left the engine: 'stop' (end-of-sequence token), 'length' (max_tokens reached) or
    'cancelled' (its client went away, hit a stop string or timed out)."""

    reason: str


@dataclass(frozen=True)
class ErrorEvent:
    """The engine failed while this request was in it (the message is for the log and the client)."""

    message: str


EngineEvent = TokenEvent | FinishEvent | ErrorEvent


class QueueFullError(RuntimeError):
    """The waiting queue is at its bound: the server answers 429 and the client retries later."""


@dataclass(eq=False)
class ServedRequest(Request):
    """Lab-2.3's `Request` plus what serving adds: sampling knobs, a cancel flag and an event callback.

    `on_event` is called from the worker thread; the HTTP side passes a function that hands the event to
    its own event loop (`loop.call_soon_threadsafe`)."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    on_event: Callable[[EngineEvent], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = 0.0  # time.perf_counter() when submitted
    last_token_at: float | None = None
    generator: Any = None  # torch.Generator for a seeded request, built by the worker

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class _SamplingModel:
    """The model as `model_step` sees it during one step: the same forward pass, but each sampling row's
    logits replaced by a one-hot (0 for the drawn token, -inf elsewhere), so the step's arg-max is the
    sample. `rows` must be in the order `model_step` packs its batch: the sequences already decoding
    first, then the new prompts (see `Engine._row_order`)."""

    def __init__(self, model, rows: list[ServedRequest]):
        self.model = model
        self.rows = rows

    @property
    def device(self):
        return self.model.device

    def __call__(self, **inputs):
        import torch

        output = self.model(**inputs)
        logits = output.logits[0]  # [rows, vocab], one row per request
        if logits.shape[0] != len(self.rows):
            raise RuntimeError(f"model_step packed {logits.shape[0]} rows for {len(self.rows)} requests")
        for row, request in enumerate(self.rows):
            if request.greedy:
                continue
            scores = apply_temperature(logits[row:row + 1].float(), request.temperature)
            if request.top_p < 1.0:
                scores = apply_top_p(scores, request.top_p)
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=request.generator).item()
            logits[row].fill_(float("-inf"))
            logits[row, token] = 0.0
        return output


@dataclass
class EngineStats:
    """What the HTTP side shows in /health and /metrics."""

    waiting: int
    running: int
    alive: bool


class Engine:
    """Continuous batching in one worker thread (see the module docstring for why).

    max_batch: most requests in one model step. max_queue: most requests waiting to be admitted; one
    more raises QueueFullError (HTTP 429). kv_cache_tokens: size of the KV pool; a request is admitted
    only when its worst case (prompt + max_tokens) fits beside the running ones' worst cases, so the pool
    can never run out mid-generation (Lab-2.3's admission rule; vLLM admits more and preempts instead)."""

    def __init__(self, model, eos_ids: set[int], max_batch: int = 8, max_queue: int = 64,
                 kv_cache_tokens: int = 8192, block_size: int = 16, threads: int | None = None,
                 metrics: Any = None):
        self.model = use_paged_attention(model.eval())
        self.eos_ids = set(eos_ids)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.threads = threads
        self.metrics = metrics
        self.cache = PagedKVCache(model.config, math.ceil(kv_cache_tokens / block_size), block_size,
                                  dtype=model.dtype, device=model.device)
        self._waiting: deque[ServedRequest] = deque()  # shared with the HTTP side: guarded by _lock
        self._running: list[ServedRequest] = []  # owned by the worker thread
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._clock_zero = time.perf_counter()

    # ---- the HTTP side's interface ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="course-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current step; requests still inside get an ErrorEvent."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, request: ServedRequest) -> None:
        """Queue a request, or raise QueueFullError when `max_queue` requests are already waiting."""
        blocks = self._worst_blocks(request)
        if blocks > self.cache.allocator.num_blocks:
            raise ValueError(f"prompt + max_tokens needs {blocks * self.cache.block_size} KV slots; "
                             f"the pool has {self.cache.allocator.num_blocks * self.cache.block_size}")
        with self._wakeup:
            if self._stopping:
                raise QueueFullError("the engine is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (max_queue)")
            request.submitted_at = time.perf_counter()
            request.arrival_s = request.submitted_at - self._clock_zero
            self._waiting.append(request)
            self._set_gauges()
            self._wakeup.notify()

    def cancel(self, request: ServedRequest) -> None:
        """Ask the worker to drop a request before its next step (safe from any thread, idempotent)."""
        request.cancelled.set()
        with self._wakeup:
            self._wakeup.notify()

    def stats(self) -> EngineStats:
        with self._lock:
            waiting = len(self._waiting)
        return EngineStats(waiting, len(self._running), self._thread is not None and self._thread.is_alive())

    # ---- the worker thread ---------------------------------------------------------------------
    def _worst_blocks(self, request: Request) -> int:
        return -(-(len(request.prompt_ids) + request.max_new_tokens) // self.cache.block_size)

    def _run(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)  # pinned in the thread that runs the model
        while True:
            with self._wakeup:
                while not (self._waiting or self._running or self._stopping):
                    self._wakeup.wait()
                if self._stopping:
                    break
                self._admit()
                self._set_gauges()
            self._retire([r for r in self._running if r.cancelled.is_set()], "cancelled")
            if not self._running:
                continue
            try:
                tokens = self._step()
            except Exception as error:  # noqa: BLE001 - fail these requests, keep serving the next ones
                logger.exception("engine step failed")
                self._fail(list(self._running), f"generation failed: {type(error).__name__}: {error}")
                continue
            self._record(tokens)
        with self._lock:
            leftover = list(self._waiting) + self._running
            self._waiting.clear()
        self._fail(leftover, "the server is shutting down")

    def _admit(self) -> None:
        """First come, first served: move waiting requests into the batch while a slot is free and the
        KV pool holds every admitted request's worst case. Cancelled waiting requests are dropped."""
        for request in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(request)
            self._emit(request, FinishEvent("cancelled"))
        reserved = sum(self._worst_blocks(r) for r in self._running)
        while self._waiting and len(self._running) < self.max_batch:
            request = self._waiting[0]
            if reserved + self._worst_blocks(request) > self.cache.allocator.num_blocks:
                break
            self._waiting.popleft()
            reserved += self._worst_blocks(request)
            request.admit_s = time.perf_counter() - self._clock_zero
            if request.seed is not None:
                import torch

                request.generator = torch.Generator(device=self.model.device).manual_seed(request.seed)
            self._running.append(request)

    def _row_order(self) -> list[ServedRequest]:
        """The order of `model_step`'s packed rows: sequences with stored K/V (decoding), then new ones."""
        decoding = [r for r in self._running if r.request_id in self.cache.lengths]
        return decoding + [r for r in self._running if r.request_id not in self.cache.lengths]

    def _step(self) -> list[int]:
        model = self.model
        if not all(r.greedy for r in self._running):
            model = _SamplingModel(self.model, self._row_order())
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(self._running))
        return model_step(model, self.cache, self._running)

    def _record(self, tokens: list[int]) -> None:
        """Append each request's new token, send it, time it, and retire the requests that ended."""
        now = time.perf_counter()
        for request, token in zip(self._running, tokens):
            request.output_ids.append(token)
            if request.last_token_at is None:
                request.first_token_s = now - self._clock_zero
                if self.metrics is not None:
                    self.metrics.ttft.observe(now - request.submitted_at)
            elif self.metrics is not None:
                self.metrics.itl.observe(now - request.last_token_at)
            request.last_token_at = now
            self._emit(request, TokenEvent(token))
        ended = [r for r in self._running if r.finished(self.eos_ids)]
        self._retire([r for r in ended if r.output_ids[-1] in self.eos_ids], "stop")
        self._retire([r for r in ended if r in self._running], "length")

    def _retire(self, requests: list[ServedRequest], reason: str) -> None:
        for request in requests:
            self._running.remove(request)
            self.cache.free(request.request_id)
            request.finish_s = time.perf_counter() - self._clock_zero
            self._count_tokens(request)
            self._emit(request, FinishEvent(reason))
        self._set_gauges()

    def _fail(self, requests: list[ServedRequest], message: str) -> None:
        for request in requests:
            if request in self._running:
                self._running.remove(request)
            self.cache.free(request.request_id)
            self._emit(request, ErrorEvent(message))
        self._set_gauges()

    def _count_tokens(self, request: ServedRequest) -> None:
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(len(request.prompt_ids))
            self.metrics.completion_tokens.inc(len(request.output_ids))

    def _set_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.in_flight.set(len(self._running))

    @staticmethod
    def _emit(request: ServedRequest, event: EngineEvent) -> None:
        if request.on_event is None:
            return
        try:
            request.on_event(event)
        except RuntimeError:  # the HTTP side's event loop is closed: nobody is listening any more
            pass
