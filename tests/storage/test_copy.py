"""python -m storage.copy: a SQLite database, copied into PostgreSQL, reads the
same through the store; the copy checks itself and refuses what it cannot do."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage.copy import CopyFailed, copy
from storage.guilds import GuildStore
from storage.models import GeneratedPart
from storage.shares import ShareStore
from storage.store import Store
from storage.votes import VoteStore
from tests.conftest import REPO


async def _fill(path: Path) -> dict[str, int]:
    """A database with a bit of everything; the ids worth looking at."""
    async with await Store.open(path, instance="old-host-1") as store:
        story, root, run = await store.create_story(
            prompt="The detective 😀 reached", genre="crime", author_id=7, guild_id=4, channel_id=5
        )
        first = await store.finish_run(run.id, GeneratedPart(" It rained.", params={"top_k": 5}))
        await store.add_part(story.id, root.id, GeneratedPart(" A sibling.", requested_by=8))
        options = [
            await store.create_run(story.id, first.id, "continue", requested_by=7) for _ in range(2)
        ]
        vote = await VoteStore(store).create(story.id, first.id, [r.id for r in options])
        option = await store.finish_run(options[0].id, GeneratedPart(" Option one."))
        await VoteStore(store).open(vote.id, closes_at=123.5)
        await VoteStore(store).cast(vote.id, 9, 1)
        await store.add_message(1001, 5, story_id=story.id, part_id=first.id, shows="stale")
        await store.add_message(1002, 5, story_id=story.id, run_id=options[1].id, shows="x")
        await store.add_message(1003, 5, story_id=None, vote_id=vote.id, shows="y")
        await ShareStore(store).share(story.id, 7, lambda: "t" * 24)
        await ShareStore(store).remember_name(7, "Alice")
        guilds = GuildStore(store)
        await guilds.update(4, genres=("crime",), cooldown_s=2.5, sharing=False)
        await guilds.add_count(4, "refused", 3)
        await guilds.report(option.id, 9, admin=True, members_hide=3, admins_hide=1)
        for index in range(40):  # enough rows for several batches of a small size
            await store.create_story(prompt=f"story {index}", genre="romance", author_id=8)
        await store.set_notes(story.id, "Mara is a detective.", "Keep it grim.")
        newest, _, _ = await store.create_story(prompt="deleted", genre="crime", author_id=8)
        await store.delete_story(newest.id)  # its ids are not given again, copied or not
    with sqlite3.connect(path) as conn:  # written before NUL was refused
        conn.execute("UPDATE parts SET text = ? WHERE id = ?", ("NUL\x00here", first.id))
    return {"story": story.id, "first": first.id, "option": option.id, "vote": vote.id}


async def test_a_copy_reads_the_same_and_goes_on_where_sqlite_stopped(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.copy.BATCH_ROWS", 7)
    path = tmp_path / "old.sqlite3"
    ids = await _fill(path)
    report = await copy(path, postgres_url, progress=False, seed=1)
    assert report.counts["parts"] == (44, 44) and report.counts["messages"] == (3, 3)
    assert all(a == b for a, b in report.counts.values())
    assert report.texts_checked > 44 * 3 and report.nul_replaced == 1
    async with await Store.open(path) as lite, await Store.open(postgres_url) as pg:
        for store in (lite, pg):
            assert (await store.list_stories(8, limit=100)).total == 40
        story = ids["story"]
        assert await pg.get_story(story) == await lite.get_story(story)
        parts_pg = await pg.story_parts(story)
        parts_lite = await lite.story_parts(story)
        assert [p.text for p in parts_pg] == [p.text.replace("\x00", "\ufffd") for p in parts_lite]
        assert [p.params for p in parts_pg] == [p.params for p in parts_lite]
        for message in (1001, 1002, 1003):
            assert await pg.get_message(message) == await lite.get_message(message)
        assert await VoteStore(pg).get(ids["vote"]) == await VoteStore(lite).get(ids["vote"])
        assert await GuildStore(pg).settings(4) == await GuildStore(lite).settings(4)
        assert (await GuildStore(pg).counts(4)).refused == 3
        assert (await pg.get_part(ids["option"])).hidden
        assert await ShareStore(pg).names([7]) == {7: "Alice"}
        # Unfinished runs (the second option, the 40 stories' first parts) have no
        # owner now: the first process to start takes them.
        assert len(await pg.interrupt_unfinished("moved")) == 41
        # New rows get new ids, after the highest SQLite ever gave (42, deleted).
        new, root, run = await pg.create_story(prompt="after", genre="crime", author_id=1)
        assert new.id == 43 and root.id == 46 and run.id == 46
        await pg.finish_run(run.id, GeneratedPart(" fine."))


async def test_the_copy_refuses_a_database_that_is_not_empty(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "s.sqlite3"
    async with await Store.open(path) as store:
        await store.create_story(prompt="p", genre="crime", author_id=1)
    await copy(path, postgres_url, progress=False)
    with pytest.raises(CopyFailed, match="not empty"):
        await copy(path, postgres_url, progress=False)
    async with await Store.open(postgres_url) as pg:
        assert (await pg.list_stories(1)).total == 1  # the second copy added nothing


async def test_the_copy_refuses_an_older_sqlite_file(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(CopyFailed, match="start this storybot on it once"):
        await copy(path, postgres_url, progress=False)


def test_the_command_explains_itself() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "storage.copy", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0 and "postgres_url" in done.stdout and "empty" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "storage.copy", "a.sqlite3", "mysql://nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert refused.returncode == 2 and "postgresql://" in refused.stderr
