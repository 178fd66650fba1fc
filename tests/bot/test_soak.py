"""A simulated evening: `python -m bot` as a real process against the fake Discord.

Five members in two channels use /story, ➕ on new and old parts, Continue,
Reroll, Cancel while queued and while writing, Retry and /mystories, with low
cooldowns; the bot is stopped with SIGTERM, killed with SIGKILL and stopped
with SIGTERM again, each time in the middle of the evening, then started a last
time. Afterwards every action got a visible answer, no traceback was logged,
every part asked for is shown by exactly one message (or its run is marked with
Retry), no message is left "queued" or "writing…", and nothing could ping (the
fake Discord checks every message's allowed_mentions).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bot.helpers import (
    PROGRESS,
    bot_messages,
    check_channel_agrees,
    in_progress,
    reaction_answered,
    spawn_bot,
    story_parts,
    with_button,
)
from tests.conftest import free_port
from tests.fakediscord.harness import FakeDiscord, InteractionHandle
from tests.fakediscord.server import User

GENRES = ["crime", "fantasy", "romance", "general"]


@dataclass
class Evening:
    fake: FakeDiscord
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    handles: list[tuple[str, InteractionHandle]] = field(default_factory=list)
    reactions: list[tuple[dict[str, Any], User]] = field(default_factory=list)
    starts: int = 0
    answers: list[str] = field(default_factory=list)

    async def start(self) -> None:
        identified = self.fake.server.identifies
        self.process = spawn_bot(self.env, self.log)
        self.starts += 1
        self.fake.server.commands = []
        ready = self.output().count("connected to Discord as")
        await self.fake.wait_until(
            lambda: (
                self.alive()
                and self.fake.server.identifies > identified
                and self.fake.server.commands
                and self.output().count("connected to Discord as") > ready
            ),
            timeout=120,
        )

    def alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the bot exited ({self.process.returncode}): {self.output()}")
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: signal.Signals) -> None:
        assert self.process is not None
        await self.answered()  # nobody is left mid-click when the bot goes
        self.process.send_signal(sig)
        code = await asyncio.to_thread(self.process.wait, 60)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), self.output()[-3000:]
        self.fake.server.connected.clear()

    async def answered(self) -> None:
        """Every action so far has a visible answer (within its limits)."""
        for what, handle in self.handles:
            reply = await handle.reply(lambda m: bool(m["content"]), timeout=20)
            assert handle.state["responded"], what
            self.answers.append(f"{what}: {reply['content'][:60]}")
        for message, user in self.reactions:
            await self.fake.wait_until(
                lambda m=message, u=user: reaction_answered(self.fake, m, u.id),
                timeout=20,
            )
        self.handles.clear()
        self.reactions.clear()


def _agrees(fake: FakeDiscord, database: Path) -> bool:
    try:
        check_channel_agrees(fake, database)
    except AssertionError:
        return False
    return True


async def act(evening: Evening, rng: random.Random, people: list[User], n: int) -> None:
    fake = evening.fake
    who = rng.choice(people)
    roll = rng.random()
    parts = story_parts(fake)
    if roll < 0.25 or not parts:
        channel = rng.choice(["general", "stories"])
        handle = await fake.invoke(
            "story",
            user=who,
            channel=channel,
            genre=rng.choice(GENRES),
            prompt=f"Evening story {n} by {who.username}",
            length=rng.choice(["short", "short", "medium"]),
        )
        evening.handles.append(("story", handle))
    elif roll < 0.55:
        # ➕ on the newest part of a story, or on an older one; sometimes two at once.
        target = parts[-1] if rng.random() < 0.6 else rng.choice(parts)
        together = {who.id: who}
        if rng.random() < 0.2:
            other = rng.choice(people)
            together.setdefault(other.id, other)
        for person in together.values():
            await fake.react(target, "➕", user=person)
            evening.reactions.append((target, person))
    elif roll < 0.65:
        message, custom_id = rng.choice(with_button(fake, "story:continue:") or [(None, "")])
        if message is not None:
            evening.handles.append(("continue", await fake.click(message, custom_id, user=who)))
    elif roll < 0.75:
        message, custom_id = rng.choice(with_button(fake, "story:reroll:") or [(None, "")])
        if message is not None:
            evening.handles.append(("reroll", await fake.click(message, custom_id, user=who)))
    elif roll < 0.85:
        waiting = with_button(fake, "story:cancel:")
        if waiting:
            message, custom_id = rng.choice(waiting)
            evening.handles.append(("cancel", await fake.click(message, custom_id, user=who)))
    elif roll < 0.92:
        stuck = with_button(fake, "story:retry:")
        if stuck:
            message, custom_id = rng.choice(stuck)
            evening.handles.append(("retry", await fake.click(message, custom_id, user=who)))
    else:
        evening.handles.append(("mystories", await fake.invoke("mystories", user=who)))
    if n % 6 == 5:
        # Let the evening breathe now and then: people read what was written.
        await evening.answered()
        await fake.wait_until(lambda: not in_progress(fake), timeout=60)


@pytest.mark.slow
async def test_an_evening_with_a_restart_and_a_crash(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_"))}
    env.update(
        FAKE_DISCORD_URL=fake.server.url,
        DISCORD_TOKEN="fake-token",
        DISCORD_DEV_GUILD_ID=fake.server.guild_id,
        MODEL_DIR=str(tiny_model_dir),
        BACKEND="transformers",
        GENERATION_THREADS="1",
        DATABASE_PATH=str(tmp_path / "evening.sqlite3"),
        HTTP_PORT=str(free_port()),
        USER_COOLDOWN_S="0.3",
        USER_MAX_ACTIVE="2",
        MAX_BATCH_SIZE="4",
        QUEUE_SIZE="6",
        SHUTDOWN_GRACE_S="2",
        LOG_LEVEL="INFO",
    )
    database = Path(env["DATABASE_PATH"])
    evening = Evening(fake, env, tmp_path / "bot.log")
    people = [fake.alice, fake.bob, fake.carol, fake.server.add_user("dave")]
    people.append(fake.server.add_user("erin"))
    rng = random.Random(20261204)
    await evening.start()
    n = 0
    for ending in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
        for _ in range(45):
            await act(evening, rng, people, n)
            n += 1
        await evening.stop(ending)
        await evening.start()
    # The last start brings every message the stops left behind up to date.
    await fake.wait_until(lambda: _agrees(fake, database), timeout=30)
    await evening.stop(signal.SIGTERM)
    assert evening.starts == 4
    output = evening.output()
    assert "Traceback" not in output, output[-5000:]
    # an evening, not a quiet minute
    assert len(story_parts(fake)) >= 20, "\n".join(evening.answers)
    for message in bot_messages(fake):
        assert not any(word in message["content"] for word in PROGRESS), message["content"]
    check_channel_agrees(fake, database)
