"""Logging set-up: one format, and repeated warnings logged once with a count.

A misbehaving client can make the same warning happen thousands of times a
minute (the issue that added this measured 30,906 tracebacks, 13.8 MB, from one
slow-header flood). `RepeatFilter` lets the first record of a kind through,
counts the repeats for `window_s` seconds, and adds the count to the next record
of that kind it lets through. INFO and DEBUG records always pass.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Drops WARNING-and-above records that repeat one already logged within
    `window_s`; the next one logged says how many were dropped.

    Records are of one kind when they come from the same logger, at the same
    level, with the same message template and the same exception type (their
    arguments may differ: "bad request from %s" from many addresses is one kind).
    """

    def __init__(
        self,
        window_s: float = 60.0,
        *,
        max_kinds: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.max_kinds = max_kinds
        self._clock = clock
        # kind -> [when the last one was let through, repeats dropped since]
        self._kinds: OrderedDict[tuple[object, ...], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc_type = record.exc_info[0] if record.exc_info else None
        kind = (record.name, record.levelno, str(record.msg), exc_type)
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        dropped = int(seen[1]) if seen is not None else 0
        self._kinds[kind] = [now, 0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > self.max_kinds:
            self._kinds.popitem(last=False)
        if seen is not None and dropped:
            since = now - seen[0]
            record.msg = f"{record.msg} [and {dropped} more like it in the {since:.0f} s before]"
        return True


def configure_logging(level: str, *, repeat_window_s: float = 60.0) -> None:
    logging.basicConfig(level=level, format=FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter(repeat_window_s))
    # discord.py logs the gateway URL and session at INFO: fine; tokens never.
    logging.getLogger("discord.http").setLevel(max(logging.INFO, logging.getLevelName(level)))
