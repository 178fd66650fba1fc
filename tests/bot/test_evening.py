"""A long evening in a busy channel: the seams between flows (issue 14).

Each test here failed on the first round's code: continuations written but
never shown, refusals nobody saw, messages stranded by a stop, silent
branches, and finished stories edited and reacted to twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

from tests.bot.conftest import BotEnv
from tests.bot.helpers import (
    PROGRESS,
    bot_messages,
    button,
    buttons,
    check_channel_agrees,
    is_story,
    start_story,
    story_messages,
)
from tests.fakediscord.server import User


def notices_for(env: BotEnv, user: User) -> list[dict[str, Any]]:
    """Notices the bot posted naming `user` (deleted ones too: they delete themselves)."""
    return [
        m
        for m in bot_messages(env.fake, deleted=True)
        if m["content"].startswith(f"-# <@{user.id}>")
    ]


def replies_to(env: BotEnv, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m
        for m in story_messages(env)
        if (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


@pytest.mark.bot_options(edit_interval=0.5)
async def test_fifty_continuations_by_reaction_all_appear(env: BotEnv) -> None:
    fake = env.fake
    newest = await start_story(env, prompt="A long night of turns")
    for n in range(50):
        await fake.react(newest, "➕", user=fake.bob if n % 2 else fake.carol)
        newest = await fake.wait_until(
            lambda previous=newest: next(iter(replies_to(env, previous)), None)  # type: ignore[misc]
        )
        await fake.wait_until(lambda m=newest: is_story(m))  # type: ignore[misc]
        assert f"part {n + 2} ·" in newest["content"]
    assert len(story_messages(env)) == 51
    await env.stop()
    check_channel_agrees(fake, env.db_path)


@pytest.mark.bot_options(user_cooldown_s=30, notice_window_s=30)
async def test_a_reaction_refused_by_the_cooldown_is_answered_visibly_once(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, user=fake.alice)
    reacted = time.monotonic()
    await fake.react(story, "➕", user=fake.alice)  # a second after her story ended
    notice = await fake.wait_until(lambda: next(iter(notices_for(env, fake.alice)), None))
    assert time.monotonic() - reacted < 2
    assert "try again in" in notice["content"]
    assert notice["message_reference"]["message_id"] == story["id"]
    assert (fake.alice.id, "➕") in story["reactions_removed"]
    await fake.wait_until(lambda: notice.get("deleted"))  # it cleans up after itself
    await fake.react(story, "➕", user=fake.alice)  # again, within the same window
    assert env.bot is not None
    notices = env.bot.handlers.notices
    await fake.wait_until(lambda: notices.answered == 2)
    assert story["reactions_removed"].count((fake.alice.id, "➕")) == 2
    assert len(notices_for(env, fake.alice)) == 1  # answered, but the channel is not spammed
    assert len(story_messages(env)) == 1  # and nothing was written


@pytest.mark.bot_options(max_batch=1, max_queue=1)
async def test_a_reaction_refused_by_a_full_queue_is_answered_visibly(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, user=fake.alice)
    env.backend.hold()
    for user, prompt in ((fake.alice, "Running"), (fake.bob, "Waiting")):
        handle = await fake.invoke("story", user=user, genre="crime", prompt=prompt, length="short")
        await handle.deferred()
        await fake.wait_for_message(lambda m, p=prompt: p in m["content"])  # type: ignore[misc]
        await fake.wait_until(env.backend.entered.is_set)
    await fake.react(story, "➕", user=fake.carol)
    notice = await fake.wait_until(lambda: next(iter(notices_for(env, fake.carol)), None))
    assert "busy" in notice["content"] and "try again" in notice["content"]
    assert (fake.carol.id, "➕") in story["reactions_removed"]
    env.backend.release()


@pytest.mark.bot_options(user_max_active=1)
async def test_a_reaction_refused_by_the_per_person_limit_is_answered_visibly(
    env: BotEnv,
) -> None:
    fake = env.fake
    story = await start_story(env, user=fake.alice)
    env.backend.hold()
    handle = await fake.invoke("story", user=fake.bob, genre="crime", prompt="Bob's own")
    await handle.deferred()
    await fake.wait_until(env.backend.entered.is_set)
    await fake.react(story, "➕", user=fake.bob)
    notice = await fake.wait_until(lambda: next(iter(notices_for(env, fake.bob)), None))
    assert "already have 1" in notice["content"]
    env.backend.release()


@pytest.mark.bot_options(max_batch=2, edit_interval=0.2)
async def test_stopping_with_twenty_stories_queued_strands_no_message(env: BotEnv) -> None:
    fake = env.fake
    people = [fake.alice, fake.bob, fake.carol, fake.server.add_user("dave")]
    env.backend.hold()
    for n in range(20):
        handle = await fake.invoke(
            "story", user=people[n % 4], genre="crime", prompt=f"Queued story {n}", length="short"
        )
        await handle.deferred()
    await fake.wait_until(lambda: len(bot_messages(fake)) == 20)
    before = len(fake.server.requests)
    env.backend.release()  # SIGTERM arrives as the first one is being written
    await fake.wait_until(lambda: any("writing…" in m["content"] for m in bot_messages(fake)))
    started = time.monotonic()
    await env.stop(grace_s=3.0)
    assert time.monotonic() - started < 3.0 + 2.0
    messages = bot_messages(fake)
    assert len(messages) == 20
    finished = [m for m in messages if is_story(m)]
    assert 0 < len(finished) < 20  # some finished during the stop, the rest were cut
    for message in messages:
        assert not any(word in message["content"] for word in PROGRESS), message["content"]
        if not is_story(message):
            assert "interrupted by a restart" in message["content"]
            assert button(message, "Retry").startswith("story:retry:")
    assert len(fake.server.requests) >= before + 20  # every message was updated after the stop
    check_channel_agrees(fake, env.db_path)
    await env.start()  # the next start has nothing left to fix
    await fake.wait_until(lambda: env.bot is not None and env.bot.is_ready())
    assert env.bot is not None and await env.bot.publisher.sync(env.bot) == 0


async def test_continuing_a_story_still_being_written_over_http_is_refused(env: BotEnv) -> None:
    client = await env.http()
    env.backend.hold()
    first = asyncio.ensure_future(client.post("/", json={"input": "Half a thought"}))
    await env.fake.wait_until(env.backend.entered.is_set)
    again = await client.post("/stories/1/continue")
    assert again.status == 409
    error = await again.json()
    assert error["error"]["code"] == "still_writing"
    env.backend.release()
    answer = await (await first).json()
    story = await (await client.get("/stories/1")).json()
    assert story["text"] == answer["output"]  # the first answer is the story's text
    assert len(story["parts"]) == 2  # and no sibling was made


async def test_a_reaction_on_a_part_still_being_written_is_refused_visibly(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    handle = await fake.invoke("story", user=fake.alice, genre="crime", prompt="Still going")
    await handle.deferred()
    writing = await fake.wait_for_message(lambda m: "Still going" in m["content"])
    await fake.react(writing, "➕", user=fake.bob)
    notice = await fake.wait_until(lambda: next(iter(notices_for(env, fake.bob)), None))
    assert "still being written" in notice["content"]
    env.backend.release()
    await fake.wait_until(lambda: is_story(writing))
    assert len(story_messages(env)) == 1  # no branch, no second part
    assert env.store is not None and len(await env.store.story_parts(1)) == 2


@pytest.mark.bot_options(edit_interval=1.0)
async def test_a_finished_part_is_edited_once_and_reacted_to_once(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, length="long")
    await fake.react(story, "➕", user=fake.bob)
    second = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    await fake.wait_until(lambda: is_story(second) and second.get("reactions_by"))
    await env.stop()
    for message in (story, second):
        path = f"/messages/{message['id']}"
        edits = [r.json for r in fake.sent("PATCH", path) if r.path.endswith(path)]
        final = [body for body in edits if body.get("content") == message["content"]]
        assert len(final) == 1, f"the final text was sent {len(final)} times"
        shown = [message["first_content"]] + [body.get("content") for body in edits]
        assert all(a != b for a, b in itertools.pairwise(shown)), "a repeated edit"
        reactions = fake.sent("PUT", f"/messages/{message['id']}/reactions/")
        assert len(reactions) == 1
    assert json.dumps(buttons(second))  # the continuation has its buttons
