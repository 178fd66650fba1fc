"""How fast the pool is writing, measured: tokens per second while busy.

`Busy.retry_after` used to be a guess (batches ahead times a moving average of
batch time) and said 28 to 50 s for bursts that finished in 1 to 4 s. A retry
hint should instead say when the work queued ahead will be done: the tokens
still to write divided by the rate the worker has been writing them at
recently. The rate counts only time spent generating, so an idle evening does
not make a busy minute look slow.

Thread use: the worker calls `batch_started`, `batch_ended` and `job_ended`;
the event loop calls `rate`. Callers hold the pool's lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable


class Throughput:
    """Tokens written per second of generating, over the last `window_s`."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._tokens_done = 0  # tokens of jobs that have ended
        self._busy_done = 0.0  # seconds spent in batches that have ended
        self._batch_started: float | None = None
        # (wall time, tokens written, busy seconds) at moments while busy.
        self._samples: deque[tuple[float, int, float]] = deque()

    def batch_started(self) -> None:
        now = self._clock()
        self._batch_started = now
        self._sample(now)

    def batch_ended(self) -> None:
        now = self._clock()
        if self._batch_started is not None:
            self._busy_done += now - self._batch_started
            self._batch_started = None
        self._sample(now)

    def job_ended(self, tokens: int) -> None:
        self._tokens_done += tokens

    def rate(self, running: Iterable[int]) -> float | None:
        """Tokens per second, or None before enough has been measured.
        `running`: tokens written so far by each job still being written."""
        now = self._clock()
        tokens, busy = self._progress(now, running)
        while len(self._samples) > 1 and now - self._samples[1][0] > self.window_s:
            self._samples.popleft()
        if not self._samples or now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, tokens, busy))  # keeps the window moving
        _, first_tokens, first_busy = self._samples[0]
        spent = busy - first_busy
        made = tokens - first_tokens
        if spent < 0.2 or made <= 0:
            return None
        return made / spent

    def _progress(self, now: float, running: Iterable[int]) -> tuple[int, float]:
        busy = self._busy_done
        if self._batch_started is not None:
            busy += now - self._batch_started
        return self._tokens_done + sum(running), busy

    def _sample(self, now: float) -> None:
        # Between batches no job is running: every token is counted as done.
        tokens, busy = self._progress(now, ())
        self._samples.append((now, tokens, busy))
