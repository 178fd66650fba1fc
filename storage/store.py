"""Stories and their parts in SQLite, through one aiosqlite connection.

- Schema files `storage/schema/NNNN_*.sql` are applied in order at open, each
  in one transaction with `PRAGMA user_version`; a newer database is refused.
- WAL journal, foreign keys on, a busy timeout, synchronous=NORMAL: a killed
  process loses no committed transaction, and readers never block the writer.
- One connection is shared by every task, so each operation runs under an
  asyncio lock in its own transaction: statements of two tasks never interleave
  and no caller sees "database is locked".
- Every query is parameterised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import aiosqlite

from storage.errors import InvalidData, NotFound, SchemaTooNew, StorageError, StorageUnavailable
from storage.models import (
    STATUSES,
    Deleted,
    GeneratedPart,
    MessageRecord,
    Part,
    RunKind,
    RunRecord,
    Source,
    Status,
    Story,
    StoryPage,
    StorySummary,
    message_from_row,
    part_from_row,
    run_from_row,
    story_from_row,
)

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).parent / "schema"
_SCHEMA_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
TITLE_WORDS = 8
PROBE_BYTES = 64 * 1024  # a write probe's size: a part of a long story, overflow pages and all
PROBE_EVERY_S = 10.0  # while writes succeed, /readyz probes the disk at most this often


def migrations(schema_dir: Path = SCHEMA_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(schema_dir.iterdir()):
        match = _SCHEMA_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    numbers = [number for number, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StorageError(f"schema files must be numbered 0001, 0002, ... without gaps: {numbers}")
    return found


def title_of(prompt: str) -> str:
    words = prompt.split()
    title = " ".join(words[:TITLE_WORDS])
    return (title + " …" if len(words) > TITLE_WORDS else title)[:100] or "Untitled"


def _translate(error: sqlite3.Error) -> StorageError:
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError) or "another story" in text:
        return InvalidData(f"refused by the database: {text}")
    if "readonly" in text or "read-only" in text:
        return StorageUnavailable("the database is read-only; nothing was saved")
    if "full" in text:
        return StorageUnavailable("the disk is full; nothing was saved")
    if "unable to open" in text:
        return StorageUnavailable(f"the database cannot be opened: {text}")
    return StorageError(f"database error: {text}")


def _why_read_only(path: Path) -> str | None:
    """Why `path` cannot be written, when it is the file system or the file
    mode (SQLite then says only "unable to open database file")."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(folder, os.W_OK):
        return f"its folder {folder} is read-only (SQLite writes its journal there)"
    return None


def _open_error(path: Path, error: BaseException) -> StorageUnavailable:
    reason = _why_read_only(path)
    if reason is not None:
        return StorageUnavailable(
            f"database {path} is read-only: {reason}; storybot must write it, so make it "
            "writable or set DATABASE_PATH to a writable place"
        )
    return StorageUnavailable(f"cannot open database {path}: {error}")


class Store:
    """The story store. Open with `await Store.open(path)` or `async with`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False
        self.path = path
        # What the last write said: None (it was saved) or why not, and when.
        self._write_error: str | None = None
        self._write_seen = -float("inf")
        # Told how long each committed write transaction took, BEGIN to COMMIT,
        # in seconds (app/metrics.py sets it); must be quick and must not raise.
        self.on_write: Callable[[float], None] | None = None

    # ------------------------------------------------------------------- opening
    @classmethod
    async def open(cls, path: Path | str, *, read_only: bool = False) -> Store:
        path = Path(path)
        try:
            if read_only:
                conn = await aiosqlite.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves.
                conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise _open_error(path, error) from None
        conn.row_factory = sqlite3.Row
        store = cls(conn, path)
        try:
            await store._configure(read_only)
            await store._migrate(read_only)
        except BaseException:
            await conn.close()
            raise
        return store

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._conn.close()

    async def _configure(self, read_only: bool) -> None:
        try:
            await self._conn.execute("PRAGMA busy_timeout = 10000")
            await self._conn.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                cursor = await self._conn.execute("PRAGMA journal_mode = WAL")
                row = await cursor.fetchone()
                if row is None or str(row[0]).lower() != "wal":
                    log.warning("database %s is not in WAL mode", self.path)
                await self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            if not read_only and _why_read_only(self.path) is not None:
                raise _open_error(self.path, error) from None
            raise StorageUnavailable(
                f"{self.path} is not a usable SQLite database: {error}"
            ) from None

    async def schema_version(self) -> int:
        cursor = await self._conn.execute("PRAGMA user_version")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, read_only: bool) -> None:
        steps = migrations()
        current = await self.schema_version()
        latest = steps[-1][0] if steps else 0
        if current > latest:
            raise SchemaTooNew(
                f"database {self.path} has schema version {current}, newer than this "
                f"storybot knows ({latest}): upgrade storybot or use another DATABASE_PATH"
            )
        pending = [(n, p) for n, p in steps if n > current]
        if pending and read_only:
            raise StorageUnavailable(f"database {self.path} needs an upgrade but is read-only")
        for number, path in pending:
            sql = path.read_text(encoding="utf-8")
            try:
                await self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number:d};\nCOMMIT;"
                )
            except sqlite3.Error as error:
                await self._rollback()
                raise _translate(error) from None
            log.info("database %s upgraded to schema %d (%s)", self.path, number, path.name)

    # --------------------------------------------------------------- plumbing
    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def _transaction(self, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("the database is closed")
            try:
                began = time.perf_counter()
                await self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield self._conn
                await self._conn.execute("COMMIT")
                if write and self.on_write is not None:
                    self.on_write(time.perf_counter() - began)
            except sqlite3.Error as error:
                await self._rollback()
                translated = _translate(error)
                if write and isinstance(translated, StorageUnavailable):
                    self._write_error, self._write_seen = str(translated), time.monotonic()
                raise translated from None
            except BaseException:
                await self._rollback()
                raise
            if write and self._write_error is None:
                # Saved, so the disk took it. Not the all-clear after a failure:
                # a small update fits where a new part does not; the probe decides.
                self._write_seen = time.monotonic()

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        async with self._transaction(write=False) as conn:
            cursor = await conn.execute(sql, args)
            return await cursor.fetchone()

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        async with self._transaction(write=False) as conn:
            cursor = await conn.execute(sql, args)
            return list(await cursor.fetchall())

    async def probe_write(self) -> None:
        """Raise `StorageUnavailable` unless the database takes a write now: a
        row of PROBE_BYTES is saved, then removed (two commits, so the bytes
        really reach the disk, not only the page cache)."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO write_probe (id, data) VALUES (1, zeroblob(?))",
                (PROBE_BYTES,),
            )
        # Only after a saved probe: an empty DELETE would succeed on a full disk
        # and clear the failure just seen. A row left behind is replaced next time.
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM write_probe")

    async def write_problem(self, max_age: float = PROBE_EVERY_S) -> str | None:
        """None when writes are saved, else why not ("the disk is full...").
        Recent writes answer for themselves; otherwise, and always after a
        failed one (so recovery shows at once), the disk is probed."""
        if self._write_error is None and time.monotonic() - self._write_seen < max_age:
            return None
        try:
            await self.probe_write()
        except StorageUnavailable as failed:
            return str(failed)
        self._write_error, self._write_seen = None, time.monotonic()
        return None

    async def integrity_check(self) -> str:
        row = await self._one("PRAGMA integrity_check")
        return str(row[0]) if row else "no answer"

    # ---------------------------------------------------------------- stories
    async def create_story(
        self,
        *,
        prompt: str,
        genre: str,
        author_id: int | None,
        source: Source = "discord",
        guild_id: int | None = None,
        channel_id: int | None = None,
        seed: int | None = None,
        memory: str = "",
        authors_note: str = "",
    ) -> tuple[Story, Part, RunRecord]:
        """Create a story, its prompt part and the run that writes its first part,
        in one transaction."""
        for text in (prompt, memory, authors_note):
            _check_text(text)
        now = time.time()
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO stories (author_id, source, guild_id, channel_id, genre, title,"
                " memory, authors_note, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    author_id,
                    source,
                    guild_id,
                    channel_id,
                    genre,
                    title_of(prompt),
                    memory,
                    authors_note,
                    now,
                    now,
                ),
            )
            story_id = cursor.lastrowid
            cursor = await conn.execute(
                "INSERT INTO parts (story_id, parent_id, kind, text, requested_by, created_at)"
                " VALUES (?, NULL, 'prompt', ?, ?, ?)",
                (story_id, prompt, author_id, now),
            )
            assert story_id is not None and cursor.lastrowid is not None
            run = await _insert_run(conn, story_id, cursor.lastrowid, "start", author_id, seed)
            story = await _story(conn, story_id)
            part = await _part(conn, run.parent_id)
        return story, part, run

    async def set_notes(self, story_id: int, memory: str, authors_note: str) -> Story:
        """A story's memory and author's note, used from its next part on."""
        _check_text(memory)
        _check_text(authors_note)
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE stories SET memory = ?, authors_note = ?, updated_at = ? WHERE id = ?",
                (memory, authors_note, time.time(), story_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"story {story_id} does not exist")
            return await _story(conn, story_id)

    async def get_story(self, story_id: int) -> Story:
        async with self._transaction(write=False) as conn:
            return await _story(conn, story_id)

    async def get_part(self, part_id: int) -> Part:
        async with self._transaction(write=False) as conn:
            return await _part(conn, part_id)

    async def story_parts(self, story_id: int) -> list[Part]:
        """Every part of a story, oldest first (for export and the tree)."""
        async with self._transaction(write=False) as conn:
            await _story(conn, story_id)
            cursor = await conn.execute(
                "SELECT * FROM parts WHERE story_id = ? ORDER BY id", (story_id,)
            )
            return [part_from_row(row) for row in await cursor.fetchall()]

    async def path_to(self, part_id: int) -> list[Part]:
        """The parts from the root prompt down to `part_id`, in reading order."""
        rows = await self._all(
            "WITH RECURSIVE chain(id, parent_id, depth) AS ("
            "  SELECT id, parent_id, 0 FROM parts WHERE id = ?"
            "  UNION ALL"
            "  SELECT p.id, p.parent_id, chain.depth + 1 FROM parts p"
            "  JOIN chain ON p.id = chain.parent_id"
            ") SELECT parts.* FROM chain JOIN parts ON parts.id = chain.id"
            " ORDER BY chain.depth DESC",
            (part_id,),
        )
        if not rows:
            raise NotFound(f"part {part_id} does not exist")
        return [part_from_row(row) for row in rows]

    async def latest_part(self, story_id: int) -> Part:
        """The newest part of a story: the end of the branch last written (a vote's
        options not chosen, or not yet, are never it)."""
        row = await self._one(
            "SELECT * FROM parts WHERE story_id = ? AND candidate = 0 ORDER BY id DESC LIMIT 1",
            (story_id,),
        )
        if row is None:
            raise NotFound(f"story {story_id} does not exist")
        return part_from_row(row)

    async def has_children(self, part_id: int) -> bool:
        row = await self._one("SELECT 1 FROM parts WHERE parent_id = ? LIMIT 1", (part_id,))
        return row is not None

    async def list_stories(
        self, author_id: int, *, limit: int = 10, offset: int = 0, genre: str | None = None
    ) -> StoryPage:
        """A user's stories, newest first, with part counts, a page at a time."""
        limit = max(1, min(int(limit), 100))
        offset = max(0, int(offset))
        where = "s.author_id = ?" + (" AND s.genre = ?" if genre else "")
        args: tuple[Any, ...] = (author_id, genre) if genre else (author_id,)
        async with self._transaction(write=False) as conn:
            total_row = await (
                await conn.execute(f"SELECT COUNT(*) FROM stories s WHERE {where}", args)
            ).fetchone()
            rows = await (
                await conn.execute(
                    f"SELECT s.*, {_STATUS}, (SELECT COUNT(*) FROM parts p"
                    f" WHERE p.story_id = s.id) AS part_count FROM stories s WHERE {where}"
                    " ORDER BY s.created_at DESC, s.id DESC LIMIT ? OFFSET ?",
                    (*args, limit, offset),
                )
            ).fetchall()
        items = [StorySummary(story_from_row(row), row["part_count"]) for row in rows]
        return StoryPage(items, int(total_row[0]) if total_row else 0, offset, limit)

    async def delete_story(self, story_id: int) -> Deleted:
        """Delete a story with its parts and runs; its messages stay, showing
        nothing, until the front-end clears them."""
        async with self._transaction() as conn:
            counts = await _count(conn, "s.id = ?", (story_id,))
            cursor = await conn.execute("DELETE FROM stories WHERE id = ?", (story_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"story {story_id} does not exist")
        return counts

    async def delete_user(self, user_id: int) -> Deleted:
        """Delete the stories a user started and the parts they asked for."""
        async with self._transaction() as conn:
            story_counts = await _count(conn, "s.author_id = ?", (user_id,))
            other_parts = await (
                await conn.execute(
                    "SELECT id FROM parts WHERE requested_by = ? AND story_id IN"
                    " (SELECT id FROM stories WHERE author_id IS NOT ?)",
                    (user_id, user_id),
                )
            ).fetchall()
            part_ids = [row["id"] for row in other_parts]
            extra_parts = extra_messages = 0
            if part_ids:
                # Their parts in other people's stories go with their subtrees.
                marks = ",".join("?" * len(part_ids))
                subtree = (
                    f"WITH RECURSIVE sub(id) AS (SELECT id FROM parts WHERE id IN ({marks})"
                    " UNION SELECT p.id FROM parts p JOIN sub ON p.parent_id = sub.id)"
                )
                row = await (
                    await conn.execute(
                        f"{subtree} SELECT (SELECT COUNT(*) FROM sub),"
                        " (SELECT COUNT(*) FROM messages WHERE part_id IN (SELECT id FROM sub))",
                        part_ids,
                    )
                ).fetchone()
                extra_parts, extra_messages = (row[0], row[1]) if row else (0, 0)
                await conn.execute(f"DELETE FROM parts WHERE id IN ({marks})", part_ids)
            # Their runs in other people's stories that wrote nothing yet go too.
            await conn.execute(
                "DELETE FROM runs WHERE requested_by = ? AND part_id IS NULL", (user_id,)
            )
            await conn.execute("DELETE FROM stories WHERE author_id = ?", (user_id,))
            # The name share pages showed for them, and their name on links they made.
            await conn.execute("DELETE FROM display_names WHERE user_id = ?", (user_id,))
            await conn.execute(
                "UPDATE shares SET created_by = NULL WHERE created_by = ?", (user_id,)
            )
        return Deleted(
            story_counts.stories,
            story_counts.parts + extra_parts,
            story_counts.messages + extra_messages,
        )

    # ------------------------------------------------------------------- runs
    async def create_run(
        self,
        story_id: int,
        parent_id: int,
        kind: RunKind,
        *,
        requested_by: int | None,
        seed: int | None = None,
        replaces_id: int | None = None,
    ) -> RunRecord:
        """A run that will write a part under `parent_id` (a reroll: a new version
        of `replaces_id`, which must be a child of `parent_id`)."""
        async with self._transaction() as conn:
            parent = await _part(conn, parent_id)
            if parent.story_id != story_id:
                raise InvalidData(f"part {parent_id} belongs to another story")
            if replaces_id is not None:
                replaced = await _part(conn, replaces_id)
                if replaced.parent_id != parent_id:
                    raise InvalidData(f"part {replaces_id} is not a child of part {parent_id}")
            return await _insert_run(
                conn, story_id, parent_id, kind, requested_by, seed, replaces_id
            )

    async def get_run(self, run_id: int) -> RunRecord:
        row = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFound(f"run {run_id} does not exist")
        return run_from_row(row)

    async def set_run_state(self, run_id: int, state: Status, error: str | None = None) -> None:
        """Record a run's new state (not `done`: `finish_run` stores the part too)."""
        _check_status(state)
        if state == "done":
            raise InvalidData("a run becomes done with finish_run, which stores its part")
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE runs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                (state, error, time.time(), run_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"run {run_id} does not exist")

    async def finish_run(self, run_id: int, part: GeneratedPart) -> Part:
        """Store the part a run wrote and mark the run done, in one transaction."""
        _check_text(part.text)
        now = time.time()
        values = asdict(part)
        params = json.dumps(values.pop("params")) if part.params is not None else None
        async with self._transaction() as conn:
            row = await (
                await conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
            ).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            run = run_from_row(row)
            cursor = await conn.execute(
                "INSERT INTO parts (story_id, parent_id, kind, text, requested_by, params, seed,"
                " model_id, prompt_tokens, new_tokens, queued_s, generation_s, finish_reason,"
                " masked, memory, authors_note, candidate, created_at)"
                " VALUES (?, ?, 'generated', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " EXISTS (SELECT 1 FROM vote_candidates WHERE run_id = ?), ?)",
                (
                    run.story_id,
                    run.parent_id,
                    part.text,
                    part.requested_by,
                    params,
                    part.seed,
                    part.model_id,
                    part.prompt_tokens,
                    part.new_tokens,
                    part.queued_s,
                    part.generation_s,
                    part.finish_reason,
                    int(part.masked),
                    part.memory,
                    part.authors_note,
                    run_id,
                    now,
                ),
            )
            part_id = cursor.lastrowid
            await conn.execute(
                "UPDATE runs SET state = 'done', part_id = ?, error = NULL, updated_at = ?"
                " WHERE id = ?",
                (part_id, now, run_id),
            )
            await conn.execute(
                "UPDATE stories SET updated_at = ? WHERE id = ?", (now, run.story_id)
            )
            assert part_id is not None
            return await _part(conn, part_id)

    async def add_part(self, story_id: int, parent_id: int, part: GeneratedPart) -> Part:
        """Add a part written elsewhere (an import, a test) under `parent_id`."""
        async with self._transaction() as conn:
            parent = await _part(conn, parent_id)
            if parent.story_id != story_id:
                raise InvalidData(f"part {parent_id} belongs to another story")
            run = await _insert_run(conn, story_id, parent_id, "continue", part.requested_by, None)
        return await self.finish_run(run.id, part)

    async def delete_run(self, run_id: int) -> None:
        """Forget a run that never started (its message could not be posted)."""
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    async def interrupt_unfinished(self, reason: str) -> list[RunRecord]:
        """Runs left queued or generating by a crash or a stop become `interrupted`."""
        async with self._transaction() as conn:
            rows = await (
                await conn.execute(
                    "SELECT * FROM runs WHERE state IN ('queued', 'generating') ORDER BY id"
                )
            ).fetchall()
            await conn.execute(
                "UPDATE runs SET state = 'interrupted', error = ?, updated_at = ?"
                " WHERE state IN ('queued', 'generating')",
                (reason, time.time()),
            )
        return [replace(run_from_row(row), state="interrupted", error=reason) for row in rows]

    # --------------------------------------------------------------- messages
    async def add_message(
        self,
        message_id: int,
        channel_id: int,
        *,
        story_id: int | None,
        run_id: int | None = None,
        part_id: int | None = None,
        chunk: int = 0,
        shows: str,
        vote_id: int | None = None,
    ) -> None:
        """Record a message the bot posted (or took over) and what it shows."""
        now = time.time()
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO messages (message_id, channel_id, story_id, run_id, part_id, chunk,"
                " shows, vote_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET story_id = excluded.story_id,"
                " run_id = excluded.run_id, part_id = excluded.part_id, chunk = excluded.chunk,"
                " shows = excluded.shows, vote_id = excluded.vote_id,"
                " updated_at = excluded.updated_at",
                (
                    message_id,
                    channel_id,
                    story_id,
                    run_id,
                    part_id,
                    chunk,
                    shows,
                    vote_id,
                    now,
                    now,
                ),
            )

    async def get_message(self, message_id: int) -> MessageRecord | None:
        row = await self._one(f"{_MESSAGES} WHERE m.message_id = ?", (message_id,))
        return message_from_row(row) if row else None

    async def messages_of_part(self, part_id: int) -> list[MessageRecord]:
        rows = await self._all(
            f"{_MESSAGES} WHERE m.part_id = ? ORDER BY m.chunk, m.message_id", (part_id,)
        )
        return [message_from_row(row) for row in rows]

    async def messages_of_run(self, run_id: int) -> list[MessageRecord]:
        rows = await self._all(
            f"{_MESSAGES} WHERE m.run_id = ? AND m.part_id IS NULL ORDER BY m.message_id",
            (run_id,),
        )
        return [message_from_row(row) for row in rows]

    async def show_part_in(self, part_id: int, message_ids: list[int]) -> None:
        """From now on these messages should show `part_id`, one chunk each, in order.
        (What they display is confirmed separately, edit by edit.)"""
        now = time.time()
        async with self._transaction() as conn:
            story = await (
                await conn.execute("SELECT story_id FROM parts WHERE id = ?", (part_id,))
            ).fetchone()
            if story is None:
                raise NotFound(f"part {part_id} does not exist")
            for chunk, message_id in enumerate(message_ids):
                await conn.execute(
                    "UPDATE messages SET part_id = ?, story_id = ?, chunk = ?, updated_at = ?"
                    " WHERE message_id = ?",
                    (part_id, story["story_id"], chunk, now, message_id),
                )

    async def set_shown(self, message_id: int, shows: str) -> None:
        """Discord confirmed the message displays `shows` now."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE messages SET shows = ?, updated_at = ? WHERE message_id = ?",
                (shows, time.time(), message_id),
            )

    async def forget_message(self, message_id: int) -> bool:
        """The message is gone (deleted in Discord) or shows nothing any more."""
        async with self._transaction() as conn:
            cursor = await conn.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
            return cursor.rowcount > 0

    async def stale_messages(self, limit: int = 1000) -> list[MessageRecord]:
        """Messages that do not show what the database says they should."""
        rows = await self._all(
            f"SELECT * FROM ({_MESSAGES}) WHERE wants != shows ORDER BY message_id LIMIT ?",
            (limit,),
        )
        return [message_from_row(row) for row in rows]


# A story's status, derived from its runs: what is being written, else whether it
# has any text, else how its last run ended.
_STATUS = (
    "CASE"
    " WHEN EXISTS (SELECT 1 FROM runs r WHERE r.story_id = s.id AND r.state = 'generating')"
    "  THEN 'generating'"
    " WHEN EXISTS (SELECT 1 FROM runs r WHERE r.story_id = s.id AND r.state = 'queued')"
    "  THEN 'queued'"
    " WHEN EXISTS (SELECT 1 FROM parts p WHERE p.story_id = s.id AND p.kind = 'generated')"
    "  THEN 'done'"
    " ELSE COALESCE((SELECT r.state FROM runs r WHERE r.story_id = s.id"
    "  ORDER BY r.id DESC LIMIT 1), 'done')"
    " END AS status"
)

# A message with what it should show: its part's chunk ('hidden:' instead of
# 'part:' while the part is hidden after reports); else its run's part once the
# run is done, or the run's state; else nothing ('gone').
_SHOWN_PART = (
    "(CASE WHEN p.hidden THEN 'hidden:' WHEN p.candidate THEN 'candidate:' ELSE 'part:' END)"
)
# A vote's option shows the vote's state too, so closing the vote updates it.
_CANDIDATE_OF = (
    "(CASE WHEN p.candidate AND NOT p.hidden THEN ':' || COALESCE((SELECT v.state FROM runs r2"
    " JOIN vote_candidates vc ON vc.run_id = r2.id JOIN votes v ON v.id = vc.vote_id"
    " WHERE r2.part_id = p.id), 'gone') ELSE '' END)"
)
_MESSAGES = (
    "SELECT m.*, CASE"
    " WHEN m.vote_id IS NOT NULL THEN 'vote:' || m.vote_id || ':'"
    "  || COALESCE((SELECT v.state FROM votes v WHERE v.id = m.vote_id), 'gone')"
    f" WHEN m.part_id IS NOT NULL THEN {_SHOWN_PART} || m.part_id || ':' || m.chunk"
    f"  || {_CANDIDATE_OF}"
    " WHEN r.id IS NULL THEN 'gone'"
    f" WHEN r.state = 'done' THEN COALESCE({_SHOWN_PART} || r.part_id || ':' || m.chunk"
    f"  || {_CANDIDATE_OF}, 'gone')"
    " ELSE 'run:' || r.id || ':' || r.state"
    " END AS wants"
    " FROM messages m LEFT JOIN runs r ON r.id = m.run_id"
    " LEFT JOIN parts p ON p.id = COALESCE(m.part_id, r.part_id)"
)


async def _story(conn: aiosqlite.Connection, story_id: int) -> Story:
    row = await (
        await conn.execute(f"SELECT s.*, {_STATUS} FROM stories s WHERE s.id = ?", (story_id,))
    ).fetchone()
    if row is None:
        raise NotFound(f"story {story_id} does not exist")
    return story_from_row(row)


async def _part(conn: aiosqlite.Connection, part_id: int) -> Part:
    row = await (await conn.execute("SELECT * FROM parts WHERE id = ?", (part_id,))).fetchone()
    if row is None:
        raise NotFound(f"part {part_id} does not exist")
    return part_from_row(row)


async def _insert_run(
    conn: aiosqlite.Connection,
    story_id: int,
    parent_id: int,
    kind: RunKind,
    requested_by: int | None,
    seed: int | None,
    replaces_id: int | None = None,
) -> RunRecord:
    now = time.time()
    cursor = await conn.execute(
        "INSERT INTO runs (story_id, parent_id, kind, replaces_id, requested_by, state, seed,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        (story_id, parent_id, kind, replaces_id, requested_by, seed, now, now),
    )
    row = await (
        await conn.execute("SELECT * FROM runs WHERE id = ?", (cursor.lastrowid,))
    ).fetchone()
    return run_from_row(row)


async def _count(conn: aiosqlite.Connection, where: str, args: tuple[Any, ...]) -> Deleted:
    row = await (
        await conn.execute(
            f"SELECT COUNT(*), (SELECT COUNT(*) FROM parts WHERE story_id IN"
            f" (SELECT s.id FROM stories s WHERE {where})),"
            f" (SELECT COUNT(*) FROM messages m"
            f"  WHERE m.story_id IN (SELECT s.id FROM stories s WHERE {where}))"
            f" FROM stories s WHERE {where}",
            args * 3,
        )
    ).fetchone()
    return Deleted(row[0], row[1], row[2]) if row else Deleted(0, 0, 0)


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidData("text must be a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidData("text is not valid Unicode (lone surrogates)") from None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidData(f"unknown status {status!r}")
