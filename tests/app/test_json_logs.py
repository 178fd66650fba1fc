"""LOG_FORMAT=json: one JSON object a line, with the ids of the request it is
about; the text format keeps them readable; secrets never reach a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.logs import REDACTED, ContextFilter, JsonFormatter, TextFormatter, configure_logging
from stories import telemetry

SECRET = "discord-token-that-must-never-show"


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines to a buffer, as configure_logging sets it up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter([SECRET]))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("storybot.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    "level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
)
def test_each_level_is_one_json_line_with_the_ids(
    json_lines: tuple[logging.Logger, io.StringIO], level: int
) -> None:
    logger, out = json_lines
    with telemetry.bound(request_id="req-1", story_id=42, guild_id=123456789012345678):
        logger.log(level, "story %d:\nwritten", 42)
    (line,) = lines(out)  # a line break in the message stays inside the one line
    assert line["level"] == logging.getLevelName(level)
    assert line["logger"] == "storybot.test.json"
    assert line["message"] == "story 42:\nwritten"
    assert str(line["time"]).endswith("Z") and str(line["time"])[:2] == "20"
    assert line["request_id"] == "req-1"
    assert line["story_id"] == 42
    assert line["guild_id"] == "123456789012345678"  # a snowflake, kept exact as a string


def test_ids_are_left_out_where_there_are_none_and_do_not_leak(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = json_lines
    with telemetry.bound(request_id="inside"):
        logger.info("in the request")
    logger.info("after it")
    inside, after = lines(out)
    assert inside["request_id"] == "inside" and "story_id" not in inside
    assert not {"request_id", "story_id", "guild_id"} & set(after)


def test_a_traceback_and_secrets(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_lines
    try:
        raise RuntimeError(f"the token was {SECRET}")
    except RuntimeError:
        logger.exception("failed with %s", SECRET)
    (line,) = lines(out)
    assert SECRET not in out.getvalue()
    assert line["message"] == f"failed with {REDACTED}"
    assert "RuntimeError: the token was [redacted]" in str(line["exception"])


def test_the_text_format_stays_readable_with_the_ids_at_the_end() -> None:
    record = logging.LogRecord("storybot", logging.INFO, __file__, 1, "hello %s", (SECRET,), None)
    ContextFilter().filter(record)
    assert TextFormatter([SECRET]).format(record).endswith(f"INFO    storybot: hello {REDACTED}")
    with telemetry.bound(request_id="r1", story_id=7):
        record = logging.LogRecord("storybot", logging.INFO, __file__, 1, "queued", (), None)
        ContextFilter().filter(record)
    assert TextFormatter().format(record).endswith("storybot: queued [request=r1 story=7]")


def test_configure_logging_json_writes_json_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = []  # configure_logging closes what it replaces: not pytest's
    try:
        configure_logging("INFO", fmt="json", secrets=[SECRET, "short"])
        with telemetry.bound(guild_id=5):
            logging.getLogger("storybot").warning("token %s, short", SECRET)
        logging.getLogger("storybot").debug("below the level")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = [json.loads(raw) for raw in capsys.readouterr().err.splitlines()]
    # A secret under 8 characters is not searched for: it would garble every line.
    assert line["message"] == f"token {REDACTED}, short" and line["guild_id"] == "5"


def test_a_request_id_that_repeats_a_secret_is_redacted(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    """A client chooses its X-Request-Id: sending the API key as one must not
    put the key in the log."""
    logger, out = json_lines
    with telemetry.bound(request_id=SECRET):
        logger.info("a request")
    (line,) = lines(out)
    assert SECRET not in out.getvalue()
    assert line["request_id"] == REDACTED


def test_at_debug_aiosqlite_does_not_log_each_statement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """LOG_LEVEL=DEBUG is for storybot's own lines: aiosqlite would add one per
    SQL statement, from its worker thread, even after a store is closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = logging.getLogger("aiosqlite")
    noisy_level = noisy.level
    root.handlers[:] = []
    try:
        configure_logging("DEBUG", fmt="json")
        noisy.debug("operation %s completed", "close_and_stop")
        logging.getLogger("storybot").debug("ours")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        noisy.setLevel(noisy_level)
    logged = [json.loads(raw) for raw in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in logged] == ["ours"]
