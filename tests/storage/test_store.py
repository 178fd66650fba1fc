"""The story store on real SQLite files in a temporary folder, and (the tests
taking `store` or `database`) on a real PostgreSQL server too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage.db import SCHEMA_DIR
from storage.errors import (
    InvalidData,
    NotFound,
    SchemaTooNew,
    StorageError,
    StorageUnavailable,
)
from storage.models import GeneratedPart
from storage.store import Store, migrations
from storage.votes import VoteStore
from tests.conftest import REPO

WEIRD = [
    "😀🎉 emoji, עברית right-to-left, zero\u200bwidth\u200d",
    "'; DROP TABLE stories; --",
    "x" * 100_000,
    "\u202etext reversed",
]


async def text_to(store: Store, part_id: int) -> str:
    return "".join(part.text for part in await store.path_to(part_id))


async def test_create_story_and_read_its_path(store: Store) -> None:
    story, root, run = await store.create_story(
        prompt="The detective reached the crime scene and looked around",
        genre="crime",
        author_id=11,
        guild_id=1,
        channel_id=2,
        seed=7,
    )
    assert story.status == "queued" and story.title.startswith("The detective reached")
    assert root.kind == "prompt" and root.parent_id is None
    assert (run.kind, run.state, run.parent_id, run.seed) == ("start", "queued", root.id, 7)
    first = await store.finish_run(
        run.id,
        GeneratedPart(" It was late.", requested_by=11, seed=7, params={"top_k": 50}, new_tokens=4),
    )
    assert (await store.get_run(run.id)).part_id == first.id
    second = await store.add_part(story.id, first.id, GeneratedPart(" Rain fell.", requested_by=12))
    sibling = await store.add_part(story.id, root.id, GeneratedPart(" It was early."))
    path = await store.path_to(second.id)
    assert [p.id for p in path] == [root.id, first.id, second.id]
    assert await text_to(store, second.id) == root.text + " It was late. Rain fell."
    assert await text_to(store, sibling.id) == root.text + " It was early."
    assert (await store.get_story(story.id)).status == "done"
    assert first.params == {"top_k": 50} and first.seed == 7
    assert await store.has_children(root.id) and not await store.has_children(second.id)
    assert (await store.latest_part(story.id)).id == sibling.id


@pytest.mark.parametrize("text", WEIRD)
async def test_any_text_is_stored_verbatim(store: Store, text: str) -> None:
    story, root, _ = await store.create_story(prompt=text, genre="crime", author_id=1)
    part = await store.add_part(story.id, root.id, GeneratedPart(text))
    assert (await store.get_part(part.id)).text == text
    assert await text_to(store, part.id) == text + text
    assert await store.integrity_check() == "ok"


async def test_a_nul_character_is_refused_on_both_databases(store: Store) -> None:
    # PostgreSQL cannot store one, so SQLite refuses it too: every SQLite
    # database can move to PostgreSQL (generated text never holds one).
    with pytest.raises(InvalidData, match="NUL"):
        await store.create_story(prompt="NUL\x00inside", genre="crime", author_id=1)
    _, _, run = await store.create_story(prompt="p", genre="crime", author_id=1)
    with pytest.raises(InvalidData, match="NUL"):
        await store.finish_run(run.id, GeneratedPart("a\x00b"))
    assert (await store.list_stories(1)).total == 1


async def test_refused_input_leaves_no_partial_write(store: Store) -> None:
    story, root, run = await store.create_story(prompt="one", genre="crime", author_id=1)
    other, _, _ = await store.create_story(prompt="two", genre="crime", author_id=1)
    with pytest.raises(InvalidData, match="another story"):
        await store.add_part(other.id, root.id, GeneratedPart("x"))
    with pytest.raises(NotFound):
        await store.add_part(story.id, 99_999, GeneratedPart("x"))
    with pytest.raises(NotFound):
        await store.get_story(12345)
    with pytest.raises(NotFound):
        await store.path_to(12345)
    with pytest.raises(InvalidData):
        await store.set_run_state(run.id, "exploded")  # type: ignore[arg-type]
    with pytest.raises(InvalidData, match="finish_run"):
        await store.set_run_state(run.id, "done")
    with pytest.raises(InvalidData, match="another story"):
        await store.create_run(other.id, root.id, "continue", requested_by=1)
    with pytest.raises(InvalidData):
        await store.create_story(prompt="\ud800 lone surrogate", genre="crime", author_id=1)
    assert len(await store.story_parts(story.id)) == 1
    assert len(await store.story_parts(other.id)) == 1
    assert (await store.list_stories(1)).total == 2


async def test_messages_know_what_they_should_show(store: Store) -> None:
    story, _, run = await store.create_story(prompt="p", genre="crime", author_id=1)
    # A run's message, posted while it is queued: up to date.
    await store.add_message(555, 9, story_id=story.id, run_id=run.id, shows=f"run:{run.id}:queued")
    assert await store.stale_messages() == []
    await store.set_run_state(run.id, "generating")  # it should now say "writing"
    assert [m.wants for m in await store.stale_messages()] == [f"run:{run.id}:generating"]
    part = await store.finish_run(run.id, GeneratedPart(" g"))
    message = await store.get_message(555)
    assert message is not None and message.wants == f"part:{part.id}:0"  # via its run
    await store.show_part_in(part.id, [555])  # the link moves to the part...
    await store.add_message(556, 9, story_id=story.id, part_id=part.id, chunk=1, shows="x")
    assert [m.message_id for m in await store.messages_of_part(part.id)] == [555, 556]
    assert {m.message_id for m in await store.stale_messages()} == {555, 556}
    await store.set_shown(555, f"part:{part.id}:0")  # ...and Discord confirmed the edit
    await store.set_shown(556, f"part:{part.id}:1")
    assert await store.stale_messages() == []
    assert await store.forget_message(555)
    assert await store.get_message(555) is None
    assert not await store.forget_message(555)
    await store.delete_story(story.id)  # what is left shows nothing any more
    gone = await store.get_message(556)
    assert gone is not None and (gone.story_id, gone.part_id, gone.wants) == (None, None, "gone")


async def test_list_stories_pages_and_filters(store: Store) -> None:
    for index in range(23):
        genre = "crime" if index % 2 else "romance"
        story, root, _ = await store.create_story(prompt=f"story {index}", genre=genre, author_id=5)
        await store.add_part(story.id, root.id, GeneratedPart(" more"))
    await store.create_story(prompt="someone else's", genre="crime", author_id=6)
    page = await store.list_stories(5, limit=10)
    assert page.total == 23 and len(page.items) == 10
    assert [s.story.title for s in page.items[:2]] == ["story 22", "story 21"]
    assert all(summary.part_count == 2 for summary in page.items)
    last = await store.list_stories(5, limit=10, offset=20)
    assert [s.story.title for s in last.items] == ["story 2", "story 1", "story 0"]
    crime = await store.list_stories(5, genre="crime", limit=100)
    assert crime.total == 11 and {s.story.genre for s in crime.items} == {"crime"}


async def test_delete_user_removes_their_stories_and_parts(store: Store) -> None:
    mine, my_root, _ = await store.create_story(prompt="mine", genre="crime", author_id=1)
    await store.add_part(mine.id, my_root.id, GeneratedPart(" a", requested_by=2))
    theirs, their_root, _ = await store.create_story(prompt="theirs", genre="crime", author_id=2)
    my_part = await store.add_part(theirs.id, their_root.id, GeneratedPart(" b", requested_by=1))
    kept = await store.add_part(theirs.id, their_root.id, GeneratedPart(" c", requested_by=2))
    await store.add_message(77, 1, story_id=theirs.id, part_id=my_part.id, shows="part")
    my_run = await store.create_run(theirs.id, kept.id, "continue", requested_by=1)
    deleted = await store.delete_user(1)
    assert (deleted.stories, deleted.parts, deleted.messages) == (1, 3, 1)
    with pytest.raises(NotFound):
        await store.get_run(my_run.id)  # their run in someone else's story went too
    message = await store.get_message(77)
    assert message is not None and message.wants == "gone"  # its message is to be cleared
    with pytest.raises(NotFound):
        await store.get_story(mine.id)
    assert [p.id for p in await store.story_parts(theirs.id)] == [their_root.id, kept.id]
    assert (await store.delete_user(1)).stories == 0


async def test_unfinished_runs_are_interrupted_whichever_story_they_are_on(
    store: Store,
) -> None:
    queued, _, queued_run = await store.create_story(prompt="q", genre="crime", author_id=1)
    running, _, running_run = await store.create_story(prompt="r", genre="crime", author_id=1)
    await store.set_run_state(running_run.id, "generating")
    done, _, done_run = await store.create_story(prompt="d", genre="crime", author_id=1)
    first = await store.finish_run(done_run.id, GeneratedPart(" one"))
    # A story whose newest run was cancelled while another one still ran.
    still = await store.create_run(done.id, first.id, "continue", requested_by=2)
    await store.set_run_state(still.id, "generating")
    newer = await store.create_run(done.id, first.id, "continue", requested_by=3)
    await store.set_run_state(newer.id, "cancelled")
    interrupted = await store.interrupt_unfinished("restart")
    assert [r.id for r in interrupted] == [queued_run.id, running_run.id, still.id]
    assert {r.state for r in interrupted} == {"interrupted"}
    assert (await store.get_story(running.id)).status == "interrupted"
    assert (await store.get_story(queued.id)).status == "interrupted"
    assert (await store.get_story(done.id)).status == "done"  # it has its text
    assert (await store.get_run(still.id)).error == "restart"
    assert await store.interrupt_unfinished("restart") == []


async def test_connection_settings(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pragmas.sqlite3")

    async def pragma(name: str) -> object:
        row = await store._one(f"PRAGMA {name}")
        assert row is not None
        return row[0]

    assert await pragma("journal_mode") == "wal"
    assert await pragma("foreign_keys") == 1
    assert await pragma("synchronous") >= 1  # type: ignore[operator]
    assert await pragma("busy_timeout") >= 1000  # type: ignore[operator]
    await store.close()


async def test_folder_is_created_and_old_database_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "stories.sqlite3"
    sqlite3.connect(path.parent.mkdir(parents=True) or path).close()  # an empty v0 file
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(migrations())
        await store.create_story(prompt="p", genre="crime", author_id=1)
    async with await Store.open(path) as store:  # reopening applies nothing twice
        assert (await store.list_stories(1)).total == 1


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNew, match="newer"):
        await Store.open(path)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageUnavailable, match="not a usable SQLite database"):
        await Store.open(path)


async def test_many_concurrent_writers_lose_nothing(store: Store) -> None:
    stories = [
        await store.create_story(prompt=f"s{i}", genre="crime", author_id=i) for i in range(4)
    ]

    async def writer(worker: int) -> list[int]:
        ids = []
        for n in range(25):
            story, root, _ = stories[(worker + n) % len(stories)]
            part = await store.add_part(story.id, root.id, GeneratedPart(f" w{worker}n{n}"))
            ids.append(part.id)
        return ids

    results = await asyncio.gather(*(writer(w) for w in range(8)))
    written = [part_id for ids in results for part_id in ids]
    assert len(written) == len(set(written)) == 200
    stored = []
    for story, _, _ in stories:
        stored += [p.text for p in await store.story_parts(story.id) if p.kind == "generated"]
    assert sorted(stored) == sorted(f" w{w}n{n}" for w in range(8) for n in range(25))


async def test_two_connections_writing_at_once_do_not_lock(database: str) -> None:
    async with await Store.open(database) as first, await Store.open(database) as second:

        async def write(store: Store, tag: str) -> None:
            for n in range(30):
                await store.create_story(prompt=f"{tag}{n}", genre="crime", author_id=1)

        await asyncio.gather(write(first, "a"), write(second, "b"))
        assert (await first.list_stories(1, limit=100)).total == 60


CRASH_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from storage.store import Store
    from storage.models import GeneratedPart

    async def main():
        store = await Store.open(sys.argv[1])
        n = 0
        while True:
            story, root, run = await store.create_story(prompt=f"crash {n} " + "y" * 2000,
                                                        genre="crime", author_id=1)
            await store.finish_run(run.id, GeneratedPart(f" part {n}"))
            print(story.id, flush=True)
            n += 1

    asyncio.run(main())
    """
)


async def test_sigkill_mid_write_loses_no_returned_story(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_WRITER, str(path), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    assert process.stdout is not None
    returned = []
    try:
        while len(returned) < 150:
            line = await process.stdout.readline()
            assert line, "writer died early"
            returned.append(int(line))
    finally:
        process.kill()  # SIGKILL, in the middle of the next write
        await process.wait()
    async with await Store.open(path) as store:
        assert await store.integrity_check() == "ok"
        for story_id in returned:
            story = await store.get_story(story_id)
            parts = await store.story_parts(story_id)
            assert story.status == "done" and [p.kind for p in parts] == ["prompt", "generated"]


async def test_full_disk_is_a_clear_error_and_the_database_stays_valid(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "full.sqlite3")
    story, root, _ = await store.create_story(
        prompt="before the disk filled", genre="crime", author_id=1
    )
    row = await store._one("PRAGMA page_count")
    assert row is not None
    # SQLite's own cap on the file size: exactly what a full disk looks like to it.
    await store._conn.execute(f"PRAGMA max_page_count = {row[0] + 2}")
    with pytest.raises(StorageUnavailable, match="full"):
        for _ in range(50):
            await store.add_part(story.id, root.id, GeneratedPart("z" * 20_000))
    assert await store.integrity_check() == "ok"
    assert (await store.get_part(root.id)).text == "before the disk filled"
    await store._conn.execute("PRAGMA max_page_count = 1073741823")
    await store.add_part(story.id, root.id, GeneratedPart(" written after space came back"))
    await store.close()


async def test_read_only_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    async with await Store.open(path) as store:
        await store.create_story(prompt="kept", genre="crime", author_id=1)
    async with await Store.open(path, read_only=True) as store:
        with pytest.raises(StorageUnavailable, match="read-only"):
            await store.create_story(prompt="refused", genre="crime", author_id=1)
        assert (await store.list_stories(1)).total == 1
        assert await store.integrity_check() == "ok"


@contextlib.contextmanager
def _made_read_only(folder: Path) -> Iterator[Callable[[], None]]:
    """A folder written first, then made read-only by the call it yields: a
    read-only file system where we may mount one (as root, who ignores file
    modes), else the folder's mode."""
    folder.mkdir()
    if os.geteuid() != 0:
        yield lambda: folder.chmod(0o555)
        folder.chmod(0o755)
        return

    def mount(*args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only file system here: {done.stderr.strip()}")

    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder))
    try:
        yield lambda: mount("-o", "remount,ro", str(folder))
    finally:
        subprocess.run(["umount", str(folder)], check=False)


async def test_a_database_on_a_read_only_file_system_says_read_only(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    with _made_read_only(folder) as make_read_only:
        async with await Store.open(folder / "db.sqlite3") as store:
            await store.create_story(prompt="kept", genre="crime", author_id=1)
        make_read_only()
        for name in ("db.sqlite3", "new.sqlite3"):  # the existing one, and a new one
            with pytest.raises(StorageUnavailable) as refused:
                await Store.open(folder / name)
            message = str(refused.value)
            assert "is read-only" in message and "DATABASE_PATH" in message, message
            assert "not a usable" not in message
        assert (folder / "db.sqlite3").stat().st_size > 0  # and nothing was lost


async def test_a_deleted_rows_id_is_never_given_again(store: Store) -> None:
    """Ids live on outside the database (buttons of posted messages, links, runs
    in flight): deleting the newest story must not hand its ids to the next one,
    or an old Continue button would continue somebody else's new story."""
    votes = VoteStore(store)
    kept, _, _ = await store.create_story(prompt="Kept", genre="crime", author_id=1)
    story, root, run = await store.create_story(prompt="Gone", genre="crime", author_id=2)
    part = await store.finish_run(run.id, GeneratedPart(" and then.", requested_by=2))
    second = await store.create_run(story.id, part.id, "continue", requested_by=3)
    vote = await votes.create(story.id, part.id, [second.id])
    await store.delete_story(story.id)  # the newest of everything
    again, new_root, new_run = await store.create_story(prompt="New", genre="crime", author_id=3)
    new_part = await store.finish_run(new_run.id, GeneratedPart(" next.", requested_by=3))
    new_vote = await votes.create(
        again.id,
        new_part.id,
        [(await store.create_run(again.id, new_part.id, "continue", requested_by=3)).id],
    )
    assert again.id > story.id > kept.id
    assert new_root.id > part.id > root.id and new_part.id > new_root.id
    assert new_run.id > second.id and new_vote.id > vote.id
    with pytest.raises(NotFound):
        await store.get_part(part.id)  # the old button's part is gone, not someone else's


async def test_a_closed_store_refuses_clearly(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "closed.sqlite3")
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StorageUnavailable, match="closed"):
        await store.create_story(prompt="late", genre="crime", author_id=1)


async def test_version_one_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    first = migrations()[0][1].read_text()
    with sqlite3.connect(path) as conn:  # a database written by the first release
        conn.executescript(first + "\nPRAGMA user_version = 1;")
        conn.execute(
            "INSERT INTO stories (author_id, source, genre, title, status, created_at, updated_at)"
            " VALUES (1, 'discord', 'crime', 'old story', 'done', 0, 0)"
        )
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(migrations()) >= 2
        assert (await store.list_stories(1)).items[0].story.title == "old story"
        await store.add_message(5, 1, story_id=1, shows="gone")


async def test_version_nine_database_keeps_every_row_and_reference(tmp_path: Path) -> None:
    """Schema 10 builds stories, parts, runs and votes again (AUTOINCREMENT): every
    row keeps its id, the rows pointing at them still do, deleting still cascades,
    and from then on a deleted row's id is not given again."""
    path = tmp_path / "v9.sqlite3"
    with sqlite3.connect(path) as conn:
        for number, schema in migrations()[:9]:
            conn.executescript(schema.read_text() + f"\nPRAGMA user_version = {number};")
        conn.executescript(
            """
            PRAGMA foreign_keys = ON;
            INSERT INTO stories (id, author_id, genre, title, created_at, updated_at, memory)
            VALUES (1, 7, 'crime', 'kept', 0, 0, 'a memory');
            INSERT INTO parts (id, story_id, parent_id, kind, text, created_at, hidden)
            VALUES (1, 1, NULL, 'prompt', 'P1', 0, 0), (2, 1, 1, 'generated', ' g', 0, 1);
            INSERT INTO runs (id, story_id, parent_id, kind, state, part_id, created_at,
                              updated_at, owner)
            VALUES (3, 1, 1, 'start', 'done', 2, 0, 0, 'a'), (4, 1, 2, 'continue', 'queued',
                    NULL, 0, 0, 'b');
            INSERT INTO votes (id, story_id, parent_id, state, created_at)
            VALUES (6, 1, 2, 'open', 0);
            INSERT INTO vote_candidates (vote_id, number, run_id) VALUES (6, 1, 4);
            INSERT INTO messages (message_id, channel_id, story_id, run_id, part_id, shows,
                                  created_at, updated_at, vote_id)
            VALUES (100, 9, 1, 3, 2, 'part:2:0', 0, 0, NULL),
                   (101, 9, 1, NULL, NULL, 'vote:6', 0, 0, 6),
                   (102, 9, NULL, NULL, NULL, 'part:30:0', 0, 0, NULL),
                   (103, 9, NULL, NULL, NULL, 'run:40:generating', 0, 0, NULL),
                   (104, 9, NULL, NULL, NULL, 'vote:50:open', 0, 0, NULL);
            INSERT INTO reports (part_id, user_id, created_at) VALUES (2, 70, 0);
            INSERT INTO shares (token, story_id, created_at) VALUES ('tok', 1, 0);
            """
        )
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(migrations()) >= 10
        assert await store.integrity_check() == "ok"
        assert (await store.get_story(1)).memory == "a memory"
        assert [p.id for p in await store.path_to(2)] == [1, 2]
        assert (await store.get_part(2)).hidden
        assert (await store.get_run(3)).part_id == 2 and (await store.get_run(4)).state == "queued"
        assert [m.message_id for m in await store.messages_of_part(2)] == [100]
        assert (await VoteStore(store).get(6)).state == "open"
        gone, gone_root, gone_run = await store.create_story(prompt="x", genre="crime", author_id=9)
        # After the highest ids, and those that messages of deleted rows still show.
        assert (gone.id, gone_root.id, gone_run.id) == (2, 31, 41)
        await store.delete_story(gone.id)
        new, root, run = await store.create_story(prompt="after", genre="crime", author_id=9)
        assert (new.id, root.id, run.id) == (3, 32, 42)  # not the deleted story's again
        assert (await VoteStore(store).create(new.id, root.id, [run.id])).id == 51
        await store.delete_story(1)  # foreign keys are on again: it all cascades
    with sqlite3.connect(path) as conn:
        left = [
            conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("parts", "runs", "votes", "vote_candidates", "reports", "shares")
        ]
        assert left == [1, 1, 1, 1, 0, 0]  # the new story: its prompt, run and vote
        linked = conn.execute("SELECT story_id, run_id, part_id, vote_id FROM messages").fetchall()
        assert linked == [(None, None, None, None)] * 5
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_an_upgrade_that_would_break_a_reference_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Schema files run with foreign keys off: one that leaves a row pointing at
    nothing is rolled back. A reference broken before (written with foreign keys
    off, outside storybot) is not the file's doing: the upgrade goes on."""
    path = tmp_path / "old.sqlite3"
    async with await Store.open(path) as store:
        story, root, _ = await store.create_story(prompt="Kept", genre="crime", author_id=1)
    with sqlite3.connect(path) as conn:  # foreign keys off, as the sqlite3 shell has them
        conn.execute("INSERT INTO reports (part_id, user_id, created_at) VALUES (99, 1, 0)")
    schemas = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schemas, ignore=shutil.ignore_patterns("postgresql"))
    latest = len(migrations())
    (schemas / f"{latest + 1:04d}_fine.sql").write_text("CREATE TABLE extra (x INTEGER);")
    (schemas / f"{latest + 2:04d}_breaks.sql").write_text(
        f"DELETE FROM stories WHERE id = {story.id};"
    )
    monkeypatch.setattr("storage.db.SCHEMA_DIR", schemas)
    with pytest.raises(StorageError, match="would break 2 reference"):
        await Store.open(path)
    assert "1 reference(s) to rows that no longer exist" in caplog.text
    with sqlite3.connect(path) as conn:  # the file before it stays applied
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest + 1
    (schemas / f"{latest + 2:04d}_breaks.sql").unlink()
    async with await Store.open(path) as store:  # the story and its run are still there
        assert [p.id for p in await store.path_to(root.id)] == [root.id]
        assert (await store.get_story(story.id)).title == "Kept"
        await store.delete_story(story.id)  # and foreign keys are on: it cascades
        with pytest.raises(NotFound):
            await store.get_part(root.id)


async def test_version_two_database_keeps_its_work_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as conn:  # a database written before runs existed
        for _, schema in migrations()[:2]:
            conn.executescript(schema.read_text())
        conn.executescript(
            """
            PRAGMA user_version = 2;
            INSERT INTO stories (id, author_id, source, genre, title, status, created_at,
                                 updated_at)
            VALUES (1, 7, 'discord', 'crime', 'finished', 'done', 0, 0),
                   (2, 7, 'discord', 'crime', 'cut off', 'generating', 0, 0),
                   (3, 8, 'api', 'crime', 'stopped', 'cancelled', 0, 0);
            INSERT INTO parts (id, story_id, parent_id, kind, text, created_at)
            VALUES (1, 1, NULL, 'prompt', 'P1', 0), (2, 1, 1, 'generated', ' g', 0),
                   (3, 2, NULL, 'prompt', 'P2', 0), (4, 3, NULL, 'prompt', 'P3', 0);
            INSERT INTO part_messages (message_id, part_id, channel_id, created_at)
            VALUES (100, 2, 9, 0), (101, 2, 9, 0);
            INSERT INTO pending_messages (message_id, story_id, channel_id, created_at)
            VALUES (200, 2, 9, 0);
            """
        )
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(migrations())
        statuses = [(await store.get_story(i)).status for i in (1, 2, 3)]
        assert statuses == ["done", "generating", "cancelled"]
        assert [m.chunk for m in await store.messages_of_part(2)] == [0, 1]
        # The story cut off mid-part has a run now, which recovery finds...
        interrupted = await store.interrupt_unfinished("restart")
        assert [(r.story_id, r.kind, r.parent_id) for r in interrupted] == [(2, "start", 3)]
        # ...and its message is stale, so the next start marks it with Retry.
        stale = await store.stale_messages()
        assert [(m.message_id, m.wants) for m in stale] == [
            (200, f"run:{interrupted[0].id}:interrupted")
        ]
