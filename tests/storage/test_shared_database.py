"""What changes when several processes share one database: migrations under a
lock, claims on parts, runs owned by an instance. Two `Store`s opened on one
database stand for two processes (each has its own connections)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from storage.db import PG_SCHEMA_DIR, SCHEMA_DIR, migrations
from storage.errors import Claimed, SchemaTooNew
from storage.models import GeneratedPart
from storage.store import Store
from storage.votes import VoteStore


async def test_two_processes_starting_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(postgres_url) for _ in range(4)))
    try:
        latest = migrations(PG_SCHEMA_DIR, baseline=True)[-1][0]
        assert [await store.schema_version() for store in stores] == [latest] * 4
        conn = await asyncpg.connect(postgres_url)
        try:
            applied = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        finally:
            await conn.close()
        expected = [(n, p.name) for n, p in migrations(PG_SCHEMA_DIR, baseline=True)]
        assert [(row["version"], row["name"]) for row in applied] == expected  # once each
        for index, store in enumerate(stores):  # and every one of them works
            await store.create_story(prompt=f"s{index}", genre="crime", author_id=1)
        assert (await stores[0].list_stories(1)).total == 4
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_postgresql_database_is_refused(postgres_url: str) -> None:
    async with await Store.open(postgres_url):
        pass
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (999, '0999_future.sql', 0)"
        )
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="newer"):
        await Store.open(postgres_url)


async def test_both_schemas_have_the_same_tables_and_columns(
    tmp_path: Path, postgres_url: str
) -> None:
    """Each schema change is made in both folders (storage.copy relies on it)."""
    assert migrations(SCHEMA_DIR)[-1][0] == migrations(PG_SCHEMA_DIR, baseline=True)[-1][0]
    async with await Store.open(tmp_path / "s.sqlite3"):
        pass
    async with await Store.open(postgres_url):
        pass
    with sqlite3.connect(tmp_path / "s.sqlite3") as lite:
        tables = [
            row[0]
            for row in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%'"  # SQLite's own (AUTOINCREMENT's counters)
            )
        ]
        in_sqlite = {
            table: [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name <> 'schema_migrations'"
            " ORDER BY table_name, ordinal_position"
        )
    finally:
        await conn.close()
    in_postgres: dict[str, list[str]] = {}
    for row in rows:
        in_postgres.setdefault(row["table_name"], []).append(row["column_name"])
    assert in_postgres == in_sqlite


async def test_two_processes_continuing_one_part_make_one_run(database: str) -> None:
    async with (
        await Store.open(database, instance="a") as a,
        await Store.open(database, instance="b") as b,
    ):
        story, root, run = await a.create_story(prompt="p", genre="crime", author_id=1)
        first = await a.finish_run(run.id, GeneratedPart(" one."))
        for _ in range(5):  # a race: both must never win, whichever is quicker
            outcomes = await asyncio.gather(
                *(
                    store.create_run(story.id, first.id, "continue", requested_by=2, claim=True)
                    for store in (a, b, a, b)
                ),
                return_exceptions=True,
            )
            won = [o for o in outcomes if not isinstance(o, BaseException)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(won) == 1, outcomes
            assert all(isinstance(o, Claimed) and o.by == "continue" for o in lost), lost
            assert {o.run_id for o in lost if isinstance(o, Claimed)} == {won[0].id}
            await a.set_run_state(won[0].id, "cancelled")  # finished: the part is free again
        # A run that does not claim (a vote's second option) is not refused...
        held = await a.create_run(story.id, first.id, "continue", requested_by=2, claim=True)
        await b.create_run(story.id, first.id, "continue", requested_by=2)
        # ...and a reroll of a part being continued is.
        with pytest.raises(Claimed) as refused:
            await b.create_run(
                story.id, root.id, "reroll", requested_by=3, replaces_id=first.id, claim=True
            )
        assert refused.value.run_id == held.id


async def test_a_reroll_and_a_vote_hold_their_part_too(database: str) -> None:
    async with (
        await Store.open(database, instance="a") as a,
        await Store.open(database, instance="b") as b,
    ):
        story, root, run = await a.create_story(prompt="p", genre="crime", author_id=1)
        first = await a.finish_run(run.id, GeneratedPart(" one."))
        reroll = await a.create_run(
            story.id, root.id, "reroll", requested_by=1, replaces_id=first.id, claim=True
        )
        with pytest.raises(Claimed) as refused:
            await b.create_run(story.id, first.id, "continue", requested_by=2, claim=True)
        assert (refused.value.by, refused.value.run_id) == ("reroll", reroll.id)
        await a.finish_run(reroll.id, GeneratedPart(" uno."))
        # A vote on what follows `first`: held while it is written and while open.
        options = [
            await a.create_run(story.id, first.id, "continue", requested_by=1, claim=index == 0)
            for index in range(2)
        ]
        vote = await VoteStore(a).create(story.id, first.id, [r.id for r in options])
        with pytest.raises(Claimed, match="vote"):
            await b.create_run(story.id, first.id, "continue", requested_by=2, claim=True)
        for option in options:
            await a.finish_run(option.id, GeneratedPart(" option."))
        await VoteStore(a).open(vote.id, closes_at=0)
        with pytest.raises(Claimed) as refused:  # every option written; still open
            await b.create_run(story.id, first.id, "continue", requested_by=2, claim=True)
        assert (refused.value.by, refused.value.vote_id) == ("vote", vote.id)
        await VoteStore(b).close(vote.id, winner=1)
        await b.create_run(story.id, first.id, "continue", requested_by=2, claim=True)


async def test_each_process_recovers_only_its_own_runs_on_postgresql(postgres_url: str) -> None:
    async with (
        await Store.open(postgres_url, instance="a") as a,
        await Store.open(postgres_url, instance="b") as b,
    ):
        _, _, mine = await a.create_story(prompt="a's", genre="crime", author_id=1)
        _, _, theirs = await b.create_story(prompt="b's", genre="crime", author_id=1)
        await b.set_run_state(theirs.id, "generating")
        assert (await a.get_run(mine.id)).state == "queued"
        interrupted = await a.interrupt_unfinished("restart")  # a restarted; b still writes
        assert [r.id for r in interrupted] == [mine.id]
        assert (await a.get_run(theirs.id)).state == "generating"
        assert [r.id for r in await b.interrupt_unfinished("restart")] == [theirs.id]


async def test_one_sqlite_process_recovers_every_run_as_before(tmp_path: Path) -> None:
    path = tmp_path / "one.sqlite3"
    async with await Store.open(path, instance="old") as old:
        _, _, run = await old.create_story(prompt="p", genre="crime", author_id=1)
    async with await Store.open(path, instance="new") as new:
        assert [r.id for r in await new.interrupt_unfinished("restart")] == [run.id]


async def test_runs_nobody_owns_are_recovered_once(postgres_url: str) -> None:
    """Runs copied from SQLite have no owner: the first process to start takes them."""
    async with await Store.open(postgres_url, instance="a") as a:
        _, _, run = await a.create_story(prompt="p", genre="crime", author_id=1)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("UPDATE runs SET owner = NULL")
    finally:
        await conn.close()
    stores = [await Store.open(postgres_url, instance=name) for name in "xyz"]
    try:
        found = await asyncio.gather(*(s.interrupt_unfinished("restart") for s in stores))
        assert sorted(r.id for runs in found for r in runs) == [run.id]
    finally:
        for store in stores:
            await store.close()


async def test_another_process_leaves_my_votes_and_messages_alone(postgres_url: str) -> None:
    async with (
        await Store.open(postgres_url, instance="a") as a,
        await Store.open(postgres_url, instance="b") as b,
    ):
        story, root, run = await a.create_story(prompt="p", genre="crime", author_id=1)
        await a.set_run_state(run.id, "generating")
        # a's message says queued while the run is generating: stale, for a to fix.
        await a.add_message(7, 1, story_id=story.id, run_id=run.id, shows=f"run:{run.id}:queued")
        options = [
            await a.create_run(story.id, root.id, "continue", requested_by=1) for _ in range(2)
        ]
        vote = await VoteStore(a).create(story.id, root.id, [r.id for r in options])
        # b starts: a's vote and a's message are a's to finish.
        assert [v.id for v in await VoteStore(a).unfinished()] == [vote.id]
        assert await VoteStore(b).unfinished() == []
        assert [m.message_id for m in await a.stale_messages()] == [7]
        assert await b.stale_messages() == []
        await a.set_run_state(run.id, "failed", "gone")  # finished: anyone may fix it now
        assert [m.message_id for m in await b.stale_messages()] == [7]


async def test_one_sqlite_process_sees_every_vote_and_message(tmp_path: Path) -> None:
    path = tmp_path / "one.sqlite3"
    async with await Store.open(path, instance="old") as old:
        story, root, run = await old.create_story(prompt="p", genre="crime", author_id=1)
        await old.add_message(7, 1, story_id=story.id, run_id=run.id, shows="run:x")
        options = [
            await old.create_run(story.id, root.id, "continue", requested_by=1) for _ in range(2)
        ]
        vote = await VoteStore(old).create(story.id, root.id, [r.id for r in options])
    async with await Store.open(path, instance="new") as new:
        assert [v.id for v in await VoteStore(new).unfinished()] == [vote.id]
        assert [m.message_id for m in await new.stale_messages()] == [7]
