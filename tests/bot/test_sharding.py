"""Sharding through the composition root (`app.runtime.run`) and the fake Discord.

Discord sends a guild's events to the shard (guild_id >> 22) % shard_count.
One process with SHARD_COUNT=2 runs both shards and serves the guilds of
each; two processes with SHARD_IDS=0 and SHARD_IDS=1 split them, each serving
only its own guilds (and only one of them binds the HTTP port).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from app.runtime import run
from app.settings import Settings, load_settings
from tests.bot.helpers import is_story
from tests.conftest import REPO, free_port
from tests.fakediscord.harness import FakeDiscord
from tests.fakediscord.server import shard_of


def settings(tmp_path: Path, model: Path, name: str, **options: Any) -> Settings:
    return load_settings(
        discord_token="fake-token",
        model_dir=model,
        backend="transformers",
        database_path=tmp_path / f"{name}.sqlite3",
        http_port=free_port(),
        genres_path=REPO / "genres.toml",
        generation_threads=1,
        user_cooldown_s=0,
        **options,
    )


@contextlib.asynccontextmanager
async def serving(fake: FakeDiscord, *configs: Settings) -> AsyncIterator[None]:
    """Run each configuration as `python -m bot` would (in this loop), one
    after the other (two models must not load at once in one process: the
    loading is not thread-safe), until the fake has every shard they asked for
    connected; stop them cleanly."""
    stops: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        wanted = 0
        for config in configs:
            stops.append(asyncio.Event())
            tasks.append(asyncio.create_task(run(config, stops[-1])))
            fake.watch.append(tasks[-1])
            wanted += len(config.shards or range(config.shard_count or 1))
            await fake.wait_until(
                lambda n=wanted: fake.server.commands and len(fake.server.live_sessions()) == n,
                60,
            )
        yield
    finally:
        for task in tasks:
            fake.watch.remove(task)
        for stop in stops:
            stop.set()
        for task in tasks:
            await asyncio.wait_for(task, 30)  # a clean return, no exception


def two_guilds(fake: FakeDiscord) -> tuple[str, str]:
    fake.server.max_concurrency = 2  # both shards may IDENTIFY at once
    north = fake.server.add_guild("North", ("north",), shard=(0, 2))
    south = fake.server.add_guild("South", ("south",), shard=(1, 2))
    return north, south


async def story_in(fake: FakeDiscord, channel: str, prompt: str) -> dict[str, Any]:
    handle = await fake.invoke(
        "story", user=fake.alice, channel=channel, genre="crime", prompt=prompt, length="short"
    )
    await handle.deferred(timeout=20)
    return await fake.wait_for_message(
        lambda m: is_story(m) and prompt in m["content"], channel=channel, timeout=60
    )


def stories_in(database: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return {row[0] for row in conn.execute("SELECT guild_id FROM stories")}


async def test_one_process_runs_every_shard_and_serves_the_guilds_of_each(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    north, south = two_guilds(fake)
    config = settings(tmp_path, tiny_model_dir, "one", shard_count=2)
    async with serving(fake, config):
        shards = {s.shard: s for s in fake.server.live_sessions()}
        assert set(shards) == {(0, 2), (1, 2)}
        await story_in(fake, "north", "North of the river")
        await story_in(fake, "south", "South of the river")
    assert stories_in(config.database_path) == {int(north), int(south)}


async def test_unset_the_shard_count_comes_from_discord(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Without SHARD_COUNT, discord.py asks GET /gateway/bot (AutoShardedClient)."""
    two_guilds(fake)
    fake.server.recommended_shards = 2
    config = settings(tmp_path, tiny_model_dir, "auto")
    assert config.shard_count is None
    stops = asyncio.Event()
    task = asyncio.create_task(run(config, stops))
    fake.watch.append(task)
    try:
        await fake.wait_until(lambda: len(fake.server.live_sessions()) == 2, 60)
        assert {s.shard for s in fake.server.live_sessions()} == {(0, 2), (1, 2)}
        await story_in(fake, "south", "Asked Discord how many")
    finally:
        fake.watch.remove(task)
        stops.set()
        await asyncio.wait_for(task, 30)


async def test_two_processes_split_the_shards_and_serve_only_their_guilds(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    north, south = two_guilds(fake)
    first = shard_of(fake.server.guild_id, 2)  # the fake's own first guild is on one too
    zero = settings(tmp_path, tiny_model_dir, "zero", shard_count=2, shard_ids="0")
    one = settings(
        tmp_path, tiny_model_dir, "one", shard_count=2, shard_ids="1", http_enabled=False
    )
    async with serving(fake, zero, one):
        sessions = fake.server.live_sessions()
        assert sorted(s.shard for s in sessions) == [(0, 2), (1, 2)]
        await story_in(fake, "north", "North of the river")
        await story_in(fake, "south", "South of the river")
        await story_in(fake, "general", "In the first guild")
        # The HTTP interface runs in the process that has it enabled, alone.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{zero.http_port}/healthz") as answer,
        ):
            assert answer.status == 200
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", one.http_port)
            writer.close()
            raise AssertionError("HTTP_ENABLED=false bound its port")
    guild = int(fake.server.guild_id)
    assert stories_in(zero.database_path) == {int(north)} | ({guild} if first == 0 else set())
    assert stories_in(one.database_path) == {int(south)} | ({guild} if first == 1 else set())
