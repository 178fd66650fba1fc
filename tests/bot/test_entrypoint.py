"""The composition root with a Discord token: bot and HTTP service in one loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from app.runtime import run
from app.settings import load_settings
from bot.client import DiscordLoginError
from tests.bot.app_runner import running_app
from tests.bot.helpers import is_story
from tests.conftest import REPO, free_port
from tests.fakediscord.harness import FakeDiscord


def settings_for(fake: FakeDiscord, model: Path, tmp_path: Path, port: int, token: str = "t0ken"):  # type: ignore[no-untyped-def]
    return load_settings(
        discord_token=token,
        discord_dev_guild_id=int(fake.server.guild_id),
        model_dir=model,
        database_path=tmp_path / "s.sqlite3",
        http_port=port,
        genres_path=REPO / "genres.toml",
        generation_threads=1,
    )


async def test_token_starts_bot_and_http_together(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    async with running_app(fake, settings_for(fake, tiny_model_dir, tmp_path, port)):
        handle = await fake.invoke(
            "story", user=fake.alice, genre="crime", prompt="Both at once", length="short"
        )
        await handle.deferred()
        await fake.wait_for_message(lambda m: is_story(m) and "Both at once" in m["content"])
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/", json={"input": "Over HTTP"}) as reply,
        ):
            body = await reply.json()
        assert body["output"].startswith("Over HTTP")


async def test_a_refused_token_is_one_clear_error(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fake.server.inject("GET", r"/users/@me$", 401, {"message": "401: Unauthorized", "code": 0})
    with pytest.raises(DiscordLoginError, match="DISCORD_TOKEN was refused"):
        await asyncio.wait_for(run(settings_for(fake, tiny_model_dir, tmp_path, free_port())), 30)
