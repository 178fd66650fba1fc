"""What the bot tests share: reading the fake channel, and checking that the
channel and the database tell the same story."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fakediscord.harness import FakeDiscord

if TYPE_CHECKING:
    from tests.bot.conftest import BotEnv

PROMPT = "The detective reached the crime scene"
PROGRESS = ("queued, position", "writing…")


def is_story(message: dict[str, Any]) -> bool:
    return "part " in message["content"] and "seed" in message["content"]


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


def button(message: dict[str, Any], label: str) -> str:
    for row in message.get("components", []):
        for component in row["components"]:
            if component.get("label") == label or component.get("placeholder") == label:
                return str(component["custom_id"])
    raise AssertionError(f"no component {label!r} in {message.get('components')}")


async def start_story(env: BotEnv, user: Any = None, **options: Any) -> dict[str, Any]:
    fake = env.fake
    options = {"genre": "crime", "prompt": PROMPT, "length": "short", **options}
    handle = await fake.invoke("story", user=user or fake.alice, **options)
    await handle.deferred()
    return await fake.wait_for_message(
        lambda m: is_story(m) and m["content"].startswith(f"**{options['prompt'][:20]}")
    )


def story_messages(env: BotEnv, channel: str = "general") -> list[dict[str, Any]]:
    return [m for m in env.fake.messages(channel) if is_story(m)]


def bot_messages(fake: FakeDiscord, *, deleted: bool = False) -> list[dict[str, Any]]:
    """Every channel message the bot posted (not private answers)."""
    return [
        m
        for m in fake.server.messages.values()
        if m["author"]["id"] == fake.server.bot_user.id
        and not (m.get("flags") or 0) & 64
        and "interaction_token" not in m
        and (deleted or not m.get("deleted"))
    ]


def story_parts(fake: FakeDiscord) -> list[dict[str, Any]]:
    return [m for m in bot_messages(fake) if is_story(m)]


def with_button(fake: FakeDiscord, prefix: str) -> list[tuple[dict[str, Any], str]]:
    """(message, custom_id) for every live bot message with a button `prefix…`."""
    return [
        (m, custom_id)
        for m in bot_messages(fake)
        for custom_id in buttons(m)
        if custom_id.startswith(prefix)
    ]


def in_progress(fake: FakeDiscord) -> bool:
    return any(word in m["content"] for m in bot_messages(fake) for word in PROGRESS)


def reaction_answered(fake: FakeDiscord, message: dict[str, Any], user_id: str) -> bool:
    """A ➕ was answered when it was refused visibly (the reaction removed), the
    message has a continuation replying to it (its own, or the one it joined),
    or the story it was on is gone (deleted, or its channel)."""
    if (user_id, "➕") in message.get("reactions_removed", []):
        return True
    if message.get("deleted") or "This story was deleted" in message["content"]:
        return True
    return any(
        (m.get("message_reference") or {}).get("message_id") == message["id"]
        and not m["content"].startswith("-# <@")
        for m in bot_messages(fake, deleted=True)
    )


def part_of(message: dict[str, Any]) -> int | None:
    ids = re.findall(r"story:continue:(\d+)", str(message.get("components")))
    return int(ids[0]) if ids else None


def check_channel_agrees(fake: FakeDiscord, db_path: Path) -> None:
    """After everything has settled: every run ended; every message the database
    links shows what the database says (its part with that part's buttons, a
    vote's option without buttons, a ballot its vote's state, or its run's end
    with Retry where it can be retried); no bot message still says
    "queued" or "writing…"; every part asked for in Discord, and not replaced by
    a reroll, is shown by exactly one message (its first chunk)."""
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        unfinished = conn.execute(
            "SELECT id, state FROM runs WHERE state IN ('queued', 'generating')"
        ).fetchall()
        assert not unfinished, [dict(r) for r in unfinished]
        rows = conn.execute(
            "SELECT m.*, r.state AS run_state, r.part_id AS run_part FROM messages m"
            " LEFT JOIN runs r ON r.id = m.run_id"
        ).fetchall()
        parts = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM parts").fetchall()}
        replaced = {
            r["replaces_id"]
            for r in conn.execute(
                "SELECT replaces_id FROM runs WHERE kind = 'reroll' AND state = 'done'"
            )
        }
        votes = {r["id"]: r["state"] for r in conn.execute("SELECT id, state FROM votes")}
        option_of = {  # a vote's option (part) -> its vote's state
            r["part_id"]: r["state"]
            for r in conn.execute(
                "SELECT r.part_id, v.state FROM runs r JOIN vote_candidates c ON c.run_id = r.id"
                " JOIN votes v ON v.id = c.vote_id WHERE r.part_id IS NOT NULL"
            )
        }
        asked = {
            r["part_id"]
            for r in conn.execute(
                "SELECT r.part_id FROM runs r JOIN stories s ON s.id = r.story_id"
                " WHERE r.part_id IS NOT NULL AND s.source = 'discord' AND r.requested_by"
                " IS NOT NULL"
            )
        }
    live = {m["id"]: m for m in bot_messages(fake)}
    first_chunks: dict[int, list[str]] = {}
    for row in rows:
        message = live.get(str(row["message_id"]))
        assert message is not None, f"message {row['message_id']} is linked but gone"
        if row["vote_id"] is not None:  # a ballot: the vote's state, no picks once over
            state = votes[row["vote_id"]]
            assert row["shows"] == f"vote:{row['vote_id']}:{state}", dict(row)
            assert state in ("open", "closed", "failed"), dict(row)
            if state != "open":
                assert not buttons(message), message
            continue
        if row["part_id"] is not None and parts[row["part_id"]]["candidate"]:
            # A vote's option it did not choose (or not yet): shown, never continued.
            part = parts[row["part_id"]]
            wants = f"candidate:{part['id']}:{row['chunk']}:{option_of[part['id']]}"
            assert row["shows"] == wants, dict(row)
            assert not buttons(message), message
            if row["chunk"] == 0:
                first_chunks.setdefault(part["id"], []).append(message["id"])
        elif row["part_id"] is not None:
            part = parts[row["part_id"]]
            assert row["shows"] == f"part:{part['id']}:{row['chunk']}", dict(row)
            if row["chunk"] == 0:
                first_chunks.setdefault(part["id"], []).append(message["id"])
            body = message["content"]
            assert not any(word in body for word in PROGRESS), body
            if f"seed {part['seed']}" in body:  # the last chunk carries the buttons
                assert buttons(message) == [
                    f"story:continue:{part['id']}",
                    f"story:vote:{part['id']}",
                    f"story:reroll:{part['id']}",
                    f"story:notes:{part['id']}",
                    f"story:report:{part['id']}",
                    f"story:share:{part['id']}",
                ], message
        else:
            assert row["run_id"] is not None, f"a message shows nothing: {dict(row)}"
            state = row["run_state"]
            assert row["shows"] == f"run:{row['run_id']}:{state}", dict(row)
            if state in ("interrupted", "failed"):
                assert buttons(message) == [f"story:retry:{row['run_id']}"], message
            else:
                assert state == "cancelled" and not buttons(message), message
    linked = {str(row["message_id"]) for row in rows}
    for message in live.values():
        if message["id"] not in linked:  # notices, and messages whose story was deleted
            assert not any(word in message["content"] for word in PROGRESS), message
            assert not buttons(message), message
    for part_id, shown_in in first_chunks.items():
        assert len(shown_in) == 1, f"part {part_id} is shown {len(shown_in)} times"
    missing = asked - replaced - set(first_chunks)
    assert not missing, f"parts never shown: {sorted(missing)}"


def spawn_bot(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The real bot in a process of its own (tests.fakediscord.launch), its
    output appended to `log` (a restart adds to the same file)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fakediscord.launch"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
