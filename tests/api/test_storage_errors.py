"""The HTTP interface when the database cannot take a write: a full disk, a
read-only file. Nothing already stored is lost, and each answer says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from generation.pool import GenerationPool
from storage.errors import StorageUnavailable
from storage.models import GeneratedPart
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService
from tests.conftest import GatedBackend


@pytest.fixture
async def client(service: StoryService) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    yield client
    await client.close()
    await service.wait_idle()


async def _fill(store: Store, story_id: int, parent_id: int) -> None:
    """SQLite's own cap on the file size, then parts until it is reached: what a
    full disk looks like to SQLite."""
    row = await store._one("PRAGMA page_count")
    assert row is not None
    await store._conn.execute(f"PRAGMA max_page_count = {row[0]}")
    refused = 0
    for size in (4000, 1000, 250, 60, 15, 4, 1):  # every free byte, big pieces first
        try:
            while True:
                await store.add_part(story_id, parent_id, GeneratedPart("z" * size))
        except StorageUnavailable as full:
            assert "full" in str(full)
            refused += 1
    assert refused == 7


async def test_a_full_disk_answers_503_and_loses_nothing(
    client: TestClient[Any, Any], store: Store
) -> None:
    made = await client.post("/", json={"input": "Before the disk filled", "max_new_tokens": 4})
    assert made.status == 200
    story = await made.json()
    before = await (await client.get(f"/stories/{story['story_id']}")).json()
    await _fill(store, story["story_id"], story["part_id"])

    response = await client.post(f"/stories/{story['story_id']}/continue", json={})
    body = await response.json()
    assert response.status == 503, body
    assert body["error"]["code"] == "storage_unavailable"
    assert "full" in body["error"]["message"]
    assert int(response.headers["Retry-After"]) >= 1

    # /readyz says so (a load balancer stops sending stories), and why.
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["database"] is True
    assert body["database_writable"] is False and "full" in body["database_error"]
    # Reading still works: what was stored is all there.
    after = await (await client.get(f"/stories/{story['story_id']}")).json()
    assert after["parts"][: len(before["parts"])] == before["parts"]

    # Space comes back: ready again at the next probe, and the story goes on.
    await store._conn.execute("PRAGMA max_page_count = 1073741823")
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["database_writable"] is True, body
    assert "database_error" not in body
    response = await client.post(f"/stories/{story['story_id']}/continue", json={})
    assert response.status == 200, await response.text()


async def test_readyz_finds_a_full_disk_before_any_story_is_lost(
    client: TestClient[Any, Any], store: Store
) -> None:
    """The disk filled (another program, say) after the last write this server
    made: the probe finds it."""
    made = await client.post("/", json={"input": "Before the disk filled", "max_new_tokens": 4})
    story = await made.json()
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["database_writable"] is True
    await _fill(store, story["story_id"], story["part_id"])
    # Forget what filling it taught the store, and that its last success was recent.
    store._write_error, store._write_seen = None, -float("inf")
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["database_writable"] is False, body


async def test_a_disk_that_fills_while_a_part_is_written_answers_503(
    make_pool: Callable[..., GenerationPool], store: Store, genres: GenreRegistry
) -> None:
    async with make_pool(gated=True) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        service = StoryService(store, pool, genres)
        client = TestClient(TestServer(create_app(service)))
        await client.start_server()
        try:
            made = await client.post("/", json={"input": "Before the fill", "max_new_tokens": 4})
            story = await made.json()
            backend.hold()
            running = asyncio.create_task(
                client.post(f"/stories/{story['story_id']}/continue", json={"max_new_tokens": 8})
            )
            await asyncio.to_thread(backend.entered.wait, 10)
            await _fill(store, story["story_id"], story["part_id"])
            backend.release()
            response = await running
            body = await response.json()
            assert response.status == 503, body
            assert body["error"]["code"] == "storage_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        finally:
            await client.close()
            await service.wait_idle()
