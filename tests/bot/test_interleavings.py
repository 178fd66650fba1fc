"""Random interleavings of everything people (and the operator) do to a few
stories, in-process through the real discord.py client and the fake Discord.

Each seed plays one sequence: /story, ➕ on any story message, Continue,
Reroll, Cancel and Retry buttons, a vote and its ballots (votes last a second
here, so they open and close within a sequence), deleting a story from
/mystories, /forgetme, a continue over HTTP, the generator held and released
(so runs sit queued or half-written when the next action comes), a clean
restart and a crash, with three members. After each sequence: every action
got a visible answer, no HTTP answer was a 500, every run in the database
ended (or was marked interrupted, with Retry in its message), every message
shows what the database links it to (a ballot its vote, an option its
vote's state), and no task, stream or publisher update is left waiting.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.bot.conftest import BotEnv
from tests.bot.helpers import (
    button,
    buttons,
    check_channel_agrees,
    reaction_answered,
    story_parts,
    with_button,
)
from tests.fakediscord.harness import InteractionHandle
from tests.fakediscord.server import User

SEEDS = range(8)
STEPS = 40


@dataclass
class Sequence:
    env: BotEnv
    rng: random.Random
    people: list[User]
    handles: list[tuple[str, InteractionHandle]] = field(default_factory=list)
    reactions: list[tuple[dict[str, Any], User]] = field(default_factory=list)
    http: list[asyncio.Task[tuple[int, bytes]]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    @property
    def fake(self) -> Any:
        return self.env.fake

    def who(self) -> User:
        return self.rng.choice(self.people)

    async def answered(self) -> None:
        """Let the generator run and wait for every answer owed so far."""
        self.env.backend.release()
        for what, handle in self.handles:
            await handle.reply(lambda m: bool(m["content"]), timeout=20)
            assert handle.state["responded"], what
        for message, user in self.reactions:
            try:
                await self.fake.wait_until(
                    lambda m=message, u=user: reaction_answered(self.fake, m, u.id), timeout=20
                )
            except TimeoutError:
                raise AssertionError(f"{user.username}'s ➕ on {message} got no answer") from None
        for status, body in await asyncio.gather(*self.http):
            assert status in (200, 404, 409, 503), (status, body, self.done)
        self.handles.clear()
        self.reactions.clear()
        self.http.clear()


async def start(seq: Sequence) -> None:
    handle = await seq.fake.invoke(
        "story",
        user=seq.who(),
        genre=seq.rng.choice(["crime", "fantasy", "general"]),
        prompt=f"Tale {len(seq.done)} @everyone **bold**",
        length="short",
    )
    seq.handles.append(("story", handle))


async def react(seq: Sequence) -> None:
    parts = story_parts(seq.fake)
    if not parts:
        return await start(seq)
    target = seq.rng.choice(parts)
    people = seq.rng.sample(seq.people, seq.rng.choice([1, 1, 2]))  # sometimes two at once
    for person in people:
        await seq.fake.react(target, "➕", user=person)
        seq.reactions.append((target, person))


def clicker(prefix: str) -> Callable[[Sequence], Awaitable[None]]:
    async def click(seq: Sequence) -> None:
        found = with_button(seq.fake, f"story:{prefix}:")
        if not found:
            return
        message, custom_id = seq.rng.choice(found)
        seq.handles.append((prefix, await seq.fake.click(message, custom_id, user=seq.who())))

    click.__name__ = prefix
    return click


async def delete(seq: Sequence) -> None:
    """/mystories → open a story → Delete → Delete it; any step may be refused
    (someone else deleted it meanwhile), and then says so."""
    who, fake = seq.who(), seq.fake
    listing = await (await fake.invoke("mystories", user=who)).reply(
        lambda m: "stories" in m["content"], timeout=20
    )
    picker = [
        component
        for row in listing.get("components", [])
        for component in row["components"]
        if component.get("placeholder") == "Open a story" and not component.get("disabled")
    ]
    if not picker:
        return
    story_id = seq.rng.choice(picker[0]["options"])["value"]
    steps = [
        (lambda: fake.select(listing, picker[0]["custom_id"], [story_id], user=who), "Delete"),
        (lambda: fake.click(listing, button(listing, "Delete"), user=who), "Delete it"),
        (lambda: fake.click(listing, button(listing, "Delete it"), user=who), "Deleted story"),
    ]
    for step, next_label in steps:
        handle = await step()

        def moved_on(h: InteractionHandle = handle, label: str = next_label) -> bool:
            refused = h.original is not None and h.original["id"] != listing["id"]
            return refused or label in str(listing.get("components")) + listing["content"]

        await fake.wait_until(moved_on, timeout=20)
        if handle.original is not None and handle.original["id"] != listing["id"]:
            return  # refused, with an answer of its own


async def forget(seq: Sequence) -> None:
    who = seq.who()
    ask = await (await seq.fake.invoke("forgetme", user=who)).reply(
        lambda m: "cannot be undone" in m["content"], timeout=20
    )
    confirm = await seq.fake.click(ask, button(ask, "Delete everything"), user=who)
    await confirm.deferred()
    await seq.fake.wait_until(lambda: "Done: deleted" in ask["content"], timeout=20)


async def http_continue(seq: Sequence) -> None:
    parts = story_parts(seq.fake)
    ids = sorted({int(c.split(":")[2]) for m in parts for c in buttons(m) if "continue" in c})
    if not ids:
        return
    with sqlite3.connect(seq.env.db_path) as conn:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT DISTINCT story_id FROM parts WHERE id IN ({marks})", ids)
        story_ids = sorted(row[0] for row in rows)
    if not story_ids:
        return
    story_id = seq.rng.choice(story_ids)
    client = await seq.env.http()

    async def post() -> tuple[int, bytes]:
        response = await client.post(f"/stories/{story_id}/continue", json={"max_new_tokens": 12})
        return response.status, await response.read()

    seq.http.append(asyncio.create_task(post()))
    await asyncio.sleep(0)  # let the request start before the next action


async def hold(seq: Sequence) -> None:
    seq.env.backend.hold()


async def release(seq: Sequence) -> None:
    seq.env.backend.release()


async def restart(seq: Sequence) -> None:
    await seq.answered()  # nobody is left mid-click when the bot goes
    await seq.env.restart()


async def crash(seq: Sequence) -> None:
    await seq.answered()
    await seq.env.crash()
    await seq.env.start()


ACTIONS: list[tuple[float, Callable[[Sequence], Awaitable[None]]]] = [
    (4, start),
    (5, react),
    (2, clicker("continue")),
    (2, clicker("reroll")),
    (2, clicker("cancel")),
    (1, clicker("retry")),
    (1, delete),
    (0.5, forget),
    (1.5, http_continue),
    (2, clicker("vote")),
    (2, clicker("pick1")),
    (2, clicker("pick2")),
    (2, hold),
    (1.5, release),
    (0.7, restart),
    (0.7, crash),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.bot_options(user_cooldown_s=0, user_max_active=4, notice_lasts_s=0.05)
async def test_random_interleavings_leave_nothing_hanging(env: BotEnv, seed: int) -> None:
    fake = env.fake
    rng = random.Random(seed)
    seq = Sequence(env, rng, [fake.alice, fake.bob, fake.carol])
    weights = [w for w, _ in ACTIONS]
    assert env.service is not None
    guild = int(fake.server.guild_id)
    await env.service.servers.guilds.update(guild, vote_seconds=1)  # shorter than admins may
    await env.service.servers.forget_cached(guild)
    await start(seq)
    for _ in range(STEPS):
        (action,) = rng.choices([a for _, a in ACTIONS], weights)
        seq.done.append(action.__name__)
        await action(seq)
    await seq.answered()
    assert env.service is not None and env.bot is not None and env.pool is not None
    service, publisher, pool = env.service, env.bot.publisher, env.pool
    await fake.wait_until(lambda: service.in_flight == 0 and not publisher._tasks, timeout=20)
    assert not service._runs, seq.done  # every run the service held has ended
    assert pool.queue_depth == 0 and pool.running == 0, seq.done
    await env.stop()
    try:
        check_channel_agrees(fake, env.db_path)
    except AssertionError as error:
        for m in fake.server.messages.values():
            print(m["id"], m.get("deleted"), repr(m["content"][:150]), buttons(m))
        raise AssertionError(f"after {seq.done}: {error}") from None
