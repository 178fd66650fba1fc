"""The real bot against the fake Discord, on the tiny model and a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.client import StoryBot
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService
from tests.conftest import GatedBackend
from tests.fakediscord.harness import FakeDiscord


@dataclass
class BotEnv:
    fake: FakeDiscord
    db_path: Path
    model_dir: Path
    genres: GenreRegistry
    options: dict[str, Any] = field(default_factory=dict)
    store: Store | None = None
    pool: GenerationPool | None = None
    service: StoryService | None = None
    bot: StoryBot | None = None
    task: asyncio.Task[None] | None = None
    startup_s: float = 0.0

    @property
    def backend(self) -> GatedBackend:
        assert self.pool is not None and isinstance(self.pool.backend, GatedBackend)
        return self.pool.backend

    async def start(self) -> None:
        self.store = await Store.open(self.db_path)
        max_batch = self.options.get("max_batch", 8)

        def backend() -> GatedBackend:
            return GatedBackend(
                TransformersBackend(self.model_dir, max_batch_size=max_batch, threads=1)
            )

        self.pool = GenerationPool(
            backend,
            max_batch=max_batch,  # type: ignore[arg-type]
            max_queue=self.options.get("max_queue", 32),
        )
        await self.pool.start()
        self.service = StoryService(
            self.store,
            self.pool,
            self.genres,
            user_max_active=self.options.get("user_max_active", 5),
            user_cooldown_s=self.options.get("user_cooldown_s", 0),
        )
        await self.service.recover_interrupted()
        self.bot = StoryBot(
            self.service,
            dev_guild_id=int(self.fake.server.guild_id),
            edit_interval=self.options.get("edit_interval", 0.0),
            guild_ready_timeout=0.05,
        )
        started = time.monotonic()
        self.task = asyncio.create_task(self.bot.start("fake-token"))
        self.fake.watch.append(self.task)
        ready = asyncio.ensure_future(self.bot.wait_until_ready())
        await asyncio.wait({ready, self.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            raise AssertionError(f"the bot died during start-up: {self.task.exception()!r}")
        assert ready.done(), "the bot did not become ready"
        self.startup_s = time.monotonic() - started

    async def stop(self, *, drain: float = 10.0) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            self.fake.watch.remove(self.task)
            await asyncio.wait_for(self.task, 10)
        if self.pool is not None:
            self.backend.release()
            await self.pool.aclose(drain_timeout=drain)
        if self.service is not None:
            await self.service.wait_idle()
        if self.store is not None:
            await self.store.close()

    async def restart(self) -> None:
        """Stop everything and start again on the same database file."""
        await self.stop()
        await self.start()


@pytest.fixture
async def env(
    tmp_path: Path, tiny_model_dir: Path, genres: GenreRegistry, request: pytest.FixtureRequest
) -> AsyncIterator[BotEnv]:
    fake = FakeDiscord()
    await fake.start()
    marker = request.node.get_closest_marker("bot_options")
    environment = BotEnv(
        fake,
        tmp_path / "bot.sqlite3",
        tiny_model_dir,
        genres,
        options=dict(marker.kwargs) if marker else {},
    )
    await environment.start()
    try:
        yield environment
    finally:
        await environment.stop()
        await fake.stop()
