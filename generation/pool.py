"""The generation executor pool: GPT-2 behind a queue, usable from asyncio.

One worker thread owns the backend (model and tokenizer). Callers `submit` a
`GenerationRequest` from the event loop and get a `Ticket`: its queue position
(and a stream of changes), the text as it is written, the result, and `cancel`.

- Requests waiting when the worker is free go together as one batch, and a
  request that arrives while a batch runs joins it at the next token
  (continuous batching), up to `max_batch` rows.
- The queue is bounded: when it is full `submit` raises `Busy` at once with an
  estimate of when to retry, instead of letting waits grow without limit.
- Validation happens in `submit`, before anything is queued.
- Results and text reach the loop through `call_soon_threadsafe` only.

Why a thread and not a process, measured (bench/RESULTS.md): ONNX Runtime,
torch and numpy release the GIL inside their kernels, so while the worker
generates eight stories the event loop is late by at most 4 ms at the 99th
percentile. A worker process would do the same work on the same cores, and
would add a second copy of the weights and a pipe crossing for every streamed
token. A test holds the lag under 100 ms.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from generation.backend import Backend
from generation.errors import (
    Busy,
    Cancelled,
    GenerationError,
    InvalidRequest,
    PoolClosed,
    PromptTooLong,
    TimedOut,
)
from generation.job import Job
from generation.messages import N_
from generation.throughput import Throughput
from generation.types import GenerationParams, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

BackendFactory = Callable[[], Backend]
_ids = itertools.count(1)


@dataclass
class PoolStats:
    batches: int = 0  # calls into the backend (each may grow by admission)
    jobs_done: int = 0
    largest_batch: int = 0
    admitted_late: int = 0  # requests that joined a running batch
    new_tokens: int = 0  # tokens written by the jobs that have ended


class Ticket:
    """A caller's handle on one submitted request. Use it on the event loop.

    Its output is a broadcast: any number of readers may follow `positions()`
    and `stream()` at once, each gets every change and the end, and a reader
    that stops early disturbs no other.
    """

    def __init__(self, pool: GenerationPool, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.id = f"g{next(_ids)}"
        self._pool = pool
        self._job = job
        self._future: asyncio.Future[GenerationResult] = loop.create_future()
        self._deltas: list[str] = []
        self._ended = False
        # Replaced by a fresh event at each change: a reader takes the current one,
        # looks at the state, and waits; no reader can clear another's wake-up.
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self.seed: int = job.params.seed or 0

    @property
    def params(self) -> GenerationParams:
        """The parameters used, with the concrete seed."""
        return self._job.params

    @property
    def position(self) -> int:
        """1.. while waiting; 0 while generating; -1 once finished."""
        return self._pool._position(self._job)

    def done(self) -> bool:
        return self._future.done()

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self._deltas)

    async def positions(self) -> AsyncIterator[int]:
        """Yield the position now and at each change, until generation starts."""
        last = None
        while True:
            changed = self._changed
            position = self.position
            if position != last:
                yield position
                last = position
            if position <= 0 or self._future.done():
                return
            if changed is self._changed:  # nothing moved while the reader was away
                await changed.wait()

    async def stream(self) -> AsyncIterator[str]:
        """Yield text as it is written, from the start; ends when the request ends."""
        seen = 0
        while True:
            changed = self._changed
            while seen < len(self._deltas):
                seen += 1
                yield self._deltas[seen - 1]
            if self._ended:
                return
            if changed is self._changed and seen == len(self._deltas):
                await changed.wait()

    async def result(self) -> GenerationResult:
        return await asyncio.shield(self._future)

    def cancel(self) -> bool:
        """Cancel: a waiting request leaves the queue; a running one stops at the next
        token. Returns False when it had already finished."""
        return self._pool._cancel(self)

    # Called on the loop thread by the pool.
    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _push(self, delta: str) -> None:
        if not self._ended:
            self._deltas.append(delta)
            self._notify()

    def _resolve(self, result: GenerationResult | None, error: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._future.done():
            if error is not None:
                self._future.set_exception(error)
                self._future.exception()  # a caller who never awaits must not be warned
            else:
                assert result is not None
                self._future.set_result(result)
        self._ended = True
        self._notify()


class Reservation:
    """A validated request and a place in the queue held for it while it is not
    submitted yet (its message is being posted): the typed result of the one
    validation step. `submit(request, reservation)` uses it without validating
    again; `release()` gives the place back. Releasing twice, or after use, does
    nothing."""

    def __init__(self, pool: GenerationPool, request: GenerationRequest) -> None:
        self._pool = pool
        self.request = request  # validated
        self.tokens = request.params.max_new_tokens  # for retry estimates
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            with self._pool._cond:
                self._pool._reserved -= 1
                self._pool._reserved_tokens -= self.tokens


class GenerationPool:
    def __init__(
        self,
        backend_factory: BackendFactory,
        *,
        max_queue: int = 32,
        max_batch: int = 8,
        default_timeout_s: float = 600.0,
        max_new_tokens_limit: int = 1000,
    ) -> None:
        self._factory = backend_factory
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.default_timeout_s = default_timeout_s
        self.max_new_tokens_limit = max_new_tokens_limit
        self.stats = PoolStats()
        self.backend: Backend | None = None
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._tickets: dict[int, Ticket] = {}  # id(job) -> ticket; loop thread only
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._seconds_per_job = 10.0  # moving estimate, until throughput is measured
        self.throughput = Throughput()
        self._reserved = 0  # places held by `reserve()` for requests not yet submitted
        self._reserved_tokens = 0  # the tokens those requests will ask for

    # ----------------------------------------------------------------- life cycle
    async def start(self) -> None:
        """Start the worker and load the model; raises the backend's load error."""
        self._loop = asyncio.get_running_loop()
        loaded: asyncio.Future[Backend] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loaded,), name="generation-worker", daemon=True
        )
        self._thread.start()
        self.backend = await loaded

    async def __aenter__(self) -> GenerationPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def ready(self) -> bool:
        return self.backend is not None and not self._closing

    async def aclose(self, grace_s: float = 10.0) -> None:
        """Stop taking requests and fail the waiting ones with `PoolClosed` at once;
        let running ones finish for up to `grace_s` seconds, then stop them (they
        fail with `PoolClosed` too). Returns within about `grace_s` + 2 seconds
        and never leaves a caller waiting."""
        if self._closing:
            return
        self._closing = True
        with self._cond:
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in left:
            self._finish_on_loop(job, None, PoolClosed())
        self._positions_changed()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            log.warning("stories still running after %.0f s; stopping them", grace_s)
        with self._cond:
            for job in self._running:
                job.close_requested = True
            self._cond.notify_all()
        self._wake_backend()
        if self._thread is not None and self._thread.is_alive():
            # The worker stops its rows at the next token; a backend stuck in a
            # call is left behind (the thread is a daemon) rather than waited for.
            await asyncio.to_thread(self._thread.join, 2.0)
        # Anything still unresolved (a stuck backend) is failed, not left hanging.
        for ticket in list(self._tickets.values()):
            ticket._resolve(None, PoolClosed())
        self._tickets.clear()

    # ------------------------------------------------------------------ requests
    def validate(self, request: GenerationRequest) -> None:
        """Raise `InvalidRequest` for anything the worker could not serve."""
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidRequest(N_("The prompt is empty."))
        request.params.validate(self.max_new_tokens_limit)
        context = self.backend.context_size if self.backend else 1024
        # Byte-level BPE never makes more tokens than UTF-8 bytes: a sound bound
        # without touching the worker's tokenizer.
        if request.steering_bytes() + request.params.max_new_tokens + 1 > context:
            raise PromptTooLong(
                f"max_new_tokens={request.params.max_new_tokens} leaves no room for the story "
                f"in the model's {context}-token context"
                + (
                    ""
                    if not (request.memory or request.authors_note)
                    else " with this memory and author's note"
                )
                + "; ask for fewer tokens."
            )
        if request.timeout_s is not None and not request.timeout_s > 0:
            raise InvalidRequest("timeout_s must be positive.")

    def reserve(self, request: GenerationRequest) -> Reservation:
        """Validate `request` and hold a place in the queue for it, so that bad
        input and `Busy` are known before anything is stored or shown to anyone.
        Raises `InvalidRequest`, `Busy`, `PoolClosed`."""
        if self._closing or self._loop is None or self.backend is None:
            raise PoolClosed()
        self.validate(request)
        with self._cond:
            waiting = len(self._waiting) + self._reserved
            if waiting >= self.max_queue:
                raise Busy(self.retry_estimate(waiting))
            self._reserved += 1
            self._reserved_tokens += request.params.max_new_tokens
        return Reservation(self, request)

    def predicted_position(self) -> int:
        """The position a request submitted now would get (1 = next in line)."""
        with self._cond:
            return len(self._waiting) + 1

    def submit(self, request: GenerationRequest, reservation: Reservation | None = None) -> Ticket:
        """Queue a request (on the event loop), in the place `reservation` holds if
        given (then it was validated when reserved). Raises `InvalidRequest`,
        `Busy`, `PoolClosed`; never blocks."""
        if reservation is not None:
            if not reservation.held:
                raise ValueError("this reservation was released or used already")
            if reservation.request is not request:
                raise ValueError("this reservation holds a place for another request")
            reservation.release()  # submitted now: the place becomes the request's own
        if self._closing or self._loop is None or self.backend is None:
            raise PoolClosed()
        if reservation is None:
            self.validate(request)
        params = request.params.with_seed()
        timeout = request.timeout_s or self.default_timeout_s
        now = time.monotonic()
        job = Job(
            request=request,
            params=params,
            submitted_at=now,
            deadline=now + timeout,
            on_text=lambda _: None,
            on_start=lambda: None,
            on_finish=self._on_finish,
            eos_token_id=getattr(self.backend, "eos_token_id", None),
        )
        ticket = Ticket(self, job, self._loop)
        loop = self._loop

        def on_text(delta: str) -> None:  # worker thread
            loop.call_soon_threadsafe(ticket._push, delta)

        def on_start() -> None:  # worker thread
            loop.call_soon_threadsafe(self._positions_changed)

        job.on_text, job.on_start = on_text, on_start
        with self._cond:
            held = 0 if reservation is not None else self._reserved
            if len(self._waiting) + held >= self.max_queue:
                raise Busy(self.retry_estimate(len(self._waiting) + held))
            self._waiting.append(job)
            self._tickets[id(job)] = ticket
            self._idle.clear()
            self._cond.notify()
        self._wake_backend()
        ticket._timer = loop.call_later(timeout, self._expire, ticket)
        log.debug("queued %s at position %d", ticket.id, len(self._waiting))
        return ticket

    def retry_estimate(self, waiting: int) -> float:
        """Seconds until the work queued ahead of a request refused now is done:
        the tokens still to write (the rest of every running job, all of every
        waiting or reserved one) over the tokens per second measured recently.
        Before any measurement: batches ahead times the time a batch has taken."""
        with self._cond:
            rate = self.throughput.rate(job.new_tokens for job in self._running)
            if rate is None:
                rounds = math.ceil((waiting + 1) / self.max_batch)
                return max(1.0, rounds * self._seconds_per_job)
            ahead = sum(max(0, job.params.max_new_tokens - job.new_tokens) for job in self._running)
            ahead += sum(job.params.max_new_tokens for job in self._waiting)
            ahead += self._reserved_tokens
        return min(3600.0, max(1.0, ahead / rate))

    def tokens_per_second(self) -> float | None:
        """Tokens written per second of generating over the last minute, or None
        before enough has been measured (for metrics)."""
        with self._cond:
            return self.throughput.rate(job.new_tokens for job in self._running)

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def _position(self, job: Job) -> int:
        with self._cond:
            if job in self._running:
                return 0
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return -1

    def _cancel(self, ticket: Ticket) -> bool:
        job = ticket._job
        with self._cond:
            if job in self._running:
                job.cancel_requested = True  # the worker stops it at the next token
                running = True
            elif job in self._waiting:
                self._waiting.remove(job)
                running = False
            else:
                return False
        if running:
            self._wake_backend()
        else:
            self._finish_on_loop(job, None, Cancelled())
            self._positions_changed()
        return True

    def _wake_backend(self) -> None:
        if self.backend is not None:
            self.backend.wake()

    def _expire(self, ticket: Ticket) -> None:
        job = ticket._job
        with self._cond:
            if job not in self._waiting:
                return  # running jobs watch their own deadline
            self._waiting.remove(job)
        self._finish_on_loop(job, None, TimedOut(N_("The story waited too long in the queue.")))
        self._positions_changed()

    # ------------------------------------------------------------- loop thread
    def _positions_changed(self) -> None:
        for ticket in list(self._tickets.values()):
            ticket._notify()

    def _finish_on_loop(
        self, job: Job, result: GenerationResult | None, error: BaseException | None
    ) -> None:
        ticket = self._tickets.pop(id(job), None)
        if ticket is not None:
            ticket._resolve(result, error)
        with self._cond:
            if not self._waiting and not self._running:
                self._idle.set()

    # ----------------------------------------------------------- worker thread
    def _run(self, loaded: asyncio.Future[Backend]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            backend = self._factory()
        except BaseException as error:
            loop.call_soon_threadsafe(_set_exception, loaded, error)
            return
        rehearse = getattr(backend, "rehearse", None)
        if rehearse is not None:  # a local engine: its first story's code, read in now
            try:
                rehearse()
            except Exception:  # the first request then pays for it; it still gets served
                log.warning("the story at load failed", exc_info=True)
        loop.call_soon_threadsafe(_set_result, loaded, backend)
        try:
            while True:
                with self._cond:
                    while not self._waiting and not self._closing:
                        self._cond.wait()
                    if not self._waiting:  # closing and nothing left
                        break
                    jobs = self._take(self.max_batch)
                try:
                    self._generate(backend, jobs)
                except Exception:  # the worker must outlive any one batch
                    log.exception("generation worker error")
                    with self._cond:
                        stranded = [job for job in self._running if not job.finished]
                    for job in stranded:
                        self._fail(job, GenerationError(N_("Generation failed; please try again.")))
        finally:
            backend.close()

    def _take(self, count: int) -> list[Job]:
        """Pop up to `count` waiting jobs into the running set (lock held)."""
        jobs: list[Job] = []
        while self._waiting and len(jobs) < count:
            job = self._waiting.popleft()
            self._running.add(job)
            jobs.append(job)
        return jobs

    def _prepare(self, backend: Backend, jobs: list[Job]) -> list[Job]:
        ready = []
        for job in jobs:
            try:
                job.prepare(backend)
            except Exception as error:
                job.log(
                    log,
                    logging.ERROR,
                    "could not prepare a request; the rest of its batch goes on",
                    exc_info=True,
                )
                self._fail(
                    job,
                    GenerationError(
                        f"This story could not be prepared ({type(error).__name__}); "
                        "please try again."
                    ),
                )
                continue
            ready.append(job)
        return ready

    def _generate(self, backend: Backend, jobs: list[Job]) -> None:
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        in_batch = len(jobs)

        def admit(room: int) -> list[Job]:
            nonlocal in_batch
            with self._cond:
                if self._closing:
                    return []
                late = self._take(room)
            if late:
                self.stats.admitted_late += len(late)
                in_batch += len(late)
                self.stats.largest_batch = max(self.stats.largest_batch, in_batch)
            return self._prepare(backend, late)

        started = time.monotonic()
        with self._cond:
            self.throughput.batch_started()
        ready = self._prepare(backend, jobs)
        try:
            if ready:
                backend.generate(ready, admit)
        except Exception:
            log.exception("generation failed")
        finally:
            with self._cond:
                stranded = [job for job in self._running if not job.finished]
            for job in stranded:
                self._fail(job, GenerationError(N_("Generation failed; please try again.")))
        elapsed = time.monotonic() - started
        with self._cond:
            self.throughput.batch_ended()
        if ready:
            # Each job costs about a batch's time when batched: a fair retry hint.
            self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * elapsed

    def _fail(self, job: Job, error: BaseException) -> None:
        with self._cond:
            self._running.discard(job)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._finish_on_loop, job, None, error)

    def _on_finish(self, job: Job) -> None:
        """Job hook, on the worker: deliver the outcome as soon as a job ends."""
        with self._cond:
            self._running.discard(job)
            self.throughput.job_ended(job.new_tokens)
        self.stats.jobs_done += 1
        self.stats.new_tokens += job.new_tokens
        result: GenerationResult | None = job.result()
        error: GenerationError | None = None
        if job.error is not None:
            error = job.error
        elif job.close_requested:
            error = PoolClosed()
        elif job.finish_reason == "cancelled":
            error = Cancelled()
        elif job.finish_reason == "timeout" and not job.new_tokens:
            error = TimedOut()
        if error is not None:
            error.partial = result  # type: ignore[attr-defined]
            result = None
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._finish_on_loop, job, result, error)
        if job.finish_reason == "timeout":
            job.log(log, logging.WARNING, "request timed out after %d tokens", job.new_tokens)


def _set_result(future: asyncio.Future[Backend], value: Backend) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Backend], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
