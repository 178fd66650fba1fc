"""`Retry-After` tells a refused caller when the work ahead of it will be done.

Through the real HTTP server on the tiny model: a burst fills the batch and the
queue, and everyone else gets 503. Each 503's Retry-After must be within a
factor of two of how long the work ahead of it then took.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from generation.pool import GenerationPool
from generation.tiny import build_tiny_model
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService

TOKENS = 200
BATCH = 4
QUEUE = 8


@pytest.fixture(scope="module")
def slower_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wider than the tiny model, so that a burst lasts seconds, not a blink:
    a wait of 0.3 s cannot be told apart from Retry-After's 1 s minimum."""
    folder = tmp_path_factory.mktemp("models") / "slower-gpt2"
    return build_tiny_model(folder, n_layer=4, n_embd=256, n_head=4)


async def test_retry_after_is_close_to_the_real_wait(
    slower_model: Path, store: Store, genres: GenreRegistry
) -> None:
    pool = GenerationPool(
        lambda: TransformersBackend(slower_model, max_batch_size=BATCH, threads=1),
        max_batch=BATCH,
        max_queue=QUEUE,
    )
    async with pool:
        service = StoryService(store, pool, genres, user_max_active=100, user_cooldown_s=0)
        client = TestClient(TestServer(create_app(service)))
        await client.start_server()
        try:

            async def ask(i: int) -> tuple[int, float, str | None]:
                body = {"input": f"Story {i} began", "max_new_tokens": TOKENS, "seed": i}
                async with client.post("/", json=body) as response:
                    await response.read()
                    return response.status, time.monotonic(), response.headers.get("Retry-After")

            # Recent throughput at this load: one full batch, as on a busy evening.
            warm = await asyncio.gather(*(ask(i) for i in range(BATCH)))
            assert [status for status, _, _ in warm] == [200] * BATCH

            answers = await asyncio.gather(*(ask(100 + i) for i in range(3 * QUEUE)))
        finally:
            await client.close()
            await service.wait_idle()

    served = [at for status, at, _ in answers if status == 200]
    refused = [(at, float(hint)) for status, at, hint in answers if status == 503 and hint]
    # Every place in the queue was taken before the worker took any (or a few
    # more got in as it did); the rest were refused, each with a hint.
    assert len(served) >= QUEUE and len(refused) >= QUEUE, answers
    assert len(served) + len(refused) == len(answers), answers
    drained = max(served)
    ratios = [hint / (drained - at) for at, hint in refused]
    assert min(drained - at for at, _ in refused) > 1.0, "the burst is too short to judge"
    print(f"real wait {drained - refused[0][0]:.2f} s, Retry-After / real wait: {ratios}")
    assert all(0.5 <= ratio <= 2.0 for ratio in ratios), (ratios, drained - refused[0][0])
