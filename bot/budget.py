"""One budget for every REST request the bot sends Discord.

Discord allows a bot token about 50 requests a second over all routes (the
global rate limit); a 429 past it stalls every request for its `retry_after`.
The bot keeps itself below a budget of its own (`DISCORD_REQUESTS_PER_S`,
40 by default): at most that many requests in any rolling second.

- Every request waits its turn (new messages, final edits, reactions,
  commands): they are all needed, and they go out in the order they came.
- A stream edit (text shown while it is being written) only goes out when
  there is room to spare right now: it never waits, so it never delays a
  request that matters, and a skipped one is made up by the next (which
  shows more text). `stream_interval` spaces the edits of each message so
  that, all streams together, they use about half the budget: with more
  stories at once, each message is edited less often.

Interaction answers and followups (routes under /interactions and
/webhooks) are outside Discord's global limit and must answer within
3 seconds, so they are not counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

WINDOW_S = 1.0
STREAM_SHARE = 0.5  # of the budget, for stream edits of all messages together
RESERVE_SHARE = 0.25  # of the budget, kept free from stream edits for what matters

_optional: contextvars.ContextVar[bool] = contextvars.ContextVar("optional", default=False)


class Skipped(Exception):
    """A stream edit found no room in the budget and was not sent."""


def exempt(path: str) -> bool:
    """Interaction responses and followups: outside Discord's global limit."""
    return path.startswith(("/interactions/", "/webhooks/"))


class RequestBudget:
    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.limit = max(1, int(per_second * WINDOW_S))  # requests in any rolling window
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()  # who waits, waits in order
        self._streams: set[object] = set()
        self.sent = 0
        self.skipped = 0  # stream edits not sent for want of room

    # ---------------------------------------------------------------- budget
    def _room(self) -> int:
        now = self._clock()
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        return self.limit - len(self._sent)

    def idle(self) -> bool:
        """No request counted in the last second: the whole budget is free."""
        return self._room() == self.limit

    def _take(self) -> None:
        self._sent.append(self._clock())
        self.sent += 1

    async def acquire(self) -> None:
        """Wait for room in the budget (in turn), then count one request."""
        async with self._lock:
            if self._room() <= 0:
                # Until the oldest request leaves the window (and a hair more:
                # the loop may wake a timer a clock tick early).
                await asyncio.sleep(max(0.0, self._sent[0] + WINDOW_S - self._clock()) + 0.002)
                self._room()
            self._take()

    def try_acquire(self) -> bool:
        """Count one optional request if there is room to spare now: nobody is
        waiting and the reserve stays free."""
        reserve = max(1, int(self.limit * RESERVE_SHARE)) if self.limit > 1 else 0
        if self._lock.locked() or self._room() <= reserve:
            self.skipped += 1
            return False
        self._take()
        return True

    # --------------------------------------------------------------- streams
    @contextlib.contextmanager
    def streaming(self, key: object) -> Iterator[None]:
        """While a message is being streamed into (for `stream_interval`)."""
        self._streams.add(key)
        try:
            yield
        finally:
            self._streams.discard(key)

    def stream_interval(self, base_s: float) -> float:
        """Seconds between two edits of one streamed message: `base_s`, or more
        when all streams' edits would take over STREAM_SHARE of the budget."""
        streams = max(1, len(self._streams))
        return max(base_s, streams / (self.per_second * STREAM_SHARE))

    @contextlib.contextmanager
    def optional(self) -> Iterator[None]:
        """Requests made inside are stream edits: sent only if there is room
        now, else they raise `Skipped`."""
        token = _optional.set(True)
        try:
            yield
        finally:
            _optional.reset(token)

    # ---------------------------------------------------------------- wiring
    def wrap(self, request: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """discord.py's `HTTPClient.request`, made to count against the budget."""

        async def budgeted(route: Any, **kwargs: Any) -> T:
            if not exempt(str(getattr(route, "path", ""))):
                if _optional.get():
                    if not self.try_acquire():
                        raise Skipped()
                else:
                    await self.acquire()
            return await request(route, **kwargs)

        return budgeted
