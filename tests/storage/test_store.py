"""The story store on real SQLite files in a temporary folder."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from storage.errors import InvalidData, NotFound, SchemaTooNew, StorageUnavailable
from storage.models import GeneratedPart
from storage.store import Store, migrations
from tests.conftest import REPO

WEIRD = [
    "NUL\x00inside",
    "😀🎉 emoji, עברית right-to-left, zero\u200bwidth\u200d",
    "'; DROP TABLE stories; --",
    "x" * 100_000,
    "\u202etext reversed",
]


async def test_create_story_and_read_its_path(store: Store) -> None:
    story, root = await store.create_story(
        prompt="The detective reached the crime scene and looked around",
        genre="crime",
        author_id=11,
        guild_id=1,
        channel_id=2,
    )
    assert story.status == "queued" and story.title.startswith("The detective reached")
    assert root.kind == "prompt" and root.parent_id is None
    first = await store.add_part(
        story.id,
        root.id,
        GeneratedPart(" It was late.", requested_by=11, seed=7, params={"top_k": 50}, new_tokens=4),
        status="done",
    )
    second = await store.add_part(story.id, first.id, GeneratedPart(" Rain fell.", requested_by=12))
    sibling = await store.add_part(story.id, root.id, GeneratedPart(" It was early."))
    path = await store.path_to(second.id)
    assert [p.id for p in path] == [root.id, first.id, second.id]
    assert await store.text_to(second.id) == root.text + " It was late. Rain fell."
    assert await store.text_to(sibling.id) == root.text + " It was early."
    assert (await store.get_story(story.id)).status == "done"
    assert first.params == {"top_k": 50} and first.seed == 7
    assert [p.id for p in await store.children(root.id)] == [first.id, sibling.id]
    assert (await store.latest_part(story.id)).id == sibling.id


@pytest.mark.parametrize("text", WEIRD)
async def test_any_text_is_stored_verbatim(store: Store, text: str) -> None:
    story, root = await store.create_story(prompt=text, genre="crime", author_id=1)
    part = await store.add_part(story.id, root.id, GeneratedPart(text))
    assert (await store.get_part(part.id)).text == text
    assert await store.text_to(part.id) == text + text
    assert await store.integrity_check() == "ok"


async def test_refused_input_leaves_no_partial_write(store: Store) -> None:
    story, root = await store.create_story(prompt="one", genre="crime", author_id=1)
    other, _ = await store.create_story(prompt="two", genre="crime", author_id=1)
    with pytest.raises(InvalidData, match="another story"):
        await store.add_part(other.id, root.id, GeneratedPart("x"))
    with pytest.raises(NotFound):
        await store.add_part(story.id, 99_999, GeneratedPart("x"))
    with pytest.raises(NotFound):
        await store.get_story(12345)
    with pytest.raises(NotFound):
        await store.path_to(12345)
    with pytest.raises(InvalidData):
        await store.set_status(story.id, "exploded")  # type: ignore[arg-type]
    with pytest.raises(InvalidData):
        await store.create_story(prompt="\ud800 lone surrogate", genre="crime", author_id=1)
    assert len(await store.story_parts(story.id)) == 1
    assert len(await store.story_parts(other.id)) == 1
    assert (await store.list_stories(1)).total == 2


async def test_messages_find_their_part_and_can_be_forgotten(store: Store) -> None:
    story, root = await store.create_story(prompt="p", genre="crime", author_id=1)
    part = await store.add_part(story.id, root.id, GeneratedPart(" g"))
    await store.link_message(part.id, 555, channel_id=9)
    await store.link_message(part.id, 556, channel_id=9)
    assert (await store.part_for_message(556)) == part
    assert await store.messages_of_part(part.id) == [(555, 9), (556, 9)]
    assert await store.forget_message(555)
    assert await store.part_for_message(555) is None
    assert not await store.forget_message(555)


async def test_list_stories_pages_and_filters(store: Store) -> None:
    for index in range(23):
        genre = "crime" if index % 2 else "romance"
        story, root = await store.create_story(prompt=f"story {index}", genre=genre, author_id=5)
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
    mine, my_root = await store.create_story(prompt="mine", genre="crime", author_id=1)
    await store.add_part(mine.id, my_root.id, GeneratedPart(" a", requested_by=2))
    theirs, their_root = await store.create_story(prompt="theirs", genre="crime", author_id=2)
    my_part = await store.add_part(theirs.id, their_root.id, GeneratedPart(" b", requested_by=1))
    kept = await store.add_part(theirs.id, their_root.id, GeneratedPart(" c", requested_by=2))
    await store.link_message(my_part.id, 77, channel_id=1)
    deleted = await store.delete_user(1)
    assert (deleted.stories, deleted.parts, deleted.messages) == (1, 3, 1)
    with pytest.raises(NotFound):
        await store.get_story(mine.id)
    assert [p.id for p in await store.story_parts(theirs.id)] == [their_root.id, kept.id]
    assert (await store.delete_user(1)).stories == 0


async def test_mark_interrupted_returns_unfinished_stories(store: Store) -> None:
    queued, _ = await store.create_story(prompt="q", genre="crime", author_id=1)
    running, _ = await store.create_story(prompt="r", genre="crime", author_id=1)
    await store.set_status(running.id, "generating")
    done, _ = await store.create_story(prompt="d", genre="crime", author_id=1, status="done")
    interrupted = await store.mark_interrupted()
    assert [s.id for s in interrupted] == [queued.id, running.id]
    assert (await store.get_story(running.id)).status == "interrupted"
    assert (await store.get_story(done.id)).status == "done"
    assert await store.mark_interrupted() == []


async def test_connection_settings(store: Store) -> None:
    async def pragma(name: str) -> object:
        row = await store._one(f"PRAGMA {name}")
        assert row is not None
        return row[0]

    assert await pragma("journal_mode") == "wal"
    assert await pragma("foreign_keys") == 1
    assert await pragma("synchronous") >= 1  # type: ignore[operator]
    assert await pragma("busy_timeout") >= 1000  # type: ignore[operator]


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
            story, root = stories[(worker + n) % len(stories)]
            part = await store.add_part(story.id, root.id, GeneratedPart(f" w{worker}n{n}"))
            ids.append(part.id)
        return ids

    results = await asyncio.gather(*(writer(w) for w in range(8)))
    written = [part_id for ids in results for part_id in ids]
    assert len(written) == len(set(written)) == 200
    stored = []
    for story, _ in stories:
        stored += [p.text for p in await store.story_parts(story.id) if p.kind == "generated"]
    assert sorted(stored) == sorted(f" w{w}n{n}" for w in range(8) for n in range(25))


async def test_two_connections_writing_at_once_do_not_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    async with await Store.open(path) as first, await Store.open(path) as second:

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
            story, root = await store.create_story(prompt=f"crash {n} " + "y" * 2000,
                                                   genre="crime", author_id=1)
            await store.add_part(story.id, root.id, GeneratedPart(f" part {n}"), status="done")
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


async def test_full_disk_is_a_clear_error_and_the_database_stays_valid(store: Store) -> None:
    story, root = await store.create_story(
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


async def test_read_only_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    async with await Store.open(path) as store:
        await store.create_story(prompt="kept", genre="crime", author_id=1)
    async with await Store.open(path, read_only=True) as store:
        with pytest.raises(StorageUnavailable, match="read-only"):
            await store.create_story(prompt="refused", genre="crime", author_id=1)
        assert (await store.list_stories(1)).total == 1
        assert await store.integrity_check() == "ok"


async def test_pending_messages_follow_their_story(store: Store) -> None:
    story, _ = await store.create_story(prompt="p", genre="crime", author_id=1)
    await store.link_pending(story.id, 900, channel_id=5)
    assert await store.pending_messages(story.id) == [(900, 5)]
    assert await store.story_for_pending(900) == story.id
    assert await store.forget_message(900)
    assert await store.pending_messages(story.id) == []
    await store.link_pending(story.id, 901, channel_id=5)
    await store.delete_story(story.id)
    assert await store.story_for_pending(901) is None


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
        await store.link_pending(1, 5, channel_id=1)
