"""/storyadmin through the real discord.py client and the fake Discord: an admin
changes a setting, and a member sees the effect at once."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from storage.guilds import GuildStore
from tests.bot.conftest import BotEnv
from tests.bot.helpers import bot_messages, button, is_story, start_story
from tests.fakediscord.server import User

PROMPT = "A long night of turns"  # no "the" in it: the filter tests mask "the"


async def admin(env: BotEnv, subcommand: str, **options: Any) -> str:
    """Dana (Manage Server) runs /storyadmin <subcommand>; her private answer."""
    fake = env.fake
    handle = await fake.invoke("storyadmin", user=fake.dana, subcommand=subcommand, options=options)
    answer = await handle.reply(lambda m: bool(m["content"]))
    assert answer["flags"] & 64, "admin answers are private"
    return str(answer["content"])


async def refused_story(env: BotEnv, user: User, channel: str = "general", **options: Any) -> str:
    """A /story that must be refused: its private answer, and no story posted."""
    fake = env.fake
    before = len([m for m in bot_messages(fake) if is_story(m)])
    handle = await fake.invoke(
        "story",
        user=user,
        channel=channel,
        **{"genre": "crime", "prompt": PROMPT, "length": "short", **options},
    )
    answer = await handle.reply(lambda m: bool(m["content"]) and not m["content"].startswith("…"))
    assert answer["flags"] & 64
    assert len([m for m in bot_messages(fake) if is_story(m)]) == before
    return str(answer["content"])


async def test_only_admins_see_storyadmin_and_others_are_refused_anyway(env: BotEnv) -> None:
    fake = env.fake
    command = next(c for c in fake.server.commands if c["name"] == "storyadmin")
    assert int(command["default_member_permissions"]) == 1 << 5  # Manage Server
    assert command.get("dm_permission") is False or command.get("contexts") == [0]
    assert "storyadmin" not in fake.visible_commands(fake.alice)
    assert "storyadmin" in fake.visible_commands(fake.dana)
    with pytest.raises(AssertionError, match="cannot see /storyadmin"):
        await fake.invoke("storyadmin", user=fake.alice, subcommand="show")
    # A server may grant the command to a role without the permission: the bot
    # still refuses, privately, and changes nothing.
    handle = await fake.invoke_granted(
        "storyadmin", user=fake.alice, subcommand="limits", daily_quota=1
    )
    answer = await handle.reply(lambda m: "Manage Server" in m["content"])
    assert answer["flags"] & 64
    assert env.service is not None
    settings = await env.service.servers.settings(int(fake.server.guild_id))
    assert settings is not None and settings.daily_quota is None


async def test_genres_enabled_per_server_and_autocomplete(env: BotEnv) -> None:
    fake = env.fake
    suggested = await fake.autocomplete("story", "genre", "", user=fake.alice)
    keys = [c["value"] for c in suggested]
    assert "crime" in keys and "gore" not in keys  # no 18+ genre in an ordinary channel
    adult = await fake.autocomplete("story", "genre", "", user=fake.alice, channel="after-dark")
    assert "gore" in [c["value"] for c in adult]
    typed = await fake.autocomplete("story", "genre", "fan", user=fake.alice)
    assert [c["value"] for c in typed] == ["fantasy"]

    said = await admin(env, "genre", name="crime", enabled=False)
    assert "Crime is disabled here now" in said
    suggested = await fake.autocomplete("story", "genre", "", user=fake.alice)
    assert "crime" not in [c["value"] for c in suggested]
    refused = await refused_story(env, fake.alice, genre="crime")  # typed by hand
    assert "Crime genre is not enabled in this server" in refused
    refused = await refused_story(env, fake.alice, genre="gore")
    assert "age-restricted channels" in refused
    await admin(env, "genre", name="*", enabled=True)
    assert await start_story(env, prompt=PROMPT)


async def test_channels_the_bot_writes_in(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, prompt=PROMPT)  # in #general, before the change
    said = await admin(env, "channel", channel="general", allowed=False)
    assert "no longer writes" in said
    writes_in = said.split("It writes in:")[1]
    assert fake.channel_id("general") not in writes_in and fake.channel_id("stories") in writes_in
    refused = await refused_story(env, fake.bob)
    assert "does not write stories in this channel" in refused
    # A ➕ there is refused visibly too: the reaction removed, a short notice.
    await fake.react(story, "➕", user=fake.bob)
    await fake.wait_until(lambda: (fake.bob.id, "➕") in story.get("reactions_removed", []))
    notice = await fake.wait_for_message(lambda m: m["content"].startswith(f"-# <@{fake.bob.id}>"))
    assert "does not write stories in this channel" in notice["content"]
    handle = await fake.invoke(
        "story", user=fake.bob, channel="stories", genre="crime", prompt=PROMPT, length="short"
    )
    await handle.deferred()
    await fake.wait_for_message(is_story, channel="stories")
    assert "every channel" in await admin(env, "allchannels")
    assert await start_story(env, user=fake.carol, prompt="Carol tells one")


@pytest.mark.bot_options(user_cooldown_s=0, user_max_active=5)
async def test_member_limits_and_the_daily_quota(env: BotEnv) -> None:
    fake = env.fake
    said = await admin(env, "limits", cooldown=600, daily_quota=3)
    assert "600 s between" in said and "3 daily quota" in said
    await start_story(env, prompt=PROMPT)
    assert "Slow down" in await refused_story(env, fake.alice, prompt="Again")
    await start_story(env, user=fake.bob, prompt="Bob's turn")
    await start_story(env, user=fake.carol, prompt="Carol's turn")
    refused = await refused_story(env, fake.dana, prompt="One more")
    assert "3 stories for today are written" in refused
    shown = await admin(env, "show")
    assert "Daily quota: 3 stories a day (today: 3)" in shown
    assert "600 s between two stories" in shown
    too_loose = await admin(env, "limits", per_member=50)
    assert "between 1 and 5" in too_loose  # never looser than the operator's bound


async def test_who_may_continue(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, prompt=PROMPT)
    said = await admin(env, "continuing", who="author")
    assert "Only a story's author" in said
    click = await fake.click(story, button(story, "Continue"), user=fake.bob)
    await click.reply(lambda m: "only a story's author can continue" in m["content"])
    said = await admin(env, "continuing", who="role", role=fake.storytellers)
    assert f"<@&{fake.storytellers}>" in said
    fake.bob.roles.append(fake.storytellers)
    click = await fake.click(story, button(story, "Continue"), user=fake.bob)
    await click.reply(lambda m: "Writing the next part" in m["content"])
    await fake.wait_until(lambda: len([m for m in bot_messages(fake) if is_story(m)]) == 2)


async def test_the_default_length(env: BotEnv) -> None:
    fake = env.fake
    assert "unless its author chooses" in await admin(env, "length", default="short")
    handle = await fake.invoke("story", user=fake.alice, genre="crime", prompt=PROMPT)
    await handle.deferred()
    await fake.wait_for_message(is_story)
    assert env.store is not None
    parts = await env.store.story_parts(1)
    assert parts[1].params is not None and parts[1].params["max_new_tokens"] == 60


async def test_the_servers_filter_refuses_prompts_and_masks_what_is_written(env: BotEnv) -> None:
    fake = env.fake
    said = await admin(env, "filter", action="add", term="THE")
    assert "1 of its own" in said
    assert "||the||" in await admin(env, "filter", action="list")
    refused = await refused_story(env, fake.alice, prompt="The night the storm came")
    assert refused == "This server's filter refused that prompt."  # never the word
    story = await start_story(env, prompt=PROMPT, length="long")
    every_version = [story["content"], *(e["content"] for e in story.get("edits", []))]
    for shown in every_version:  # streamed edits included
        assert not re.search(r"\bthe\b", shown, re.IGNORECASE), shown
    assert "███" in story["content"]  # the tiny model writes "the" in a long part
    assert env.store is not None
    part = (await env.store.story_parts(1))[1]
    assert part.masked and "███" in part.text and not re.search(r"\bthe\b", part.text, re.I)
    shown = await admin(env, "show")
    assert "prompts refused 1 / 1" in shown and "parts masked 1 / 1" in shown
    assert "removed from" in await admin(env, "filter", action="remove", term="the")


@pytest.mark.bot_options(user_max_active=5)
async def test_reports_hide_a_part_everywhere_until_an_admin_restores_it(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, prompt=PROMPT)
    assert "after 2 reports from members" in await admin(env, "reports", members=2)
    first = await fake.click(story, button(story, "Report"), user=fake.bob)
    await first.reply(lambda m: "Reported. Thank you" in m["content"])
    again = await fake.click(story, button(story, "Report"), user=fake.bob)
    await again.reply(lambda m: "reported that part already" in m["content"])
    assert is_story(story)  # one member's report does not hide it
    second = await fake.click(story, button(story, "Report"), user=fake.carol)
    await second.reply(lambda m: "now hidden" in m["content"])
    await fake.wait_until(lambda: "removed after reports" in story["content"])
    assert not story.get("components") or not any(
        row["components"] for row in story["components"]
    )  # no Continue on a removed part
    # Hidden from /mystories, the HTTP interface and exports, too.
    client = await env.http()
    answer = await (await client.get("/stories/1")).json()
    texts = [p["text"] for p in answer["parts"]]
    assert texts[0] == PROMPT and "removed after reports" in texts[1]
    markdown = await (await client.get("/stories/1.md")).text()
    assert "removed after reports" in markdown
    assert env.store is not None
    original = (await env.store.story_parts(1))[1].text
    assert original.strip() and original not in markdown
    # The admin lists the hidden parts and restores this one.
    listing = await pick_hidden_part(env)
    restore = await fake.click(listing, button(listing, "Restore"), user=fake.dana)
    await restore.deferred()
    assert "shown again" in listing["content"]
    await fake.wait_until(lambda: is_story(story) and "removed" not in story["content"])
    assert original.strip()[:20] in story["content"]


async def pick_hidden_part(env: BotEnv) -> dict[str, Any]:
    """/storyadmin hidden, as an admin, and the first hidden part chosen in it."""
    fake = env.fake
    handle = await fake.invoke("storyadmin", user=fake.dana, subcommand="hidden")
    listing = await handle.reply(lambda m: "hidden part" in m["content"])
    part_id = listing["components"][0]["components"][0]["options"][0]["value"]
    picked = await fake.select(
        listing, button(listing, "Choose a hidden part"), [part_id], user=fake.dana
    )
    await picked.deferred()
    return listing


async def test_an_admin_deletes_a_hidden_part(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env, prompt=PROMPT)
    hide = await fake.click(story, button(story, "Report"), user=fake.dana)  # an admin: 1 is enough
    await hide.reply(lambda m: "now hidden" in m["content"])
    await fake.wait_until(lambda: "removed after reports" in story["content"])
    listing = await pick_hidden_part(env)
    delete = await fake.click(listing, button(listing, "Delete"), user=fake.dana)
    await delete.deferred()
    assert "is deleted" in listing["content"]
    await fake.wait_until(lambda: "deleted" in story["content"])
    assert env.store is not None
    assert [p.kind for p in await env.store.story_parts(1)] == ["prompt"]
    assert "No part is hidden" in await admin(env, "hidden")


async def test_a_server_the_bot_leaves_keeps_its_settings_a_while(env: BotEnv) -> None:
    fake = env.fake
    await admin(env, "limits", daily_quota=7)
    guild = int(fake.server.guild_id)
    assert env.store is not None
    guilds = GuildStore(env.store)
    await fake.server.dispatch("GUILD_DELETE", {"id": fake.server.guild_id})
    deadline = asyncio.get_running_loop().time() + 10
    while (left := await guilds.settings(guild)).left_at is None:  # the bot records it
        assert asyncio.get_running_loop().time() < deadline, "leaving was not recorded"
        await asyncio.sleep(0.01)
    assert left.daily_quota == 7
    assert await guilds.forget_left_before(left.left_at - 1) == []  # kept for now
    assert await guilds.forget_left_before(left.left_at + 1) == [guild]  # 30 days later
