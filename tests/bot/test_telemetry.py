"""What the bot reports: stories by outcome, Discord's error codes and 429
waits, and the interaction's id and guild in each log line of a command."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from stories.genres import GenreRegistry
from tests.api.test_request_ids import Records
from tests.app.test_metrics import parse, value
from tests.bot.conftest import BotEnv
from tests.bot.helpers import button, is_story
from tests.fakediscord.harness import FakeDiscord


@pytest.fixture
async def metered(
    tmp_path: Path, tiny_model_dir: Path, genres: GenreRegistry
) -> AsyncIterator[BotEnv]:
    fake = FakeDiscord()
    await fake.start()
    env = BotEnv(fake, tmp_path / "bot.sqlite3", tiny_model_dir, genres, {"max_batch": 1})
    env.observer = Metrics(CollectorRegistry(), process=False)
    await env.start()
    try:
        yield env
        await env.stop()
        fake.assert_clean()
    finally:
        await env.stop()
        await fake.stop()


def scrape(env: BotEnv) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    assert isinstance(env.observer, Metrics)
    return parse(env.observer.exposition()[0].decode())


async def test_stories_errors_and_rate_limits_are_counted(metered: BotEnv) -> None:
    fake, env = metered.fake, metered
    # A missed deferral (10062) and a rate-limited post (429, waited out).
    unknown = {"message": "Unknown interaction", "code": 10062}
    fake.server.inject("POST", r"/interactions/\d+/[^/]+/callback$", 404, unknown)
    limited = {"message": "You are being rate limited.", "retry_after": 0.05, "global": False}
    scope = {"X-RateLimit-Scope": "user", "Retry-After": "1"}
    fake.server.inject("POST", r"/channels/\d+/messages$", 429, limited, headers=scope)
    await fake.invoke("story", user=fake.alice, genre="crime", prompt="Counted", length="short")
    await fake.wait_for_message(lambda m: is_story(m) and "Counted" in m["content"])
    # A story cancelled while it waits behind another.
    env.backend.hold()
    running = await fake.invoke("story", user=fake.bob, genre="crime", prompt="Ahead")
    await running.deferred()
    await fake.wait_until(lambda: env.backend.entered.is_set())
    queued = await fake.invoke("story", user=fake.carol, genre="crime", prompt="Behind")
    await queued.deferred()
    behind = await fake.wait_for_message(lambda m: "Behind" in m["content"])
    cancel = await fake.click(behind, button(behind, "Cancel"), user=fake.carol)
    await cancel.reply(lambda m: m["content"] == "Cancelled.")
    # A prompt that is refused: white space only.
    empty = await fake.invoke("story", user=fake.dana, genre="crime", prompt="   ")
    await empty.reply(lambda m: "empty" in m["content"])
    env.backend.release()
    await fake.wait_for_message(lambda m: is_story(m) and "Ahead" in m["content"])
    samples = scrape(env)

    def requests(outcome: str) -> float:
        return value(samples, "storybot_requests_total", frontend="discord", outcome=outcome)

    assert (requests("story"), requests("cancelled"), requests("invalid")) == (2, 1, 1)
    assert value(samples, "storybot_requests_total", frontend="api", outcome="story") == 0
    assert value(samples, "storybot_discord_api_errors_total", status="404", code="10062") == 1
    assert value(samples, "storybot_discord_rate_limit_waits_total", scope="user") == 1
    # The body's retry_after is the wait discord.py keeps to, not the header's whole second.
    assert value(samples, "storybot_discord_rate_limit_wait_seconds_total", scope="user") == 0.05
    errors = [dict(labels) for name, labels in samples if name.startswith("storybot_discord_api")]
    assert all(labels["status"] != "429" for labels in errors)  # a 429 is a wait, not an error


async def test_a_command_logs_with_its_interaction_and_guild(metered: BotEnv) -> None:
    fake = metered.fake
    records = Records()  # with ContextFilter, which adds the ids to each record
    root = logging.getLogger()
    root.addHandler(records)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        handle = await fake.invoke(
            "story", user=fake.alice, genre="crime", prompt="Logged", length="short"
        )
        await fake.wait_for_message(lambda m: is_story(m) and "Logged" in m["content"])
        await metered.service.wait_idle()  # type: ignore[union-attr]
        # /storyadmin's handlers are the command tree's alone: its check names them.
        admin = await fake.invoke(
            "storyadmin", user=fake.dana, subcommand="length", options={"default": "long"}
        )
        await admin.reply(lambda m: "unless its author chooses" in m["content"])
    finally:
        root.removeHandler(records)
        root.setLevel(level)
    mine = records.of(handle.id)
    messages = [r.getMessage() for r in mine]
    assert any("queued at position" in m for m in messages), messages
    assert any("tokens in" in m for m in messages), messages  # the run's own task
    assert {r.guild_id for r in mine} == {int(fake.server.guild_id)}  # type: ignore[attr-defined]
    assert all(r.story_id == 1 for r in mine if r.name.startswith("stories"))  # type: ignore[attr-defined]
    (setting,) = records.of(admin.id)
    assert "set to" in setting.getMessage()
    assert setting.guild_id == int(fake.server.guild_id)  # type: ignore[attr-defined]


class _Waits:
    def __init__(self) -> None:
        self.waits: list[tuple[str, float]] = []
        self.errors: list[tuple[int, int]] = []

    def discord_error(self, status: int, code: int) -> None:
        self.errors.append((status, code))

    def discord_rate_limited(self, scope: str, seconds: float) -> None:
        self.waits.append((scope, seconds))


async def test_an_emptied_bucket_counts_as_a_wait() -> None:
    """Streaming edits mostly wait without a 429: an answer says the route's
    bucket is empty and discord.py holds the next request until it resets."""
    import json
    from types import SimpleNamespace
    from typing import Any

    from multidict import CIMultiDict

    from bot.telemetry import trace_config

    observer = _Waits()
    (hook,) = trace_config(observer).on_request_end

    async def answer(status: int, headers: dict[str, str], body: object = None) -> None:
        async def read() -> bytes:
            return json.dumps(body).encode()

        response: Any = SimpleNamespace(status=status, headers=CIMultiDict(headers), read=read)
        await hook(None, None, SimpleNamespace(response=response))  # type: ignore[arg-type]

    await answer(200, {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset-After": "1.5"})
    assert observer.waits == []
    await answer(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.75"})
    await answer(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "soon"})
    assert observer.waits == [("bucket", 0.75), ("bucket", 0.0)]
    # An error code outside Discord's range is not a label value of its own.
    await answer(400, {}, {"code": 10**12, "message": "?"})
    await answer(403, {}, {"code": 50013, "message": "Missing Permissions"})
    assert observer.errors == [(400, 0), (403, 50013)]
