"""Stories and their parts, in SQLite (the default) or PostgreSQL.

- The SQL is written once; `storage.db` holds what differs between the two
  databases (placeholders, transactions, row locks, errors, schema versions).
- Schema files are applied in order at open, each in one transaction: SQLite's
  `storage/schema/NNNN_*.sql` with `PRAGMA user_version`; PostgreSQL's
  `storage/schema/postgresql/` under an advisory lock. A newer database is refused.
- Each operation runs in its own transaction. Where a decision depends on what
  was read (who may continue a part, a quota, a report threshold), the row is
  locked first, so two processes on one PostgreSQL decide it as one would.
- Runs record the instance that owns them: on PostgreSQL, shared by several
  processes, each recovers only its own runs at start-up.
- Every query is parameterised.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from storage.db import (
    SCHEMA_DIR,
    Conn,
    Database,
    Row,
    SQLiteDatabase,
    migrations,
    open_database,
)
from storage.errors import Claimed, InvalidData, NotFound, StorageUnavailable
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

__all__ = ["SCHEMA_DIR", "Store", "default_instance_id", "migrations", "title_of"]

TITLE_WORDS = 8
PROBE_BYTES = 64 * 1024  # a write probe's size: a part of a long story, overflow pages and all
PROBE_EVERY_S = 10.0  # while writes succeed, /readyz probes the disk at most this often
_UNFINISHED = "('queued', 'generating')"


def title_of(prompt: str) -> str:
    words = prompt.split()
    title = " ".join(words[:TITLE_WORDS])
    return (title + " …" if len(words) > TITLE_WORDS else title)[:100] or "Untitled"


def default_instance_id() -> str:
    """This process, as runs record their owner: the host name and the process id
    (in a container, the container's name and 1: the same after a restart)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Store:
    """The story store. Open with `await Store.open(path_or_url)` or `async with`."""

    def __init__(self, db: Database, instance: str | None = None) -> None:
        self._db = db
        self.instance = instance or default_instance_id()
        self.path = db.path if isinstance(db, SQLiteDatabase) else None
        self.description = db.description  # a path, or the URL without its password
        # What the last write said: None (it was saved) or why not, and when.
        self._write_error: str | None = None
        self._write_seen = -float("inf")
        # Told how long each committed write transaction took, BEGIN to COMMIT,
        # in seconds (app/metrics.py sets it); must be quick and must not raise.
        self.on_write: Callable[[float], None] | None = None

    # ------------------------------------------------------------------- opening
    @classmethod
    async def open(
        cls,
        where: Path | str,
        *,
        read_only: bool = False,
        instance: str | None = None,
        pool_size: int = 10,
    ) -> Store:
        """A SQLite file (a path or sqlite:///path) or a postgresql:// URL.
        `instance` names this process in the runs it owns (default: host and pid)."""
        db = await open_database(where, read_only=read_only, pool_size=pool_size)
        try:
            await db.migrate(read_only)
        except BaseException:
            await db.close()
            raise
        return cls(db, instance)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    @property
    def shared(self) -> bool:
        """Several processes may use this database at once (PostgreSQL)."""
        return self._db.shared

    @property
    def _conn(self) -> Any:
        """SQLite's connection itself, for tests that set a PRAGMA."""
        assert isinstance(self._db, SQLiteDatabase), "only a SQLite store has one connection"
        return self._db.conn

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        return await self._db.schema_version()

    # --------------------------------------------------------------- plumbing
    @asynccontextmanager
    async def _transaction(self, write: bool = True) -> AsyncIterator[Conn]:
        began = time.perf_counter()
        try:
            async with self._db.transaction(write) as conn:
                yield conn
        except StorageUnavailable as failed:
            if write:
                self._write_error, self._write_seen = str(failed), time.monotonic()
            raise
        if write:
            if self.on_write is not None:
                self.on_write(time.perf_counter() - began)
            if self._write_error is None:
                # Saved, so the disk took it. Not the all-clear after a failure:
                # a small update fits where a new part does not; the probe decides.
                self._write_seen = time.monotonic()

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Row | None:
        async with self._transaction(write=False) as conn:
            return await conn.one(sql, args)

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        async with self._transaction(write=False) as conn:
            return await conn.all(sql, args)

    async def probe_write(self) -> None:
        """Raise `StorageUnavailable` unless the database takes a write now: a
        row of PROBE_BYTES is saved, then removed (two commits, so the bytes
        really reach the disk, not only the page cache)."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO write_probe (id, data) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (bytes(PROBE_BYTES),),
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
        return await self._db.integrity_check()

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
            row = await conn.one(
                "INSERT INTO stories (author_id, source, guild_id, channel_id, genre, title,"
                " memory, authors_note, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
            story_id = _id(row)
            row = await conn.one(
                "INSERT INTO parts (story_id, parent_id, kind, text, requested_by, created_at)"
                " VALUES (?, NULL, 'prompt', ?, ?, ?) RETURNING id",
                (story_id, prompt, author_id, now),
            )
            run = await self._insert_run(conn, story_id, _id(row), "start", author_id, seed)
            story = await _story(conn, story_id)
            part = await _part(conn, run.parent_id)
        return story, part, run

    async def set_notes(self, story_id: int, memory: str, authors_note: str) -> Story:
        """A story's memory and author's note, used from its next part on."""
        _check_text(memory)
        _check_text(authors_note)
        async with self._transaction() as conn:
            changed = await conn.execute(
                "UPDATE stories SET memory = ?, authors_note = ?, updated_at = ? WHERE id = ?",
                (memory, authors_note, time.time(), story_id),
            )
            if changed == 0:
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
            rows = await conn.all("SELECT * FROM parts WHERE story_id = ? ORDER BY id", (story_id,))
            return [part_from_row(row) for row in rows]

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
            total_row = await conn.one(f"SELECT COUNT(*) FROM stories s WHERE {where}", args)
            rows = await conn.all(
                f"SELECT s.*, {_STATUS}, (SELECT COUNT(*) FROM parts p"
                f" WHERE p.story_id = s.id) AS part_count FROM stories s WHERE {where}"
                " ORDER BY s.created_at DESC, s.id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            )
        items = [StorySummary(story_from_row(row), row["part_count"]) for row in rows]
        return StoryPage(items, int(total_row[0]) if total_row else 0, offset, limit)

    async def delete_story(self, story_id: int) -> Deleted:
        """Delete a story with its parts and runs; its messages stay, showing
        nothing, until the front-end clears them."""
        async with self._transaction() as conn:
            counts = await _count(conn, "s.id = ?", (story_id,))
            changed = await conn.execute("DELETE FROM stories WHERE id = ?", (story_id,))
            if changed == 0:
                raise NotFound(f"story {story_id} does not exist")
        return counts

    async def delete_user(self, user_id: int) -> Deleted:
        """Delete the stories a user started and the parts they asked for."""
        async with self._transaction() as conn:
            story_counts = await _count(conn, "s.author_id = ?", (user_id,))
            # Their parts in other people's stories go with their subtrees.
            theirs = (
                "SELECT id FROM parts WHERE requested_by = ? AND story_id IN"
                " (SELECT id FROM stories WHERE author_id IS NULL OR author_id <> ?)"
            )
            row = await conn.one(
                f"WITH RECURSIVE sub(id) AS ({theirs}"
                " UNION SELECT p.id FROM parts p JOIN sub ON p.parent_id = sub.id)"
                " SELECT (SELECT COUNT(*) FROM sub),"
                " (SELECT COUNT(*) FROM messages WHERE part_id IN (SELECT id FROM sub))",
                (user_id, user_id),
            )
            extra_parts, extra_messages = (int(row[0]), int(row[1])) if row else (0, 0)
            await conn.execute(f"DELETE FROM parts WHERE id IN ({theirs})", (user_id, user_id))
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
        claim: bool = False,
    ) -> RunRecord:
        """A run that will write a part under `parent_id` (a reroll: a new version
        of `replaces_id`, which must be a child of `parent_id`).

        With `claim`, the run also claims the part it acts on (the part it
        continues; for a reroll, the part it replaces) for as long as it is
        unfinished: `Claimed` is raised when an unfinished run, or an undecided
        vote, holds that part already, whichever process started it."""
        claimed = replaces_id if kind == "reroll" and replaces_id is not None else parent_id
        async with self._transaction() as conn:
            if claim:
                # Two processes claiming the same part queue up here; the second
                # reads what the first wrote.
                await conn.lock("parts", claimed)
            parent = await _part(conn, parent_id)
            if parent.story_id != story_id:
                raise InvalidData(f"part {parent_id} belongs to another story")
            if replaces_id is not None:
                replaced = await _part(conn, replaces_id)
                if replaced.parent_id != parent_id:
                    raise InvalidData(f"part {replaces_id} is not a child of part {parent_id}")
            if claim:
                await _check_claim(conn, claimed)
            return await self._insert_run(
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
            changed = await conn.execute(
                "UPDATE runs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                (state, error, time.time(), run_id),
            )
            if changed == 0:
                raise NotFound(f"run {run_id} does not exist")

    async def finish_run(self, run_id: int, part: GeneratedPart) -> Part:
        """Store the part a run wrote and mark the run done, in one transaction."""
        _check_text(part.text)
        now = time.time()
        values = asdict(part)
        params = json.dumps(values.pop("params")) if part.params is not None else None
        async with self._transaction() as conn:
            row = await conn.one("SELECT * FROM runs WHERE id = ?", (run_id,))
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            run = run_from_row(row)
            row = await conn.one(
                "INSERT INTO parts (story_id, parent_id, kind, text, requested_by, params, seed,"
                " model_id, prompt_tokens, new_tokens, queued_s, generation_s, finish_reason,"
                " masked, memory, authors_note, candidate, created_at)"
                " VALUES (?, ?, 'generated', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " CASE WHEN EXISTS (SELECT 1 FROM vote_candidates WHERE run_id = ?)"
                " THEN 1 ELSE 0 END, ?) RETURNING id",
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
            part_id = _id(row)
            await conn.execute(
                "UPDATE runs SET state = 'done', part_id = ?, error = NULL, updated_at = ?"
                " WHERE id = ?",
                (part_id, now, run_id),
            )
            await conn.execute(
                "UPDATE stories SET updated_at = ? WHERE id = ?", (now, run.story_id)
            )
            return await _part(conn, part_id)

    async def add_part(self, story_id: int, parent_id: int, part: GeneratedPart) -> Part:
        """Add a part written elsewhere (an import, a test) under `parent_id`."""
        async with self._transaction() as conn:
            parent = await _part(conn, parent_id)
            if parent.story_id != story_id:
                raise InvalidData(f"part {parent_id} belongs to another story")
            run = await self._insert_run(
                conn, story_id, parent_id, "continue", part.requested_by, None
            )
        return await self.finish_run(run.id, part)

    async def delete_run(self, run_id: int) -> None:
        """Forget a run that never started (its message could not be posted)."""
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    async def interrupt_unfinished(self, reason: str) -> list[RunRecord]:
        """Runs left queued or generating by a crash or a stop become `interrupted`.
        On a database that several processes share (PostgreSQL), only this
        instance's runs (and runs nobody owns, such as copied ones): the others'
        are still being written."""
        mine = " AND (owner = ? OR owner IS NULL)" if self.shared else ""
        args: tuple[Any, ...] = (reason, time.time()) + ((self.instance,) if self.shared else ())
        async with self._transaction() as conn:
            rows = await conn.all(
                "UPDATE runs SET state = 'interrupted', error = ?, updated_at = ?"
                f" WHERE state IN {_UNFINISHED}{mine} RETURNING *",
                args,
            )
        return sorted((run_from_row(row) for row in rows), key=lambda run: run.id)

    async def _insert_run(
        self,
        conn: Conn,
        story_id: int,
        parent_id: int,
        kind: RunKind,
        requested_by: int | None,
        seed: int | None,
        replaces_id: int | None = None,
    ) -> RunRecord:
        now = time.time()
        row = await conn.one(
            "INSERT INTO runs (story_id, parent_id, kind, replaces_id, requested_by, state, seed,"
            " owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)"
            " RETURNING *",
            (story_id, parent_id, kind, replaces_id, requested_by, seed, self.instance, now, now),
        )
        assert row is not None
        return run_from_row(row)

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
            story = await conn.one("SELECT story_id FROM parts WHERE id = ?", (part_id,))
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
            gone = await conn.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
        return gone > 0

    async def stale_messages(self, limit: int = 1000) -> list[MessageRecord]:
        """Messages that do not show what the database says they should. On a
        database several processes share, not those of a run another instance
        is still writing, nor the ballot of a vote it runs: that process shows
        them."""
        theirs = (
            " AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.id = known.run_id"
            f" AND o.state IN {_UNFINISHED} AND o.owner IS NOT NULL AND o.owner <> ?)"
            # ...nor the ballot of a vote another instance still runs (it posts
            # the options, then shows the ballot open).
            " AND NOT EXISTS (SELECT 1 FROM votes v JOIN vote_candidates c ON c.vote_id = v.id"
            " JOIN runs o ON o.id = c.run_id WHERE v.id = known.vote_id"
            " AND v.state IN ('writing', 'open') AND o.owner IS NOT NULL AND o.owner <> ?)"
            if self.shared
            else ""
        )
        args = ((self.instance, self.instance) if self.shared else ()) + (limit,)
        rows = await self._all(
            f"SELECT * FROM ({_MESSAGES}) AS known WHERE wants <> shows{theirs}"
            " ORDER BY message_id LIMIT ?",
            args,
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
# run is done, or the run's state; else nothing ('gone'). Flags are 0 or 1 (no
# booleans: SQLite has none).
_SHOWN_PART = (
    "(CASE WHEN p.hidden <> 0 THEN 'hidden:' WHEN p.candidate <> 0 THEN 'candidate:'"
    " ELSE 'part:' END)"
)
# A vote's option shows the vote's state too, so closing the vote updates it.
_CANDIDATE_OF = (
    "(CASE WHEN p.candidate <> 0 AND p.hidden = 0 THEN ':' || COALESCE((SELECT v.state"
    " FROM runs r2 JOIN vote_candidates vc ON vc.run_id = r2.id JOIN votes v ON v.id = vc.vote_id"
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


def _id(row: Row | None) -> int:
    assert row is not None, "INSERT ... RETURNING returned no row"
    return int(row[0])


async def _story(conn: Conn, story_id: int) -> Story:
    row = await conn.one(f"SELECT s.*, {_STATUS} FROM stories s WHERE s.id = ?", (story_id,))
    if row is None:
        raise NotFound(f"story {story_id} does not exist")
    return story_from_row(row)


async def _part(conn: Conn, part_id: int) -> Part:
    row = await conn.one("SELECT * FROM parts WHERE id = ?", (part_id,))
    if row is None:
        raise NotFound(f"part {part_id} does not exist")
    return part_from_row(row)


async def _check_claim(conn: Conn, part_id: int) -> None:
    """Raise `Claimed` when an unfinished run continues or rerolls `part_id`, or
    an undecided vote is on what follows it."""
    row = await conn.one(
        "SELECT r.id, r.kind, (SELECT c.vote_id FROM vote_candidates c WHERE c.run_id = r.id)"
        f" FROM runs r WHERE r.state IN {_UNFINISHED} AND ((r.kind <> 'reroll'"
        " AND r.parent_id = ?) OR (r.kind = 'reroll' AND r.replaces_id = ?))"
        " ORDER BY r.id LIMIT 1",
        (part_id, part_id),
    )
    if row is not None:
        by = "vote" if row[2] is not None else ("reroll" if row[1] == "reroll" else "continue")
        raise Claimed(part_id, by, run_id=int(row[0]))
    row = await conn.one(
        "SELECT id FROM votes WHERE parent_id = ? AND state IN ('writing', 'open') LIMIT 1",
        (part_id,),
    )
    if row is not None:
        raise Claimed(part_id, "vote", vote_id=int(row[0]))


async def _count(conn: Conn, where: str, args: tuple[Any, ...]) -> Deleted:
    row = await conn.one(
        f"SELECT COUNT(*), (SELECT COUNT(*) FROM parts WHERE story_id IN"
        f" (SELECT s.id FROM stories s WHERE {where})),"
        f" (SELECT COUNT(*) FROM messages m"
        f"  WHERE m.story_id IN (SELECT s.id FROM stories s WHERE {where}))"
        f" FROM stories s WHERE {where}",
        args * 3,
    )
    return Deleted(int(row[0]), int(row[1]), int(row[2])) if row else Deleted(0, 0, 0)


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidData("text must be a string")
    if "\x00" in text:
        # PostgreSQL cannot store it, so neither store does: a SQLite database can
        # always move. (Generated text never holds one: generation.text.clean.)
        raise InvalidData("text contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidData("text is not valid Unicode (lone surrogates)") from None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidData(f"unknown status {status!r}")
