"""Logging set-up: readable text or one JSON object a line, the ids of the
request each line is about, and repeated warnings logged once with a count.

`LOG_FORMAT=json` writes each record as one JSON object on one line: time (UTC,
ISO 8601), level, logger, message, and the request id, story id and guild id
where there is one (stories.telemetry), plus the traceback as `exception`.
The default text format adds the same ids at the end of the line in brackets.
Either way, the values of the secrets (DISCORD_TOKEN, HTTP_API_KEY,
OPENAI_API_KEY) are replaced by [redacted] should any code ever log one.

A misbehaving client can make the same warning happen thousands of times a
minute (the issue that added this measured 30,906 tracebacks, 13.8 MB, from one
slow-header flood). `RepeatFilter` lets the first record of a kind through,
counts the repeats for `window_s` seconds, and adds the count to the next record
of that kind it lets through. INFO and DEBUG records always pass.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Literal

from stories import telemetry

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s"
LogFormat = Literal["text", "json"]
CONTEXT_FIELDS = ("request_id", "story_id", "guild_id")
_SHORT = {"request_id": "request", "story_id": "story", "guild_id": "guild"}
REDACTED = "[redacted]"
# A secret shorter than this is not searched for: replacing a few common
# letters everywhere would garble every line (and nothing logs secrets anyway).
MIN_REDACTED_CHARS = 8


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


class ContextFilter(logging.Filter):
    """Adds the log context of the task that logs (request_id, story_id,
    guild_id; None where there is none) to each record, and `context`, the
    same as text for the end of a line (" [request=... story=...]" or "")."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = telemetry.current()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:  # `extra=` wins
                setattr(record, name, fields.get(name))
        shown = [
            f"{_SHORT[name]}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name)) is not None
        ]
        record.context = f" [{' '.join(shown)}]" if shown else ""
        return True


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _secrets(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(v for v in values if v and len(v) >= MIN_REDACTED_CHARS)


class TextFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(FORMAT)
        self._secrets = _secrets(secrets)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "context"):  # a handler without ContextFilter
            record.context = ""
        return _redact(super().format(record), self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object a line. Ids are strings except story_id (a guild id is
    a Discord snowflake, past what a JSON number holds exactly in many readers)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._secrets = _secrets(secrets)

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _redact(record.getMessage(), self._secrets),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                # A client chooses its request id: one that repeats a secret is redacted too.
                line[name] = value if name == "story_id" else _redact(str(value), self._secrets)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = _redact(record.exc_text, self._secrets)
        if record.stack_info:
            line["stack"] = _redact(self.formatStack(record.stack_info), self._secrets)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: str,
    *,
    fmt: LogFormat = "text",
    secrets: Iterable[str | None] = (),
    repeat_window_s: float = 60.0,
) -> None:
    """Log to stderr at `level`, as text or JSON lines; `secrets` never appear."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    handler.addFilter(RepeatFilter(repeat_window_s))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # discord.py logs the gateway URL and session at INFO: fine; tokens never.
    # aiosqlite logs every statement at DEBUG, from its worker thread (also the
    # closing one, after the store is closed): never wanted, even at DEBUG.
    for noisy in ("discord.http", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
