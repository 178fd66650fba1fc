"""Repeated warnings are logged once, then with a count (app/logs.py)."""

from __future__ import annotations

import logging

from app.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("aiohttp.server", level, __file__, 1, msg, args, None)


def test_a_flood_of_one_warning_is_one_line_then_a_count() -> None:
    clock = Clock()
    repeats = RepeatFilter(60.0, clock=clock)
    passed = [
        r
        for r in (record("bad request from %s", f"10.0.0.{i % 250}") for i in range(30_906))
        if repeats.filter(r)
    ]
    assert len(passed) == 1  # 30,906 of one kind within a minute: one line
    clock.now = 61.0
    later = record("bad request from %s", "10.0.0.9")
    assert repeats.filter(later)
    assert "[and 30905 more like it in the 61 s before]" in later.getMessage()
    assert later.getMessage().startswith("bad request from 10.0.0.9")


def test_other_kinds_and_info_lines_pass() -> None:
    repeats = RepeatFilter(60.0, clock=Clock())
    assert repeats.filter(record("disk full"))
    assert repeats.filter(record("queue full"))  # another message: another kind
    assert repeats.filter(record("disk full", level=logging.ERROR))  # another level
    assert all(repeats.filter(record("story %d done", i, level=logging.INFO)) for i in range(50))
    assert not repeats.filter(record("disk full"))
