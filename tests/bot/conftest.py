"""The real bot against the fake Discord, on the tiny model and a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from app.runtime import shut_down
from bot.client import DiscordApp, StoryBot
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.message_book import MessageBook
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
    app: DiscordApp | None = None
    task: asyncio.Task[None] | None = None
    startup_s: float = 0.0
    stopped: bool = False
    client: TestClient[Any, Any] | None = None
    observer: Any = None  # app.metrics.Metrics, for the service and the bot

    @property
    def backend(self) -> GatedBackend:
        assert self.pool is not None and isinstance(self.pool.backend, GatedBackend)
        return self.pool.backend

    async def start(self) -> None:
        self.stopped = False
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
            observer=self.observer,
        )
        await self.service.recover_interrupted()
        self.bot = StoryBot(
            self.service,
            MessageBook(self.store),
            dev_guild_id=int(self.fake.server.guild_id),
            edit_interval=self.options.get("edit_interval", 0.0),
            guild_ready_timeout=0.05,
            notice_window_s=self.options.get("notice_window_s", 10.0),
            notice_lasts_s=self.options.get("notice_lasts_s", 0.3),
            retry_base_s=self.options.get("retry_base_s", 0.05),
            observer=self.observer,
            requests_per_s=self.options.get("requests_per_s", 40.0),
        )
        started = time.monotonic()
        self.app = DiscordApp(self.bot, "fake-token")
        self.task = self.app.start()
        self.fake.watch.append(self.task)
        await asyncio.wait_for(self.app.wait_until_ready(), 10)
        self.startup_s = time.monotonic() - started

    async def http(self) -> TestClient[Any, Any]:
        """The HTTP interface on the same service (for tests of both front-ends)."""
        if self.client is None:
            assert self.service is not None
            self.client = TestClient(TestServer(create_app(self.service)))
            await self.client.start_server()
        return self.client

    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Stop as `python -m bot` does on SIGTERM (app.runtime.shut_down)."""
        if self.stopped:
            return
        self.stopped = True
        if self.task is not None and self.task in self.fake.watch:
            self.fake.watch.remove(self.task)
        if self.pool is not None:
            self.backend.release()
        assert self.service is not None and self.pool is not None
        await shut_down(self.service, [self.pool], grace_s=grace_s, front=self.app)
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.store is not None:
            await self.store.close()

    async def crash(self) -> None:
        """Stop as a SIGKILL would: the database is left as it was (runs unfinished,
        messages stale), and nothing more reaches Discord."""
        assert self.bot is not None and self.pool is not None and self.store is not None
        assert self.service is not None
        if self.task is not None and self.task in self.fake.watch:
            self.fake.watch.remove(self.task)
        if self.client is not None:
            await self.client.close()
            self.client = None
        await self.store.close()  # from here on this "process" records nothing
        for task in list(self.bot.publisher._tasks):
            task.cancel()
        await self.bot.close()
        self.backend.release()
        await self.pool.aclose(grace_s=0)
        await self.service.wait_idle(within=10)
        self.stopped = True

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
        await environment.stop()
        fake.assert_clean()  # nothing could ping; every injected fault fired
    finally:
        await environment.stop()
        await fake.stop()
