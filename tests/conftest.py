"""Shared fixtures: the tiny model (built once per session), pools, stores."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from generation.job import Job
from generation.pool import GenerationPool
from generation.tiny import build_tiny_model
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService
from tests.fakediscord.harness import FakeDiscord
from tests.postgres import MISSING, PostgresServer, binaries, create_database, running_server

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2, built by the same code as `download_model.py --tiny`."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gpt2", train_steps=150)


@pytest.fixture(scope="session")
def genres() -> GenreRegistry:
    return GenreRegistry.load(REPO / "genres.toml")


class GatedBackend:
    """The real backend, made to wait at the start of each batch until a test
    releases it, so queue states can be set up without sleeping."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.context_size = inner.context_size
        self.max_batch_size = inner.max_batch_size
        self.eos_token_id = inner.eos_token_id
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.gate.set()
        self.contexts: list[str] = []  # what the model was given, job by job

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self.gate.set()

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(ids)

    @property
    def forward_calls(self) -> int:
        return self.inner.forward_calls

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        self.entered.set()
        self.gate.wait(timeout=60)
        self._saw(jobs)

        def admitted(room: int) -> list[Job]:
            more = admit(room)
            self._saw(more)
            return more

        self.inner.generate(jobs, admitted)

    def _saw(self, jobs: list[Job]) -> None:
        """Record the context each job is generated from, as the model reads it."""
        for job in jobs:
            if job.prompt_ids:
                self.contexts.append(self.inner.decode(job.prompt_ids))

    def wake(self) -> None:
        self.inner.wake()

    def close(self) -> None:
        self.inner.close()


def free_port() -> int:
    """A loopback port nobody listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord on loopback, stopped after the test."""
    discord = FakeDiscord()
    await discord.start()
    try:
        yield discord
        discord.assert_clean()  # nothing could ping; every injected fault fired
    finally:
        await discord.stop()


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until `condition()` is true, polling the loop (never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
def make_pool(tiny_model_dir: Path) -> Callable[..., GenerationPool]:
    def factory(gated: bool = False, max_batch: int = 8, **kwargs: object) -> GenerationPool:
        def backend() -> TransformersBackend | GatedBackend:
            real = TransformersBackend(tiny_model_dir, max_batch_size=max_batch, threads=1)
            return GatedBackend(real) if gated else real

        return GenerationPool(backend, max_batch=max_batch, **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture
async def pool(make_pool: Callable[..., GenerationPool]) -> AsyncIterator[GenerationPool]:
    async with make_pool() as started:
        yield started


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "stories.sqlite3") as opened:
        yield opened


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the tests' own (tests/postgres.py), started at the
    first test that needs it and stopped at the end of the session."""
    if binaries() is None:
        if os.environ.get("STORYBOT_REQUIRE_POSTGRES"):  # .ci/run: never skipped there
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with running_server() as server:
        yield server


_databases = itertools.count(1)


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the tests' PostgreSQL server."""
    return await create_database(postgres_server, f"test_{next(_databases)}")


@pytest.fixture
async def service(
    store: Store, pool: GenerationPool, genres: GenreRegistry
) -> AsyncIterator[StoryService]:
    svc = StoryService(store, pool, genres, user_max_active=2, user_cooldown_s=0)
    yield svc
    await svc.wait_idle()
