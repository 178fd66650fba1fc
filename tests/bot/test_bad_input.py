"""Bad input and Discord's failures: each gets a sensible answer, nothing is lost."""

from __future__ import annotations

import pytest

from storage.models import GeneratedPart
from stories.message_book import MessageBook
from stories.service import MAX_PROMPT_CHARS
from tests.bot.conftest import BotEnv
from tests.bot.helpers import button, is_story, start_story, story_messages
from tests.fakediscord.server import ADD_REACTIONS


@pytest.mark.parametrize("prompt", ["     ", "\u200b\u200b\u200d", "\u2060 \ufeff"])
async def test_empty_looking_prompts_are_refused(env: BotEnv, prompt: str) -> None:
    handle = await env.fake.invoke("story", user=env.fake.alice, genre="crime", prompt=prompt)
    answer = await handle.reply(lambda m: "empty" in m["content"])
    assert answer["flags"] & 64
    assert (
        env.store is not None and (await env.store.list_stories(int(env.fake.alice.id))).total == 0
    )


async def test_too_long_prompt_is_refused_even_if_discord_let_it_through(env: BotEnv) -> None:
    prompt = "x" * (MAX_PROMPT_CHARS + 1)
    handle = await env.fake.invoke("story", user=env.fake.alice, genre="crime", prompt=prompt)
    await handle.reply(lambda m: f"at most {MAX_PROMPT_CHARS} characters" in m["content"])


async def test_a_thousand_emoji(env: BotEnv) -> None:
    prompt = "😀" * 1000
    story = await start_story(env, prompt=prompt)
    assert story["content"].startswith("**" + "😀" * 20)
    assert len(story["content"]) <= 2000


async def test_mentions_never_ping_and_markdown_is_escaped(env: BotEnv) -> None:
    fake = env.fake
    prompt = (
        f"@everyone @here <@&123> {fake.bob.mention} **bold** `code` ```py\nfence``` __u__ > quote"
    )
    story = await start_story(env, prompt=prompt)
    content = story["content"]
    assert "@everyone" in content and fake.bob.mention in content  # shown, not pinging
    assert "\\*\\*bold\\*\\*" in content and "\\`code\\`" in content and "\\_\\_u\\_\\_" in content
    assert content.startswith("**") and content.count("**") >= 2
    for request in fake.message_bodies():
        body = (
            request.json.get("data", request.json)
            if request.path.endswith("/callback")
            else request.json
        )
        if body.get("content") or body.get("components"):
            assert body.get("allowed_mentions") == {"parse": []}


async def test_continuing_a_story_longer_than_the_context(env: BotEnv) -> None:
    fake = env.fake
    story = await start_story(env)
    assert env.store is not None
    record = await MessageBook(env.store).get(int(story["id"]))
    assert record is not None and record.part_id is not None
    part = await env.store.get_part(record.part_id)
    long = await env.store.add_part(
        part.story_id, part.id, GeneratedPart(" And then it went on. " * 600)
    )
    shown = fake.server.make_message(
        story["channel_id"], {"content": "(a long part)"}, fake.server.bot_user
    )
    await MessageBook(env.store).showing_part(
        int(shown["id"]), int(story["channel_id"]), story_id=part.story_id, part_id=long.id, chunk=0
    )
    await fake.react(shown, "➕", user=fake.bob)
    follow = await fake.wait_for_message(lambda m: is_story(m) and "part 3" in m["content"])
    assert follow["message_reference"]["message_id"] == shown["id"]
    newest = await env.store.latest_part(part.story_id)
    assert newest.prompt_tokens is not None and newest.prompt_tokens + newest.new_tokens <= 1024  # type: ignore[operator]


async def test_without_add_reactions_the_story_still_arrives(env: BotEnv) -> None:
    env.fake.server.bot_permissions &= ~ADD_REACTIONS
    story = await start_story(env)
    await env.fake.wait_until(lambda: env.fake.sent("PUT", "/reactions/"))  # tried, was refused
    assert button(story, "Continue") and "reactions_by" not in story
    probe = await start_story(env, prompt="The bot carried on")  # and it carried on
    assert button(probe, "Continue") and "reactions_by" not in probe


async def test_rate_limited_send_still_delivers(env: BotEnv) -> None:
    env.fake.server.inject(
        "POST",
        r"/channels/\d+/messages$",
        429,
        {"message": "You are being rate limited.", "retry_after": 0.05, "global": False},
    )
    story = await start_story(env)
    assert is_story(story)


async def test_story_message_deleted_while_writing_is_posted_again(env: BotEnv) -> None:
    fake = env.fake
    env.backend.hold()
    handle = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="Fragile story", length="short"
    )
    await handle.deferred()
    first = await fake.wait_for_message(lambda m: "Fragile story" in m["content"])
    await fake.delete(first)
    env.backend.release()
    again = await fake.wait_for_message(lambda m: is_story(m) and "Fragile story" in m["content"])
    assert again["id"] != first["id"]
    assert env.store is not None
    record = await MessageBook(env.store).get(int(again["id"]))
    assert record is not None and record.part_id is not None


async def test_missed_deferral_10062_still_writes_the_story(env: BotEnv) -> None:
    env.fake.server.inject(
        "POST",
        r"/interactions/\d+/[^/]+/callback$",
        404,
        {"message": "Unknown interaction", "code": 10062},
    )
    await env.fake.invoke(
        "story", user=env.fake.alice, genre="crime", prompt="Late but fine", length="short"
    )
    story = await env.fake.wait_for_message(
        lambda m: is_story(m) and "Late but fine" in m["content"]
    )
    assert story


async def test_expired_token_does_not_lose_the_story(env: BotEnv) -> None:
    fake = env.fake
    fake.server.inject(
        "POST",
        r"/webhooks/\d+/[^/]+$",
        401,
        {"message": "Invalid Webhook Token", "code": 50027},
        times=5,
    )
    handle = await fake.invoke(
        "story", user=fake.alice, genre="crime", prompt="Token gone", length="short"
    )
    await handle.deferred()
    story = await fake.wait_for_message(lambda m: is_story(m) and "Token gone" in m["content"])
    assert story and len(story_messages(env)) == 1
