"""The fake Discord's own tests, with a minimal bot that uses each route."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from discord import app_commands

from tests.fakediscord.harness import FakeDiscord, check_redirection_points
from tests.fakediscord.server import shard_of, snowflake


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


# ----------------------------------------------------------------- sharding
class ShardedMini(discord.AutoShardedClient):
    """A minimal sharded client that records the reactions it is sent."""

    def __init__(self, **options: Any) -> None:
        super().__init__(
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self._connection.guild_ready_timeout = 0.05

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None  # the fake does not hold a client to Discord's 5 s between IDENTIFYs

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_reactions.append(payload)


@contextlib.asynccontextmanager
async def connected(fake: FakeDiscord, *clients: discord.Client) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(client.start("fake-token")) for client in clients]
    fake.watch.extend(tasks)
    try:
        for client in clients:
            await asyncio.wait_for(client.wait_until_ready(), 10)
        yield
    finally:
        for client in clients:
            await client.close()
        for task in tasks:
            fake.watch.remove(task)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)


def guild_ids(client: discord.Client) -> set[str]:
    return {str(guild.id) for guild in client.guilds}


async def test_guild_ids_fall_on_the_shard_asked_for() -> None:
    for count in (1, 2, 3, 16):
        for shard in range(count):
            assert shard_of(snowflake((shard, count)), count) == shard


async def test_auto_sharding_gets_every_guild_over_the_recommended_shards(
    fake: FakeDiscord,
) -> None:
    north = fake.server.add_guild("North", ("north",), shard=(0, 2))
    south = fake.server.add_guild("South", ("south",), shard=(1, 2))
    fake.server.recommended_shards = 2
    bot = ShardedMini()
    async with connected(fake, bot):
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        assert guild_ids(bot) == {fake.server.guild_id, north, south}
        for guild in bot.guilds:  # discord.py's own formula agrees with the fake's
            assert guild.shard_id == shard_of(guild.id, 2)
        assert sorted(s.shard for s in fake.server.live_sessions()) == [(0, 2), (1, 2)]


async def test_each_shard_gets_only_its_guilds_and_their_events(fake: FakeDiscord) -> None:
    north = fake.server.add_guild("North", ("north",), shard=(0, 2))
    south = fake.server.add_guild("South", ("south",), shard=(1, 2))
    first = shard_of(fake.server.guild_id, 2)
    zero, one = ShardedMini(shard_count=2, shard_ids=[0]), ShardedMini(shard_count=2, shard_ids=[1])
    async with connected(fake, zero, one):
        assert guild_ids(zero) == {north} | ({fake.server.guild_id} if first == 0 else set())
        assert guild_ids(one) == {south} | ({fake.server.guild_id} if first == 1 else set())
        for channel in ("north", "south"):
            message = fake.server.make_message(
                fake.channel_id(channel), {"content": "hello"}, fake.alice
            )
            await fake.react(message, "➕", user=fake.bob)
        await fake.wait_until(lambda: zero.raw_reactions and one.raw_reactions)
        assert [str(r.guild_id) for r in zero.raw_reactions] == [north]
        assert [str(r.guild_id) for r in one.raw_reactions] == [south]


async def test_a_shard_that_does_not_exist_is_refused(fake: FakeDiscord) -> None:
    bot = ShardedMini(shard_count=2, shard_ids=[2])
    task = asyncio.create_task(bot.start("fake-token"))
    with pytest.raises(discord.ConnectionClosed) as closed:
        await asyncio.wait_for(task, 10)
    assert closed.value.code == 4010
    await bot.close()


async def test_two_sessions_of_one_shard_both_get_its_events(fake: FakeDiscord) -> None:
    """As on Discord, each session of a shard (two processes on one token, or
    an old and a new one during a restart) gets every event of its guilds;
    `to` sends one to a single connection."""
    first, second = MiniBot(), MiniBot()
    async with connected(fake, first, second):
        sessions = fake.server.live_sessions()
        assert len(sessions) == 2
        message = fake.server.make_message(fake.channel_id(), {"content": "hi"}, fake.alice)
        await fake.react(message, "➕", user=fake.bob)
        await fake.wait_until(lambda: first.raw_reactions and second.raw_reactions)
        await fake.react(message, "👍", user=fake.bob, to=sessions[0])
        await fake.wait_until(lambda: len(first.raw_reactions) + len(second.raw_reactions) == 3)


# ------------------------------------------------------------- global limit
async def test_the_global_limit_answers_429_and_discord_py_waits(
    fake: FakeDiscord, mini: MiniBot
) -> None:
    fake.server.global_limit = 5
    channel = int(fake.channel_id())
    started = time.monotonic()
    fetched = await asyncio.gather(*(mini.fetch_channel(channel) for _ in range(8)))
    assert len(fetched) == 8
    assert time.monotonic() - started >= 0.5  # the last three waited for the window
    limited = fake.server.rate_limited
    assert limited and all(r.path == f"/channels/{channel}" for r in limited)
    per_second = [r.at for r in fake.server.requests if r not in limited and r.at >= started]
    for at in per_second:  # what was answered fits the limit in every second
        assert sum(at <= other < at + 1.0 for other in per_second) <= 5


async def test_interaction_answers_are_outside_the_global_limit(
    fake: FakeDiscord, mini: MiniBot
) -> None:
    fake.server.global_limit = 1
    handle = await fake.invoke("ping", user=fake.alice, word="hi")
    await handle.reply(lambda m: m["content"] == "done")
    limited = fake.server.rate_limited
    assert limited  # the channel requests waited their turn...
    assert not [r for r in limited if r.path.startswith(("/interactions/", "/webhooks/"))]
    counts = fake.server.requests_per_route()
    assert counts["PATCH /channels/{id}/messages/{id}"] >= 1
    pong = next(m for m in fake.server.messages.values() if m["content"] == "pong hi!")
    # Its POST, its ➕ and its edit (the reply that points at it is another's),
    # and each of them again after a 429.
    again = [r for r in limited if pong["id"] in r.path]
    assert fake.server.requests_per_message()[pong["id"]] == 3 + len(again)
