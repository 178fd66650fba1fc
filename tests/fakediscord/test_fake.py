"""The fake Discord's own tests, with a minimal bot that uses each route."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from discord import app_commands

from tests.fakediscord.harness import FakeDiscord, check_redirection_points


class MiniBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(
            intents=discord.Intents.default(), allowed_mentions=discord.AllowedMentions.none()
        )
        self.tree = app_commands.CommandTree(self)
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self.deleted: list[int] = []
        self.errors: list[BaseException] = []
        self._connection.guild_ready_timeout = 0.05

        @self.tree.command(description="Exercise every route")
        async def ping(interaction: discord.Interaction, word: str) -> None:
            await interaction.response.defer(thinking=True)
            channel = interaction.channel
            assert isinstance(channel, discord.TextChannel)
            message = await channel.send(f"pong {word}")
            await message.add_reaction("➕")
            await message.edit(content=f"pong {word}!")
            await channel.send(
                "with a file", file=discord.File(io.BytesIO(b"hi"), "story.md"), reference=message
            )
            await interaction.edit_original_response(content="done")
            await interaction.followup.send("only you", ephemeral=True)

        @self.tree.command(description="Fail on purpose")
        async def fail(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.defer()
            except discord.HTTPException as error:
                self.errors.append(error)
                raise

        @self.tree.error
        async def on_error(
            interaction: discord.Interaction, error: app_commands.AppCommandError
        ) -> None:
            self.errors.append(error)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_reactions.append(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.deleted.append(payload.message_id)


@pytest.fixture
async def mini(fake: FakeDiscord) -> AsyncIterator[MiniBot]:
    bot = MiniBot()
    started = time.monotonic()
    task = asyncio.create_task(bot.start("fake-token"))
    fake.watch.append(task)
    await asyncio.wait_for(bot.wait_until_ready(), 5)
    assert time.monotonic() - started < 1.0, "start-up should take well under a second"
    yield bot
    await bot.close()
    await asyncio.wait_for(task, 5)


def test_redirection_points_exist() -> None:
    check_redirection_points()


async def test_login_sync_and_ready(fake: FakeDiscord, mini: MiniBot) -> None:
    assert {c["name"] for c in fake.server.commands} == {"ping", "fail"}
    assert fake.sent("GET", "/users/@me") and fake.sent("GET", "/oauth2/applications/@me")
    guild = mini.get_guild(int(fake.server.guild_id))
    assert guild is not None and {c.name for c in guild.text_channels} >= {"general", "after-dark"}
    assert any(c.is_nsfw() for c in guild.text_channels)
    assert mini.user is not None and str(mini.user.id) == fake.server.bot_user.id


async def test_every_route_of_a_command(fake: FakeDiscord, mini: MiniBot) -> None:
    handle = await fake.invoke("ping", user=fake.alice, word="hello")
    assert await handle.deferred() == 5
    ephemeral = await handle.followup(lambda m: m["flags"] & 64)
    assert ephemeral["content"] == "only you"
    assert handle.original is not None and handle.original["content"] == "done"
    pong = await fake.wait_for_message(lambda m: m["content"].startswith("pong"))
    assert pong["content"] == "pong hello!" and len(pong["edits"]) == 1
    with_file = await fake.wait_for_message(lambda m: m["attachments"])
    assert with_file["attachments"][0]["filename"] == "story.md"
    assert with_file["message_reference"]["message_id"] == pong["id"]
    # Discord echoes the bot's own reaction; the bot sees it with its own id.
    await fake.wait_until(lambda: mini.raw_reactions)
    assert mini.raw_reactions[0].user_id == mini.user.id  # type: ignore[union-attr]
    # Everything the bot said carried allowed_mentions that parse nothing.
    assert fake.message_bodies() and fake.server.problems() == []


async def test_reactions_and_deletes_from_users_arrive(fake: FakeDiscord, mini: MiniBot) -> None:
    message = await fake.post_as(fake.bob, "a story")
    await fake.react(message, "➕", user=fake.carol)
    await fake.wait_until(lambda: any(r.user_id == int(fake.carol.id) for r in mini.raw_reactions))
    await fake.delete(message)
    await fake.wait_until(lambda: mini.deleted == [int(message["id"])])


async def test_rate_limit_is_retried(fake: FakeDiscord, mini: MiniBot) -> None:
    fake.server.inject(
        "POST",
        r"/channels/\d+/messages$",
        429,
        {"message": "You are being rate limited.", "retry_after": 0.05, "global": False},
        headers={"X-RateLimit-Scope": "user"},
    )
    channel = mini.get_channel(int(fake.channel_id()))
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("after a 429")
    assert message.content == "after a 429"
    assert len(fake.sent("POST", f"/channels/{channel.id}/messages")) == 2


async def test_server_error_is_retried(fake: FakeDiscord, mini: MiniBot) -> None:
    fake.server.inject(
        "POST", r"/channels/\d+/messages$", 502, {"message": "Bad Gateway", "code": 0}
    )
    channel = mini.get_channel(int(fake.channel_id()))
    assert isinstance(channel, discord.TextChannel)
    assert (await channel.send("after a 502")).content == "after a 502"


@pytest.mark.parametrize(
    ("code", "status", "exception"),
    [
        (10008, 404, discord.NotFound),
        (50027, 401, discord.HTTPException),
        (50013, 403, discord.Forbidden),
    ],
)
async def test_error_codes_reach_the_bot(
    fake: FakeDiscord, mini: MiniBot, code: int, status: int, exception: type[Exception]
) -> None:
    channel = mini.get_channel(int(fake.channel_id()))
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("target")
    fake.server.inject(
        "PATCH", rf"/messages/{message.id}$", status, {"message": "no", "code": code}
    )
    with pytest.raises(exception) as raised:
        await message.edit(content="changed")
    assert getattr(raised.value, "code", None) == code


async def test_unknown_interaction_10062(fake: FakeDiscord, mini: MiniBot) -> None:
    fake.server.inject(
        "POST",
        r"/interactions/\d+/[^/]+/callback$",
        404,
        {"message": "Unknown interaction", "code": 10062},
    )
    await fake.invoke("fail", user=fake.alice)
    await fake.wait_until(lambda: mini.errors)
    assert any(getattr(e, "code", None) == 10062 or "10062" in str(e) for e in mini.errors)


async def test_expired_token_answers_50027(fake: FakeDiscord, mini: MiniBot) -> None:
    handle = await fake.invoke("ping", user=fake.alice, word="x")
    await handle.deferred()
    await handle.followup()
    handle.expire()
    webhook = discord.Webhook.partial(int(fake.server.application_id), handle.token, client=mini)
    with pytest.raises(discord.HTTPException) as raised:
        await webhook.edit_message(int(handle.state["original"]), content="late")
    assert raised.value.code == 50027


async def test_dropped_gateway_resumes(fake: FakeDiscord, mini: MiniBot) -> None:
    await fake.server.drop_gateway()
    await fake.wait_until(lambda: fake.server.resumes == 1 and fake.server.connected.is_set())
    handle = await fake.invoke("ping", user=fake.alice, word="again")
    assert await handle.deferred() == 5


async def test_a_dying_bot_fails_the_wait(fake: FakeDiscord) -> None:
    async def dies() -> Any:
        raise KeyError("attachment_size_limit")

    task = asyncio.create_task(dies())
    fake.watch.append(task)
    with pytest.raises(AssertionError, match="attachment_size_limit"):
        await fake.wait_until(lambda: False, timeout=5)


async def test_a_message_without_allowed_mentions_fails_the_test(
    fake: FakeDiscord, mini: MiniBot
) -> None:
    channel = mini.get_channel(int(fake.channel_id()))
    assert isinstance(channel, discord.TextChannel)
    # Raw HTTP, as a careless bot would send it: no allowed_mentions at all.
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    await mini.http.request(route, json={"content": "@everyone hello"})
    problems = fake.server.problems()
    assert len(problems) == 1 and "could ping" in problems[0]
    with pytest.raises(AssertionError, match="could ping"):
        fake.assert_clean()
    fake.server.requests.clear()  # the fixture's own check must pass now


async def test_an_injected_fault_that_never_fired_fails_the_test(fake: FakeDiscord) -> None:
    fake.server.inject("PATCH", r"/channels/\d+/messages/0$", 503)  # nothing ever matches
    with pytest.raises(AssertionError, match="never fired"):
        fake.assert_clean()
    fake.server.faults.clear()


async def test_a_fault_can_match_on_the_body(fake: FakeDiscord, mini: MiniBot) -> None:
    channel = mini.get_channel(int(fake.channel_id()))
    assert isinstance(channel, discord.TextChannel)
    fake.server.inject(
        "POST",
        r"/channels/\d+/messages$",
        403,
        {"message": "Missing Permissions", "code": 50013},
        when=lambda body: body.get("content") == "refused",
    )
    assert (await channel.send("allowed")).content == "allowed"
    with pytest.raises(discord.Forbidden):
        await channel.send("refused")
