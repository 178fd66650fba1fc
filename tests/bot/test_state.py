"""Runs, parts and messages agree, with many hands on one story (issue 15).

Each test reproduces one way the first round's channel and database ended up
telling different stories, through the real discord.py client, the fake
Discord, and the HTTP interface on the same service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest

from generation.errors import Cancelled
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


def replies_to(env: BotEnv, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m
        for m in bot_messages(env.fake)
        if (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


def seed_of(message: dict[str, Any]) -> str:
    found = re.search(r"seed (\d+)", message["content"])
    assert found, message["content"]
    return found.group(1)


async def quiet(env: BotEnv) -> None:
    """Wait until nothing is being written or shown."""
    assert env.service is not None and env.bot is not None
    service, publisher = env.service, env.bot.publisher
    await env.fake.wait_until(lambda: service.in_flight == 0 and not publisher._tasks)


async def read_sse(response: Any) -> list[tuple[str, dict[str, Any]]]:
    events, event = [], ""
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))
    return events


# 1 ------------------------------------------------------------------------
async def test_a_reaction_then_an_http_continue_on_the_same_part(env: BotEnv) -> None:
    fake, client = env.fake, await env.http()
    story = await start_story(env)
    env.backend.hold()
    await fake.react(story, "➕", user=fake.bob)
    writing = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    again = await client.post("/stories/1/continue", json={"stream": True})
    assert again.status == 409 and (await again.json())["error"]["code"] == "still_writing"
    env.backend.release()
    await fake.wait_until(lambda: is_story(writing))
    await quiet(env)
    assert env.store is not None
    part = (await env.store.story_parts(1))[-1]
    assert part.text.strip()[:40] in writing["content"].replace("\\", "")
    await env.stop()  # returns: no reader is left waiting
    check_channel_agrees(fake, env.db_path)


async def test_an_http_continue_then_a_reaction_share_the_whole_text(env: BotEnv) -> None:
    fake, client = env.fake, await env.http()
    story = await start_story(env)
    env.backend.hold()
    streaming = asyncio.ensure_future(client.post("/stories/1/continue", json={"stream": True}))
    await fake.wait_until(env.backend.entered.is_set)
    await fake.react(story, "➕", user=fake.bob)  # asks for the part HTTP is writing
    shown = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    second = await client.post("/stories/1/continue", json={"stream": True})
    assert second.status == 409  # a second HTTP reader is refused, not left hanging
    env.backend.release()
    events = await asyncio.wait_for(read_sse(await streaming), 30)
    assert events[-1][0] == "done"
    streamed = "".join(data["text"] for name, data in events if name == "text")
    await fake.wait_until(lambda: is_story(shown))
    await quiet(env)
    assert env.store is not None
    part = (await env.store.story_parts(1))[-1]
    assert events[-1][1]["part_id"] == part.id
    # The stream had all the text: the part stored is what was streamed, cut to
    # its last full sentence.
    assert " ".join(streamed.split()).startswith(" ".join(part.text.split()))
    assert button(shown, "Continue") == f"story:continue:{part.id}"  # Discord shows that part
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 2 ------------------------------------------------------------------------
async def test_cancel_acts_on_the_run_its_message_shows(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    await fake.react(story, "➕", user=fake.bob)
    part2 = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    await fake.wait_until(lambda: is_story(part2))
    env.backend.hold()
    await fake.react(story, "➕", user=fake.carol)  # a branch from part 1
    carols = await fake.wait_until(
        lambda: next((m for m in replies_to(env, story) if m is not part2), None)
    )
    reroll = await fake.click(part2, button(part2, "Reroll"), user=fake.alice)
    await reroll.reply(lambda m: "new version" in m["content"])
    alices = await fake.wait_until(lambda: next(iter(replies_to(env, part2)), None))
    refused = await fake.click(carols, button(carols, "Cancel"), user=fake.alice)
    await refused.reply(lambda m: "Only the person" in m["content"])
    cancel = await fake.click(carols, button(carols, "Cancel"), user=fake.carol)
    await cancel.reply(lambda m: m["content"] == "Cancelled.")
    env.backend.release()  # a run being written stops at its next token
    await fake.wait_until(lambda: "Cancelled" in carols["content"])
    old_seed = seed_of(part2)
    await fake.wait_until(lambda: is_story(part2) and seed_of(part2) != old_seed)
    await fake.wait_until(lambda: alices.get("deleted"))  # Alice's reroll was untouched
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 3 ------------------------------------------------------------------------
async def test_a_reroll_leaves_the_old_text_until_the_new_one_is_complete(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, seed=11)
    before = (story["content"], buttons(story))
    env.backend.hold()
    click = await fake.click(story, button(story, "Reroll"), user=fake.alice)
    await click.deferred()
    progress = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    assert "new version of part 1" in progress["content"]
    assert (story["content"], buttons(story)) == before  # still readable, still working
    cancel = await fake.click(progress, button(progress, "Cancel"), user=fake.alice)
    await cancel.reply(lambda m: m["content"] == "Cancelled.")
    env.backend.release()  # a run being written stops at its next token
    await fake.wait_until(lambda: progress.get("deleted"))
    assert (story["content"], buttons(story)) == before
    # Again, and this time the bot dies in the middle.
    env.backend.hold()
    click = await fake.click(story, button(story, "Reroll"), user=fake.alice)
    await click.deferred()
    progress = await fake.wait_until(
        lambda: next((m for m in replies_to(env, story) if not m.get("deleted")), None)
    )
    await fake.wait_until(env.backend.entered.is_set)
    await env.crash()
    await env.start()
    await fake.wait_until(lambda: "interrupted by a restart" in progress["content"])
    assert (story["content"], buttons(story)) == before
    retry = await fake.click(progress, button(progress, "Retry"), user=fake.alice)
    await retry.reply(lambda m: "new version" in m["content"])  # a reroll, not a continuation
    await fake.wait_until(lambda: progress.get("deleted"))
    assert is_story(story) and "part 1 ·" in story["content"]
    assert seed_of(story) != "11" and story["content"].startswith("**")
    assert env.store is not None
    parts = await env.store.story_parts(1)
    assert [p.parent_id for p in parts] == [None, parts[0].id, parts[0].id]  # siblings
    assert button(story, "Continue") == f"story:continue:{parts[-1].id}"
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 4 ------------------------------------------------------------------------
async def test_recovery_finds_a_run_whatever_else_happened_to_its_story(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    await fake.react(story, "➕", user=fake.bob)
    part2 = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    await fake.wait_until(lambda: is_story(part2))
    env.backend.hold()
    await fake.react(part2, "➕", user=fake.bob)  # Bob's continuation: still running...
    bobs = await fake.wait_until(lambda: next(iter(replies_to(env, part2)), None))
    await fake.react(story, "➕", user=fake.carol)  # ...while a newer run on the story
    carols = await fake.wait_until(
        lambda: next((m for m in replies_to(env, story) if m is not part2), None)
    )
    cancel = await fake.click(carols, button(carols, "Cancel"), user=fake.carol)
    await cancel.reply(lambda m: m["content"] == "Cancelled.")  # ...ends cancelled
    await fake.wait_until(env.backend.entered.is_set)
    await env.crash()
    await env.start()
    await fake.wait_until(lambda: "interrupted by a restart" in bobs["content"])
    assert button(bobs, "Retry").startswith("story:retry:")
    # Carol's cancelled run is settled too (cancelled, or interrupted if the crash
    # came before her cancel was recorded).
    await fake.wait_until(lambda: not any(word in carols["content"] for word in PROGRESS))
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 5 ------------------------------------------------------------------------
async def test_a_story_that_cannot_be_posted_is_not_generated(env: BotEnv) -> None:
    fake = env.fake
    fake.server.inject(
        "POST", r"/channels/\d+/messages$", 403, {"message": "Missing Permissions", "code": 50013}
    )
    calls = env.backend.forward_calls
    handle = await fake.invoke("story", user=fake.alice, genre="crime", prompt="Nowhere to go")
    answer = await handle.reply(lambda m: "can't post in this channel" in m["content"])
    assert answer["flags"] & 64
    assert env.backend.forward_calls == calls  # nothing was generated
    assert env.store is not None and (await env.store.list_stories(int(fake.alice.id))).total == 0
    assert env.service is not None and env.service._active == {}  # the slot is free again
    story = await start_story(env, user=fake.alice, prompt="Once allowed again")
    fake.server.inject(
        "POST", r"/channels/\d+/messages$", 403, {"message": "Missing Permissions", "code": 50013}
    )
    click = await fake.click(story, button(story, "Continue"), user=fake.bob)
    await click.reply(lambda m: "can't post in this channel" in m["content"])
    page = await env.store.list_stories(int(fake.alice.id))
    assert len(await env.store.story_parts(page.items[0].story.id)) == 2  # nothing more
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 6 ------------------------------------------------------------------------
async def test_a_final_edit_that_fails_once_is_retried(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    handle = await fake.invoke("story", user=fake.alice, genre="crime", prompt="Through an outage")
    await handle.deferred()
    message = await fake.wait_for_message(lambda m: "Through an outage" in m["content"])
    fake.server.inject(  # the final edit (the one with the footer) fails, twice
        "PATCH",
        rf"/messages/{message['id']}$",
        503,
        {"message": "Unavailable", "code": 0},
        times=2,
        when=lambda body: "· seed " in (body or {}).get("content", ""),
    )
    env.backend.release()
    await fake.wait_until(lambda: is_story(message))
    await env.stop()
    check_channel_agrees(fake, env.db_path)


async def test_a_message_left_stale_by_an_outage_is_fixed_at_the_next_start(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    handle = await fake.invoke("story", user=fake.alice, genre="crime", prompt="A long outage")
    await handle.deferred()
    message = await fake.wait_for_message(lambda m: "A long outage" in m["content"])
    fake.server.inject(
        "PATCH",
        rf"/messages/{message['id']}$",
        503,
        {"message": "Unavailable", "code": 0},
        times=1000,
    )
    env.backend.release()
    await quiet(env)
    assert any(word in message["content"] for word in PROGRESS)  # stuck, for now
    fake.server.faults[0].times = 0  # Discord is back
    await env.restart()
    await fake.wait_until(lambda: is_story(message))
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 7 ------------------------------------------------------------------------
async def test_deleting_a_story_stops_all_its_work_and_clears_its_messages(
    env: BotEnv, caplog: pytest.LogCaptureFixture
) -> None:
    fake = env.fake
    story = await start_story(env, user=fake.alice, prompt="Soon gone")
    env.backend.hold()
    await fake.react(story, "➕", user=fake.bob)
    bobs = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    await fake.wait_until(env.backend.entered.is_set)
    assert env.service is not None
    (bobs_run,) = env.service._runs.values()
    listing = await (await fake.invoke("mystories", user=fake.alice)).reply(
        lambda m: "Your stories" in m["content"]
    )
    opened = await fake.select(listing, button(listing, "Open a story"), ["1"], user=fake.alice)
    await opened.deferred()
    delete = await fake.click(listing, button(listing, "Delete"), user=fake.alice)
    await delete.deferred()
    confirm = await fake.click(listing, button(listing, "Delete it"), user=fake.alice)
    await confirm.deferred()
    env.backend.release()
    for message in (story, bobs):
        await fake.wait_until(lambda m=message: "This story was deleted" in m["content"])  # type: ignore[misc]
        assert not buttons(message)
    await quiet(env)
    assert bobs_run.ticket is not None  # Bob's part was stopped, not written for nobody
    assert isinstance(bobs_run.ticket._future.exception(), Cancelled)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await env.stop()
    check_channel_agrees(fake, env.db_path)


async def test_forgetme_stops_other_peoples_runs_on_what_it_deletes(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, user=fake.bob, prompt="Bob's tale")
    env.backend.hold()
    await fake.react(story, "➕", user=fake.alice)
    alices = await fake.wait_until(lambda: next(iter(replies_to(env, story)), None))
    ask = await (await fake.invoke("forgetme", user=fake.bob)).reply(
        lambda m: "cannot be undone" in m["content"]
    )
    confirm = await fake.click(ask, button(ask, "Delete everything"), user=fake.bob)
    await confirm.deferred()
    env.backend.release()
    await fake.wait_until(lambda: "This story was deleted" in alices["content"])
    await fake.wait_until(lambda: "This story was deleted" in story["content"])
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 8 ------------------------------------------------------------------------
async def test_two_quick_reroll_presses_make_one_new_version(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, seed=5)
    env.backend.hold()
    first = await fake.click(story, button(story, "Reroll"), user=fake.alice)
    second = await fake.click(story, button(story, "Reroll"), user=fake.alice)
    answers = [
        (await first.reply(lambda m: "rerolled" in m["content"] or "version" in m["content"])),
        (await second.reply(lambda m: "rerolled" in m["content"] or "version" in m["content"])),
    ]
    assert sorted("already being rerolled" in a["content"] for a in answers) == [False, True]
    env.backend.release()
    await fake.wait_until(lambda: seed_of(story) != "5")
    await quiet(env)
    assert env.store is not None and len(await env.store.story_parts(1)) == 3
    await env.stop()
    check_channel_agrees(fake, env.db_path)


# 9 ------------------------------------------------------------------------
async def test_a_deleted_channel_stops_its_story(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    handle = await fake.invoke(
        "story",
        user=fake.alice,
        channel="stories",
        genre="crime",
        prompt="Vanishing",
        length="long",
    )
    await handle.deferred()
    await fake.wait_for_message(lambda m: "Vanishing" in m["content"], channel="stories")
    fake.server.delete_channel("stories")
    env.backend.release()
    await quiet(env)
    assert env.store is not None
    run = await env.store.get_run(1)
    assert run.state == "cancelled"  # nobody could see it: it was stopped
    posts = [r for r in fake.sent("POST", "/messages") if r.json and "Vanishing" in str(r.json)]
    assert len(posts) == 1  # and not posted again into nothing
    await env.stop()


async def test_stories_are_shown_in_both_channels_independently(env: BotEnv) -> None:
    fake = env.fake
    await start_story(env, prompt="In general")
    handle = await fake.invoke(
        "story", user=fake.bob, channel="stories", genre="crime", prompt="In stories"
    )
    await handle.deferred()
    await fake.wait_for_message(is_story, channel="stories")
    assert len(story_messages(env)) == 1 and len(story_messages(env, "stories")) == 1
