"""/mystories, /forgetme, limits, a full queue, recovery after a crash, and bad input."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from stories.message_book import MessageBook
from stories.service import Requester, StoryOptions
from tests.bot.conftest import BotEnv
from tests.bot.helpers import button, is_story, story_messages


def options_of(message: dict[str, Any], placeholder: str) -> list[str]:
    for row in message["components"]:
        for component in row["components"]:
            if component.get("placeholder") == placeholder:
                return [option["value"] for option in component["options"]]
    raise AssertionError(f"no select {placeholder!r}")


async def make_stories(
    env: BotEnv, user_id: int, count: int, genre: str = "crime", name: str = "Story number"
) -> None:
    assert env.service is not None
    for n in range(count):
        run = await env.service.start(
            f"{name} {n}", StoryOptions(genre=genre, max_new_tokens=5), Requester(user_id=user_id)
        )
        await run.outcome()
        await env.service.wait_idle()


async def test_mystories_pages_filters_exports_and_deletes(env: BotEnv) -> None:
    fake = env.fake
    alice = int(fake.alice.id)
    await make_stories(env, alice, 11)
    await make_stories(env, alice, 1, genre="romance", name="Love story")
    await make_stories(env, int(fake.bob.id), 1)
    handle = await fake.invoke("mystories", user=fake.alice)
    listing = await handle.reply(lambda m: "Your stories" in m["content"])
    assert listing["flags"] & 64 and "(1–10 of 12)" in listing["content"]
    assert "Love story 0" in listing["content"] and "Story number 1 " not in listing["content"]
    nxt = await fake.click(listing, button(listing, "Next"), user=fake.alice)
    await nxt.deferred()
    assert "(11–12 of 12)" in listing["content"]
    pick = await fake.select(
        listing, button(listing, "Filter by genre"), ["romance"], user=fake.alice
    )
    await pick.deferred()
    assert "(1–1 of 1, romance)" in listing["content"]
    story_id = options_of(listing, "Open a story")[0]
    opened = await fake.select(
        listing, button(listing, "Open a story"), [story_id], user=fake.alice
    )
    await opened.deferred()
    assert (
        listing["content"].startswith("**Love story 0**")
        and f"story #{story_id}" in listing["content"]
    )
    export = await fake.click(listing, button(listing, "Export"), user=fake.alice)
    exported = await export.reply(lambda m: m["attachments"])
    assert (
        exported["attachments"][0]["filename"] == f"story-{story_id}.md" and exported["flags"] & 64
    )
    delete = await fake.click(listing, button(listing, "Delete"), user=fake.alice)
    await delete.deferred()
    assert "cannot be undone" in listing["content"]
    confirm = await fake.click(listing, button(listing, "Delete it"), user=fake.alice)
    await confirm.deferred()
    assert listing["content"].startswith(f"Deleted story #{story_id}")
    assert env.store is not None
    assert (await env.store.list_stories(alice)).total == 11


async def test_mystories_when_empty(env: BotEnv) -> None:
    handle = await env.fake.invoke("mystories", user=env.fake.carol)
    await handle.reply(lambda m: "no stories" in m["content"])


async def test_forgetme_asks_then_deletes(env: BotEnv) -> None:
    fake = env.fake
    await make_stories(env, int(fake.bob.id), 2)
    handle = await fake.invoke("forgetme", user=fake.bob)
    ask = await handle.reply(lambda m: "cannot be undone" in m["content"])
    assert "2 stories" in ask["content"]
    keep = await fake.click(ask, button(ask, "Keep everything"), user=fake.bob)
    await keep.deferred()
    assert ask["content"] == "Nothing was deleted."
    handle = await fake.invoke("forgetme", user=fake.bob)
    ask = await handle.reply(lambda m: "cannot be undone" in m["content"])
    confirm = await fake.click(ask, button(ask, "Delete everything"), user=fake.bob)
    await confirm.deferred()
    assert "deleted 2 stories and 4 parts" in ask["content"]
    assert env.store is not None and (await env.store.list_stories(int(fake.bob.id))).total == 0


@pytest.mark.bot_options(user_max_active=1)
async def test_per_user_limit(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    first = await fake.invoke("story", user=fake.alice, genre="crime", prompt="One", length="short")
    await first.deferred()
    second = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="Two", length="short"
    )
    refused = await second.reply(lambda m: "already have 1" in m["content"])
    assert refused["flags"] & 64
    env.backend.release()
    await fake.wait_for_message(lambda m: is_story(m) and "One" in m["content"])


@pytest.mark.bot_options(max_batch=1, max_queue=1)
async def test_full_queue_says_busy(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    for user, prompt in ((fake.alice, "Running"), (fake.bob, "Waiting")):
        handle = await fake.invoke("story", user=user, genre="crime", prompt=prompt, length="short")
        await handle.deferred()
        await fake.wait_for_message(lambda m, p=prompt: p in m["content"])  # type: ignore[misc]
        await fake.wait_until(env.backend.entered.is_set)  # the first one is running
    third = await fake.invoke(
        "story", user=fake.carol, genre="crime", prompt="Too many", length="short"
    )
    busy = await third.reply(lambda m: "busy" in m["content"])
    assert "try again in about" in busy["content"]
    env.backend.release()
    assert env.store is not None and (await env.store.list_stories(int(fake.carol.id))).total == 0


async def test_interrupted_story_is_announced_and_retried(env: BotEnv) -> None:
    fake = env.fake
    channel = fake.server.channel("general")
    shown = fake.server.make_message(
        channel["id"], {"content": "**Crashed story** ▌"}, fake.server.bot_user
    )
    assert env.store is not None
    story, _, run = await env.store.create_story(
        prompt="Crashed story",
        genre="crime",
        author_id=int(fake.alice.id),
        channel_id=int(channel["id"]),
    )
    await env.store.set_run_state(run.id, "generating")
    await MessageBook(env.store).showing_run(
        int(shown["id"]), int(channel["id"]), story_id=story.id, run_id=run.id, state="generating"
    )
    await env.crash()
    await env.start()  # as after a crash: the story was left "generating"
    await fake.wait_until(lambda: "interrupted by a restart" in shown["content"])
    assert (await env.store.get_story(story.id)).status == "interrupted"  # type: ignore[union-attr]
    retry = await fake.click(shown, button(shown, "Retry"), user=fake.alice)
    await retry.deferred()
    await fake.wait_until(lambda: is_story(shown))
    assert shown["content"].startswith("**Crashed story**") and "part 1" in shown["content"]


async def test_age_restricted_genre_only_in_age_restricted_channels(env: BotEnv) -> None:
    fake = env.fake
    refused = await fake.invoke(
        "story", user=fake.alice, genre="gore", prompt="Blood", length="short"
    )
    answer = await refused.reply(lambda m: "age-restricted" in m["content"])
    assert answer["flags"] & 64
    allowed = await fake.invoke(
        "story", user=fake.alice, channel="after-dark", genre="gore", prompt="Blood", length="short"
    )
    await allowed.deferred()
    await fake.wait_for_message(is_story, channel="after-dark")
    assert story_messages(env) == []


__all__ = ["sqlite3"]
