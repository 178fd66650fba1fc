"""Two `python -m bot` processes on one PostgreSQL database, behind the fake Discord.

Both run the one shard the fake recommends, as an old and a new process do
while one replaces the other: Discord sends each event of the guild to each
session of its shard, so a reaction reaches both. Interactions are sent to
one of them (`to=`), so each process starts stories of its own.

- A ➕ that reaches both processes for the same part gives one continuation
  (the claim is in the database), and the process that lost the claim stays
  silent (the part appears anyway, as when a reaction joins a run).
- Killed (SIGKILL) in the middle of a story, one process leaves the other
  serving; the other's sync leaves the dead one's message alone.
- At start-up each process recovers only its own interrupted runs
  (INSTANCE_ID): the survivor, killed and started again, reports its own and
  marks them with Retry, not the other's, which the other does when it is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.bot.helpers import buttons, is_story, part_of, spawn_bot
from tests.conftest import free_port
from tests.fakediscord.harness import FakeDiscord
from tests.fakediscord.server import Session, User

WRITING = "writing…"


@dataclass
class Process:
    """One storybot process (tests.fakediscord.launch) and its log."""

    fake: FakeDiscord
    name: str
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    session: Session | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.logs[-1]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}): {self.output()}")
        return True

    async def start(self) -> None:
        """Start it; return once its gateway session is up and it is ready."""
        self.starts += 1
        self.logs.append(self.folder / f"{self.name}-{self.starts}.log")
        before = {id(s) for s in self.fake.server.live_sessions()}
        self.process = spawn_bot(self.env, self.log)

        def ready() -> Session | None:
            if not (self.alive() and "connected to Discord as" in self.output()):
                return None
            fresh = [s for s in self.fake.server.live_sessions() if id(s) not in before]
            return fresh[0] if len(fresh) == 1 else None

        self.session = await self.fake.wait_until(ready, timeout=180)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(self.process.wait, 30) == -signal.SIGKILL
        session = self.session
        await self.fake.wait_until(lambda: session not in self.fake.server.live_sessions())

    async def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.process.wait, 60)
        assert code == 0, self.output()[-3000:]
        assert "stopped cleanly" in self.output()


async def start_story(
    fake: FakeDiscord, via: Process, user: User, prompt: str, length: str = "short"
) -> None:
    assert via.session is not None
    handle = await fake.invoke(
        "story", user=user, genre="crime", prompt=prompt, length=length, to=via.session
    )
    await handle.deferred(timeout=20)


async def written(fake: FakeDiscord, prompt: str, timeout: float = 60) -> dict[str, Any]:
    """The story's message once its part is shown."""
    found: dict[str, Any] = await fake.wait_for_message(
        lambda m: is_story(m) and prompt in m["content"], timeout=timeout
    )
    return found


async def writing(fake: FakeDiscord, prompt: str) -> dict[str, Any]:
    """The story's message while its text streams in."""
    found: dict[str, Any] = await fake.wait_for_message(
        lambda m: prompt in m["content"] and WRITING in m["content"], timeout=60
    )
    return found


def retry_shown(message: dict[str, Any]) -> bool:
    return any(b.startswith("story:retry:") for b in buttons(message))


async def test_two_processes_on_one_database(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_"))}
    base.update(
        FAKE_DISCORD_URL=fake.server.url,
        FAKE_STEP_S="0.03",  # a long story takes several seconds: time to kill it
        DISCORD_TOKEN="fake-token",
        DISCORD_DEV_GUILD_ID=fake.server.guild_id,
        DISCORD_REQUESTS_PER_S="20",  # Discord's limit is the token's: split
        DATABASE_URL=postgres_url,
        MODEL_DIR=str(tiny_model_dir),
        BACKEND="transformers",
        GENERATION_THREADS="1",
        USER_COOLDOWN_S="0",
        SHUTDOWN_GRACE_S="1",
        LOG_LEVEL="INFO",
    )
    a = Process(fake, "a", {**base, "INSTANCE_ID": "a", "HTTP_PORT": str(free_port())}, tmp_path)
    b = Process(fake, "b", {**base, "INSTANCE_ID": "b", "HTTP_ENABLED": "false"}, tmp_path)
    people = [fake.server.add_user(name) for name in ("ann", "ben", "cid", "dee", "eve")]
    ann, ben, cid, dee, eve = people
    try:
        await a.start()
        await b.start()

        # Stories started on both.
        await start_story(fake, a, ann, "Started on A")
        await start_story(fake, b, ben, "Started on B")
        on_a = await written(fake, "Started on A")
        await written(fake, "Started on B")

        # One ➕, delivered to each process: one continuation.
        part = part_of(on_a)
        assert part is not None
        await fake.react(on_a, "➕", user=cid)

        def continued() -> dict[str, Any] | None:
            return next(
                (
                    m
                    for m in fake.messages()
                    if is_story(m)
                    and (m.get("message_reference") or {}).get("message_id") == on_a["id"]
                ),
                None,
            )

        await fake.wait_until(continued, timeout=60)
        await fake.wait_until(
            lambda: any("another process writes it" in p.output() for p in (a, b)), timeout=20
        )
        conn = await asyncpg.connect(postgres_url)
        try:
            runs = await conn.fetch("SELECT owner FROM runs WHERE parent_id = $1", part)
            parts = await conn.fetchval("SELECT count(*) FROM parts WHERE parent_id = $1", part)
        finally:
            await conn.close()
        assert len(runs) == 1 and parts == 1, (runs, parts)
        assert (cid.id, "➕") not in on_a.get("reactions_removed", []), "a refusal was shown"

        # A long story on each; A is killed in the middle of its own.
        await start_story(fake, a, dee, "Long on A", "long")
        await start_story(fake, b, eve, "Long on B", "long")
        long_a = await writing(fake, "Long on A")
        await writing(fake, "Long on B")
        await a.kill()

        # B serves on: its story is finished, and new ones are written.
        await written(fake, "Long on B", timeout=120)
        await start_story(fake, b, ann, "After the crash")
        await written(fake, "After the crash")
        assert WRITING in long_a["content"] and not retry_shown(long_a)

        # B too is killed mid-story, and started again: it reports its own
        # interrupted run, marks it with Retry, and leaves A's alone.
        await start_story(fake, b, ben, "Long again on B", "long")
        long_b = await writing(fake, "Long again on B")
        await b.kill()
        await b.start()
        await fake.wait_until(lambda: retry_shown(long_b), timeout=60)
        assert "1 parts were interrupted by the last shutdown" in b.output()
        assert WRITING in long_a["content"] and not retry_shown(long_a)
        conn = await asyncpg.connect(postgres_url)
        try:
            states = dict(
                await conn.fetch(
                    "SELECT owner, state FROM runs WHERE state IN ('queued', 'generating',"
                    " 'interrupted')"
                )
            )
        finally:
            await conn.close()
        assert states == {"a": "generating", "b": "interrupted"}, states

        # A, back, reports its own.
        await a.start()
        await fake.wait_until(lambda: retry_shown(long_a), timeout=60)
        assert "1 parts were interrupted by the last shutdown" in a.output()
        await a.stop()
        await b.stop()
        for process in (a, b):
            for log in process.logs:
                assert "Traceback" not in log.read_text(errors="replace"), log
    finally:
        for process in (a, b):
            if process.process is not None and process.process.poll() is None:
                process.process.kill()
                process.process.wait(30)
