"""Discord's global limit: the bot's request budget, alone and through the fake.

Discord allows a bot about 50 REST requests a second over all routes. The bot
keeps below a budget of its own; stream edits only use room to spare, and are
spaced further apart the more stories stream at once, so that under load
every story still arrives whole and nothing provokes a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bot import render
from bot.budget import RequestBudget, Skipped
from tests.bot.conftest import BotEnv
from tests.bot.helpers import check_channel_agrees, is_story, part_of


def fits(times: list[float], limit: int) -> bool:
    """No rolling second holds more than `limit` of these moments."""
    return all(sum(at <= other < at + 1.0 for other in times) <= limit for at in times)


# --------------------------------------------------------------- the budget
async def test_requests_wait_their_turn_within_the_budget() -> None:
    budget = RequestBudget(5)
    sent: list[float] = []

    async def request() -> None:
        await budget.acquire()
        sent.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(request() for _ in range(12)))
    assert len(sent) == 12 and fits(sent, 5)
    assert time.monotonic() - started >= 2.0  # 5, then 5 a second later, then 2


async def test_stream_edits_only_take_room_to_spare() -> None:
    budget = RequestBudget(8)  # two of the eight kept for what must go out
    assert [budget.try_acquire() for _ in range(8)] == [True] * 6 + [False] * 2
    assert budget.skipped == 2
    await budget.acquire()  # a request that matters still gets its place
    assert budget.sent == 7


async def test_a_waiting_request_goes_before_any_stream_edit() -> None:
    budget = RequestBudget(2)
    await budget.acquire()
    await budget.acquire()
    waiting = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0)
    assert not budget.try_acquire()  # someone waits: stream edits give way
    await waiting
    assert not budget.try_acquire()


def test_edits_are_spaced_further_apart_the_more_stories_stream() -> None:
    budget = RequestBudget(8)  # stream edits of all messages: about 4 a second
    assert budget.stream_interval(0.1) == 0.25
    assert budget.stream_interval(1.0) == 1.0  # the configured interval, when it is longer
    with contextlib.ExitStack() as streams:
        for key in range(12):
            streams.enter_context(budget.streaming(key))
        assert budget.stream_interval(0.1) == 3.0
    assert budget.stream_interval(0.1) == 0.25


async def test_the_wrapped_client_counts_all_but_interaction_answers() -> None:
    budget = RequestBudget(8)
    seen: list[str] = []

    class Route:
        def __init__(self, path: str) -> None:
            self.path = path

    async def request(route: Route, **kwargs: Any) -> str:
        seen.append(route.path)
        return route.path

    budgeted = budget.wrap(request)
    await budgeted(Route("/channels/1/messages"))
    await budgeted(Route("/interactions/1/token/callback"))
    await budgeted(Route("/webhooks/1/token/messages/@original"))
    assert budget.sent == 1 and len(seen) == 3
    with budget.optional():
        for _ in range(5):
            await budgeted(Route("/channels/1/messages/2"))
        with pytest.raises(Skipped):  # 6 of 8 used: the rest is kept
            await budgeted(Route("/channels/1/messages/2"))
    assert budget.sent == 6 and len(seen) == 8


# ------------------------------------------------- through the fake Discord
PROMPT = "The lighthouse keeper counted the ships"


def parts(database: Path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return dict(conn.execute("SELECT id, text FROM parts WHERE kind = 'generated'"))


async def stories_at_once(env: BotEnv, count: int) -> list[dict[str, Any]]:
    """`count` people each start a long story at the same moment; their final
    messages, once every one is complete."""
    fake = env.fake
    people = [fake.server.add_user(f"reader{len(fake.server.users)}") for _ in range(count)]
    prompts = [f"{PROMPT} ({person.username})" for person in people]
    handles = [
        await fake.invoke("story", user=person, genre="crime", prompt=prompt, length="long")
        for person, prompt in zip(people, prompts, strict=True)
    ]
    for handle in handles:
        await handle.deferred()

    def finished() -> list[dict[str, Any]] | None:
        done = [
            next((m for m in fake.messages() if is_story(m) and prompt in m["content"]), None)
            for prompt in prompts
        ]
        return done if all(done) else None  # type: ignore[return-value]

    found: list[dict[str, Any]] = await fake.wait_until(finished, timeout=180)
    return found


def agrees(env: BotEnv) -> bool:
    try:
        check_channel_agrees(env.fake, env.db_path)
    except AssertionError:
        return False
    return True


def stream_edits(message: dict[str, Any]) -> int:
    """Edits of a story's message before the final one (queue places, text)."""
    return len(message.get("edits", [])) - 1


@pytest.mark.bot_options(edit_interval=0.05, requests_per_s=8, user_max_active=2)
async def test_many_stories_under_a_low_global_limit_arrive_whole_without_a_429(
    env: BotEnv,
) -> None:
    fake = env.fake
    fake.server.global_limit = 10  # Discord's 50, scaled down; the bot's budget: 8
    # A real model's pace (the tiny one writes a long story in a blink).
    env.backend.inner.on_step = lambda rows: time.sleep(0.01)
    assert env.bot is not None
    budget = env.bot.budget
    await fake.wait_until(budget.idle)  # start-up's requests are a second old
    alone = (await stories_at_once(env, 1))[0]
    loaded = await stories_at_once(env, 12)

    assert fake.server.rate_limited == []  # not one 429
    stored = parts(env.db_path)
    for message in [alone, *loaded]:
        part_id = part_of(message)
        assert part_id is not None
        prompt = message["content"].split("**")[1].replace("\\", "")
        body = render.story_body(prompt, stored[part_id])
        assert message["content"].startswith(body + "\n-# "), "the final text is the stored part"
    await fake.wait_until(lambda: agrees(env), timeout=30)  # the last confirmations written
    under_load = sum(stream_edits(m) for m in loaded) / len(loaded)
    assert stream_edits(alone) >= 3, "alone, a long story is edited as it streams"
    assert under_load < stream_edits(alone) / 2, (stream_edits(alone), under_load)
    assert budget.skipped > 0


async def test_the_benchmark_counts_requests_per_story(tiny_model_dir: Path) -> None:
    """bench/discord_budget.py, one small round: what it counts adds up."""
    from bench.discord_budget import one_round

    measured = await one_round(tiny_model_dir, 3, 0.0, "short")
    assert measured.rate_limited == 0 and len(measured.edits) == 3
    # At least its message, its final edit and its ➕ under the limit; the
    # interaction's deferral and followup outside it.
    assert measured.limited >= 3 * 3 and measured.exempt == 3 * 2
    assert "| 3 |" in measured.row()
