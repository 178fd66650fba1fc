"""/story end to end: the real discord.py client, the fake Discord, the tiny model."""

from __future__ import annotations

import re
from typing import Any

from stories.service import MAX_PROMPT_CHARS
from tests.bot.conftest import BotEnv
from tests.bot.helpers import PROMPT, button, buttons, is_story, start_story, story_messages


async def test_startup_is_fast_and_commands_synced(env: BotEnv) -> None:
    assert env.startup_s < 1.0
    names = {c["name"] for c in env.fake.server.commands}
    assert names == {"story", "mystories", "forgetme", "storyadmin"}
    story = next(c for c in env.fake.server.commands if c["name"] == "story")
    genre = next(o for o in story["options"] if o["name"] == "genre")
    assert genre["autocomplete"] and not genre.get("choices")  # no limit of 25
    prompt = next(o for o in story["options"] if o["name"] == "prompt")
    # The service's one prompt limit, which Discord then checks before we do.
    assert prompt["max_length"] == MAX_PROMPT_CHARS and prompt["min_length"] == 1


async def test_story_from_deferral_to_final_message(env: BotEnv) -> None:
    fake = env.fake
    handle = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt=PROMPT, length="short", seed=7
    )
    assert await handle.deferred() == 5
    story = await fake.wait_for_message(is_story)
    content = story["content"]
    assert content.startswith(f"**{PROMPT}**") and len(content) > len(PROMPT) + 4
    assert re.search(r"-# Crime · by <@\d+> · part 1 · seed 7$", content)
    assert buttons(story) == [
        f"story:continue:{_part_id(env, story)}",
        f"story:vote:{_part_id(env, story)}",
        f"story:reroll:{_part_id(env, story)}",
        f"story:notes:{_part_id(env, story)}",
        f"story:report:{_part_id(env, story)}",
        f"story:share:{_part_id(env, story)}",
    ]
    await fake.wait_until(lambda: story.get("reactions_by"))
    assert story["reactions_by"] == [(fake.server.bot_user.id, "➕")]
    # The first version of the message showed the queue, with a Cancel button.
    first = next(
        r
        for r in fake.sent("POST", "/messages")
        if r.json and "queued" in r.json.get("content", "")
    )
    assert "position" in first.json["content"]
    assert first.json["components"][0]["components"][0]["custom_id"].startswith("story:cancel:")
    reply = await handle.followup(lambda m: "queued" in m["content"])
    assert story["id"] in reply["content"] and reply["flags"] & 64
    # Every message the bot sent or edited pinged nobody.
    for request in fake.message_bodies():
        body = (
            request.json.get("data", request.json)
            if request.path.endswith("/callback")
            else request.json
        )
        if "content" in body or "components" in body:
            assert body.get("allowed_mentions") == {"parse": []}, request


def _part_id(env: BotEnv, message: dict[str, Any]) -> str:
    ids = re.findall(r"story:continue:(\d+)", str(message.get("components")))
    return ids[0] if ids else "?"


@__import__("pytest").mark.bot_options(max_batch=1)
async def test_queue_position_is_shown_and_updated(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    first = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="First story", length="short"
    )
    await first.deferred()
    await fake.wait_until(lambda: env.backend.entered.is_set())
    second = await fake.invoke(
        "story", user=fake.bob, genre="romance", prompt="Second story", length="short"
    )
    await second.deferred()
    queued = await fake.wait_for_message(lambda m: "Second story" in m["content"])
    assert "queued, position 1" in queued["content"]
    assert button(queued, "Cancel").startswith("story:cancel:")
    env.backend.release()
    await fake.wait_until(lambda: is_story(queued))
    assert queued["content"].startswith("**Second story**")
    # The queued message became the story: Cancel gave way to Continue and Reroll.
    assert button(queued, "Continue").startswith("story:continue:")
    assert not any(b.startswith("story:cancel:") for b in buttons(queued))


async def test_text_streams_into_the_message(env: BotEnv) -> None:
    story = await start_story(env, length="long", prompt="Streaming story")
    streamed = [e["content"] for e in story["edits"] if "writing" in (e.get("content") or "")]
    assert len(streamed) >= 2, "expected several edits while the text streamed"
    lengths = [len(c) for c in streamed]
    assert lengths == sorted(lengths)
    assert all(c.startswith("**Streaming story**") for c in streamed)


async def test_continue_by_reaction_replies_and_ignores_the_bots_own(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    await fake.wait_until(lambda: story.get("reactions_by"))  # the seeded ➕ was echoed
    assert len(story_messages(env)) == 1  # ...and the bot ignored its own reaction
    await fake.react(story, "➕", user=fake.bob)
    second = await fake.wait_for_message(lambda m: is_story(m) and "part 2" in m["content"])
    assert second["message_reference"]["message_id"] == story["id"]
    assert not second["content"].startswith("**")  # the prompt is not repeated
    assert "by <@" + fake.alice.id + ">" in second["content"]  # the story's author


async def test_reactions_that_must_be_ignored(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    other = await fake.post_as(fake.bob, "just chatting")
    await fake.react(story, "➕", user=fake.server.other_bot)  # another bot
    await fake.react(story, "👍", user=fake.bob)  # another emoji
    await fake.react(other, "➕", user=fake.bob)  # not a story
    await fake.delete(story)
    await fake.react(story, "➕", user=fake.carol)  # a deleted story message
    probe = await start_story(env, prompt="A probe after the ignored reactions")
    assert probe and len(story_messages(env)) == 1  # only the probe; nothing else was written
    assert env.service is not None and not env.service._runs


async def test_a_plus_on_a_deleted_part_is_refused_visibly(env: BotEnv) -> None:
    """Bob continues Alice's story, then /forgetme deletes his part: its message
    says so, keeps the seeded ➕, and a ➕ on it is answered, not ignored."""
    fake = env.fake
    story = await start_story(env)
    await fake.react(story, "➕", user=fake.bob)
    part = await fake.wait_for_message(lambda m: is_story(m) and "part 2" in m["content"])
    await fake.wait_until(lambda: part.get("reactions_by"))  # the bot's own ➕ under it
    ask = await (await fake.invoke("forgetme", user=fake.bob)).reply(
        lambda m: "cannot be undone" in m["content"]
    )
    await (await fake.click(ask, button(ask, "Delete everything"), user=fake.bob)).deferred()
    await fake.wait_until(lambda: "This part was deleted" in part["content"])
    await fake.react(part, "➕", user=fake.carol)
    await fake.wait_until(lambda: (fake.carol.id, "➕") in part.get("reactions_removed", []))
    notice = await fake.wait_for_message(lambda m: "nothing to continue here" in m["content"])
    assert notice["content"].startswith(f"-# <@{fake.carol.id}>")
    assert notice["message_reference"]["message_id"] == part["id"]
    assert notice["allowed_mentions"] == {"parse": []}
    assert env.service is not None and not env.service._runs  # nothing was started


async def test_two_reactions_at_once_give_one_continuation(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    env.backend.hold()
    await fake.react(story, "➕", user=fake.bob)
    await fake.react(story, "➕", user=fake.carol)
    await fake.wait_until(lambda: env.backend.entered.is_set())
    env.backend.release()
    await fake.wait_for_message(lambda m: is_story(m) and "part 2" in m["content"])
    await start_story(env, prompt="Probe after the race")  # everything queued has been shown
    assert len([m for m in story_messages(env) if "part 2" in m["content"]]) == 1


async def test_continue_button_and_after_a_restart(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    click = await fake.click(story, button(story, "Continue"), user=fake.bob)
    await click.deferred()
    await fake.wait_for_message(lambda m: is_story(m) and "part 2" in m["content"])
    note = await click.followup(lambda m: "next part" in m["content"])
    assert note["flags"] & 64
    await env.restart()  # same database, new process state
    await fake.react(story, "➕", user=fake.carol)  # a message from before the restart
    await fake.wait_until(
        lambda: len([m for m in story_messages(env) if "part 2" in m["content"]]) == 2
    )
    again = await fake.click(story, button(story, "Continue"), user=fake.carol)
    await again.followup(lambda m: "next part" in m["content"])  # the button works after a restart
    await fake.wait_until(
        lambda: len([m for m in story_messages(env) if "part 2" in m["content"]]) == 3
    )


async def test_reroll_in_place_by_the_author_only(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, seed=11)
    assert re.search(r"seed 11\b", story["content"])
    refused = await fake.click(story, button(story, "Reroll"), user=fake.bob)
    await refused.reply(lambda m: "Only the story's author" in m["content"])
    click = await fake.click(story, button(story, "Reroll"), user=fake.alice)
    await click.deferred()
    await fake.wait_until(lambda: is_story(story) and not re.search(r"seed 11\b", story["content"]))
    assert story["content"].startswith(f"**{PROMPT}**") and "part 1" in story["content"]
    assert env.store is not None
    parts = await env.store.story_parts(1)
    assert [p.kind for p in parts] == ["prompt", "generated", "generated"]
    assert parts[1].parent_id == parts[2].parent_id == parts[0].id  # siblings in the tree


@__import__("pytest").mark.bot_options(max_batch=1)
async def test_cancel_while_queued_and_while_generating(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    running = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="Running one", length="long"
    )
    await running.deferred()
    await fake.wait_until(lambda: env.backend.entered.is_set())
    queued = await fake.invoke(
        "story", user=fake.bob, genre="crime", prompt="Queued one", length="short"
    )
    await queued.deferred()
    bobs = await fake.wait_for_message(lambda m: "Queued one" in m["content"])
    refused = await fake.click(bobs, button(bobs, "Cancel"), user=fake.alice)
    await refused.reply(lambda m: "Only the person" in m["content"])
    cancel = await fake.click(bobs, button(bobs, "Cancel"), user=fake.bob)
    await cancel.reply(lambda m: m["content"] == "Cancelled.")
    await fake.wait_until(lambda: "Cancelled" in bobs["content"])
    alices = await fake.wait_for_message(lambda m: "Running one" in m["content"])
    stop = await fake.click(alices, button(alices, "Cancel"), user=fake.alice)
    await stop.reply(lambda m: m["content"] == "Cancelled.")
    env.backend.release()
    await fake.wait_until(lambda: "Cancelled" in alices["content"])
    assert env.store is not None
    assert [(await env.store.get_story(i)).status for i in (1, 2)] == ["cancelled", "cancelled"]
