"""A story's memory and author's note, through the real client and the fake
Discord: set with /story, edited in the Notes modal, read by the model."""

from __future__ import annotations

from tests.bot.conftest import BotEnv
from tests.bot.helpers import bot_messages, button, is_story, start_story

MEMORY = "Ada is a detective in rainy Glasgow."
NOTE = "Tense. The storm breaks soon."


def stories_shown(env: BotEnv) -> int:
    return len([m for m in bot_messages(env.fake) if is_story(m)])


async def test_notes_given_with_story_reach_the_model_and_are_kept(env: BotEnv) -> None:
    await start_story(env, prompt="The rain fell on the docks", memory=MEMORY, authors_note=NOTE)
    context = env.backend.contexts[-1]
    primer = env.genres.get("crime").primer
    assert context.startswith(primer + MEMORY + "\n"), context[:200]
    assert f"[Author's note: {NOTE}]" in context
    assert context.rstrip().endswith("The rain fell on the docks")
    assert env.store is not None
    story = await env.store.get_story(1)
    assert (story.memory, story.authors_note) == (MEMORY, NOTE)
    part = (await env.store.story_parts(1))[1]
    assert (part.memory, part.authors_note) == (MEMORY, NOTE)  # what it was written with


async def test_the_notes_modal_changes_what_the_next_part_is_written_with(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, memory=MEMORY)
    opened = await fake.click(story, button(story, "Notes"), user=fake.alice)
    await opened.deferred()
    modal = opened.state["modal"]
    assert "Notes of story #1" in modal["title"]
    assert MEMORY in str(modal)  # prefilled with the current memory
    saved = await fake.submit_modal(
        opened,
        {"Author's note: tone, what happens next": "Someone lies."},
        user=fake.alice,
    )
    await saved.reply(lambda m: "Notes saved" in m["content"])
    click = await fake.click(story, button(story, "Continue"), user=fake.alice)
    await click.reply(lambda m: "Writing the next part" in m["content"])
    await fake.wait_until(lambda: stories_shown(env) == 2)
    context = env.backend.contexts[-1]
    assert MEMORY in context and "[Author's note: Someone lies.]" in context
    assert env.store is not None
    newest = (await env.store.story_parts(1))[-1]
    assert newest.authors_note == "Someone lies." and newest.memory == MEMORY


async def test_only_the_author_edits_notes_unless_the_server_allows_anyone(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, memory=MEMORY)
    opened = await fake.click(story, button(story, "Notes"), user=fake.bob)
    refused = await fake.submit_modal(
        opened, {"Memory: who and where": "Bob's version."}, user=fake.bob
    )
    await refused.reply(lambda m: "Only the story's author can change its notes" in m["content"])
    assert env.store is not None
    assert (await env.store.get_story(1)).memory == MEMORY
    handle = await fake.invoke(
        "storyadmin", user=fake.dana, subcommand="notes", options={"anyone": True}
    )
    await handle.reply(lambda m: "Anyone here may now edit" in m["content"])
    opened = await fake.click(story, button(story, "Notes"), user=fake.bob)
    saved = await fake.submit_modal(
        opened, {"Memory: who and where": "Bob's version."}, user=fake.bob
    )
    await saved.reply(lambda m: "Notes saved" in m["content"])
    assert (await env.store.get_story(1)).memory == "Bob's version."


async def test_notes_show_in_mystories_over_http_and_in_the_export(env: BotEnv) -> None:
    fake = env.fake
    await start_story(env, memory=MEMORY, authors_note=NOTE)
    handle = await fake.invoke("mystories", user=fake.alice)
    listing = await handle.reply(lambda m: "Your stories" in m["content"])
    opened = await fake.select(listing, button(listing, "Open a story"), ["1"], user=fake.alice)
    await opened.deferred()
    assert f"Memory: {MEMORY}" in listing["content"] and "Author's note" in listing["content"]
    client = await env.http()
    story = (await (await client.get("/stories/1")).json())["story"]
    assert (story["memory"], story["authors_note"]) == (MEMORY, NOTE)
    markdown = await (await client.get("/stories/1.md")).text()
    assert f"*Memory:* {MEMORY}" in markdown and f"*Author's note:* {NOTE}" in markdown


async def test_notes_too_long_or_filtered_are_refused(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    opened = await fake.click(story, button(story, "Notes"), user=fake.alice)
    await opened.deferred()
    limits = {
        c.get("label"): c.get("max_length")
        for row in opened.state["modal"]["components"]
        for c in [*row.get("components", []), row.get("component") or {}]
        if c
    }
    assert 500 in limits.values() and 200 in limits.values()  # Discord checks first
    handle = await fake.invoke(
        "storyadmin", user=fake.dana, subcommand="filter", options={"action": "add", "term": "zorp"}
    )
    await handle.reply(lambda m: "added to" in m["content"])
    saved = await fake.submit_modal(
        opened, {"Memory: who and where": "Zorp lives here."}, user=fake.alice
    )
    await saved.reply(lambda m: "content filter refused that memory" in m["content"])
