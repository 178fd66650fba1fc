"""The whole application (`app.runtime.run`) against the fake Discord, for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from app.runtime import run
from app.settings import Settings
from tests.fakediscord.harness import FakeDiscord


@contextlib.asynccontextmanager
async def running_app(fake: FakeDiscord, settings: Settings) -> AsyncIterator[None]:
    """Start bot and HTTP, wait until the commands are synced and the gateway is
    up; on leaving, stop it and require a clean return."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    fake.watch.append(task)  # the test fails if the app dies
    await fake.wait_until(
        lambda: fake.server.commands and fake.server.connected.is_set(), timeout=30
    )
    yield
    fake.watch.remove(task)
    stop.set()
    await asyncio.wait_for(task, 30)  # a clean return, no exception
