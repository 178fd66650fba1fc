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
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiosqlite

from storage.errors import InvalidData, NotFound, SchemaTooNew, StorageError, StorageUnavailable
from storage.models import (
    STATUSES,
    Deleted,
    GeneratedPart,
    Part,
    Source,
    Status,
    Story,
    StoryPage,
    StorySummary,
    part_from_row,
    story_from_row,
)

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).parent / "schema"
_SCHEMA_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
TITLE_WORDS = 8


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


class Store:
    """The story store. Open with `await Store.open(path)` or `async with`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path

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
            raise StorageUnavailable(f"cannot open database {path}: {error}") from None
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
            try:
                await self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield self._conn
                await self._conn.execute("COMMIT")
            except sqlite3.Error as error:
                await self._rollback()
                raise _translate(error) from None
            except BaseException:
                await self._rollback()
                raise

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        async with self._transaction(write=False) as conn:
            cursor = await conn.execute(sql, args)
            return await cursor.fetchone()

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        async with self._transaction(write=False) as conn:
            cursor = await conn.execute(sql, args)
            return list(await cursor.fetchall())

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
        status: Status = "queued",
    ) -> tuple[Story, Part]:
        """Create a story and its prompt part, in one transaction."""
        _check_text(prompt)
        _check_status(status)
        now = time.time()
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO stories (author_id, source, guild_id, channel_id, genre, title,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    author_id,
                    source,
                    guild_id,
                    channel_id,
                    genre,
                    title_of(prompt),
                    status,
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
            part_id = cursor.lastrowid
            story_row = await (
                await conn.execute("SELECT * FROM stories WHERE id = ?", (story_id,))
            ).fetchone()
            part_row = await (
                await conn.execute("SELECT * FROM parts WHERE id = ?", (part_id,))
            ).fetchone()
        return story_from_row(story_row), part_from_row(part_row)

    async def add_part(
        self, story_id: int, parent_id: int, part: GeneratedPart, *, status: Status | None = None
    ) -> Part:
        """Add a generated part under `parent_id`; optionally set the story's status."""
        _check_text(part.text)
        if status is not None:
            _check_status(status)
        now = time.time()
        values = asdict(part)
        params = json.dumps(values.pop("params")) if part.params is not None else None
        async with self._transaction() as conn:
            parent = await (
                await conn.execute("SELECT story_id FROM parts WHERE id = ?", (parent_id,))
            ).fetchone()
            if parent is None:
                raise NotFound(f"part {parent_id} does not exist")
            if parent["story_id"] != story_id:
                raise InvalidData(f"part {parent_id} belongs to another story")
            cursor = await conn.execute(
                "INSERT INTO parts (story_id, parent_id, kind, text, requested_by, params, seed,"
                " model_id, prompt_tokens, new_tokens, queued_s, generation_s, finish_reason,"
                " created_at) VALUES (?, ?, 'generated', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    story_id,
                    parent_id,
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
                    now,
                ),
            )
            part_id = cursor.lastrowid
            if status is not None:
                await conn.execute(
                    "UPDATE stories SET status = ?, updated_at = ? WHERE id = ?",
                    (status, now, story_id),
                )
            else:
                await conn.execute(
                    "UPDATE stories SET updated_at = ? WHERE id = ?", (now, story_id)
                )
            row = await (
                await conn.execute("SELECT * FROM parts WHERE id = ?", (part_id,))
            ).fetchone()
        return part_from_row(row)

    async def set_status(self, story_id: int, status: Status) -> None:
        _check_status(status)
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE stories SET status = ?, updated_at = ? WHERE id = ?",
                (status, time.time(), story_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"story {story_id} does not exist")

    async def get_story(self, story_id: int) -> Story:
        row = await self._one("SELECT * FROM stories WHERE id = ?", (story_id,))
        if row is None:
            raise NotFound(f"story {story_id} does not exist")
        return story_from_row(row)

    async def get_part(self, part_id: int) -> Part:
        row = await self._one("SELECT * FROM parts WHERE id = ?", (part_id,))
        if row is None:
            raise NotFound(f"part {part_id} does not exist")
        return part_from_row(row)

    async def story_parts(self, story_id: int) -> list[Part]:
        """Every part of a story, oldest first (for export and the tree)."""
        await self.get_story(story_id)
        rows = await self._all("SELECT * FROM parts WHERE story_id = ? ORDER BY id", (story_id,))
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

    async def text_to(self, part_id: int) -> str:
        return "".join(part.text for part in await self.path_to(part_id))

    async def latest_part(self, story_id: int) -> Part:
        """The newest part of a story: the end of the branch last written."""
        row = await self._one(
            "SELECT * FROM parts WHERE story_id = ? ORDER BY id DESC LIMIT 1", (story_id,)
        )
        if row is None:
            raise NotFound(f"story {story_id} does not exist")
        return part_from_row(row)

    async def children(self, part_id: int) -> list[Part]:
        rows = await self._all("SELECT * FROM parts WHERE parent_id = ? ORDER BY id", (part_id,))
        return [part_from_row(row) for row in rows]

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
                    "SELECT s.*, (SELECT COUNT(*) FROM parts p WHERE p.story_id = s.id)"
                    f" AS part_count FROM stories s WHERE {where}"
                    " ORDER BY s.created_at DESC, s.id DESC LIMIT ? OFFSET ?",
                    (*args, limit, offset),
                )
            ).fetchall()
        items = [StorySummary(story_from_row(row), row["part_count"]) for row in rows]
        return StoryPage(items, int(total_row[0]) if total_row else 0, offset, limit)

    async def delete_story(self, story_id: int) -> Deleted:
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
                        " (SELECT COUNT(*) FROM part_messages"
                        "  WHERE part_id IN (SELECT id FROM sub))",
                        part_ids,
                    )
                ).fetchone()
                extra_parts, extra_messages = (row[0], row[1]) if row else (0, 0)
                await conn.execute(f"DELETE FROM parts WHERE id IN ({marks})", part_ids)
            await conn.execute("DELETE FROM stories WHERE author_id = ?", (user_id,))
        return Deleted(
            story_counts.stories,
            story_counts.parts + extra_parts,
            story_counts.messages + extra_messages,
        )

    async def mark_interrupted(self) -> list[Story]:
        """Stories left queued or generating by a crash become `interrupted`."""
        async with self._transaction() as conn:
            rows = await (
                await conn.execute(
                    "SELECT * FROM stories WHERE status IN ('queued', 'generating') ORDER BY id"
                )
            ).fetchall()
            await conn.execute(
                "UPDATE stories SET status = 'interrupted', updated_at = ?"
                " WHERE status IN ('queued', 'generating')",
                (time.time(),),
            )
        return [story_from_row(row) for row in rows]

    # --------------------------------------------------------------- messages
    async def link_message(self, part_id: int, message_id: int, channel_id: int) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO part_messages (message_id, part_id, channel_id, created_at)"
                " VALUES (?, ?, ?, ?)",
                (message_id, part_id, channel_id, time.time()),
            )

    async def part_for_message(self, message_id: int) -> Part | None:
        row = await self._one(
            "SELECT parts.* FROM part_messages JOIN parts ON parts.id = part_messages.part_id"
            " WHERE part_messages.message_id = ?",
            (message_id,),
        )
        return part_from_row(row) if row else None

    async def messages_of_part(self, part_id: int) -> list[tuple[int, int]]:
        rows = await self._all(
            "SELECT message_id, channel_id FROM part_messages WHERE part_id = ?"
            " ORDER BY message_id",
            (part_id,),
        )
        return [(row["message_id"], row["channel_id"]) for row in rows]

    async def forget_message(self, message_id: int) -> bool:
        """A deleted message: forget it as a part's or a pending story's message."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM part_messages WHERE message_id = ?", (message_id,)
            )
            pending = await conn.execute(
                "DELETE FROM pending_messages WHERE message_id = ?", (message_id,)
            )
            return cursor.rowcount + pending.rowcount > 0

    async def link_pending(self, story_id: int, message_id: int, channel_id: int) -> None:
        """A message showing a story that is queued or being written."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO pending_messages (message_id, story_id, channel_id,"
                " created_at) VALUES (?, ?, ?, ?)",
                (message_id, story_id, channel_id, time.time()),
            )

    async def pending_messages(self, story_id: int) -> list[tuple[int, int]]:
        rows = await self._all(
            "SELECT message_id, channel_id FROM pending_messages WHERE story_id = ?"
            " ORDER BY message_id",
            (story_id,),
        )
        return [(row["message_id"], row["channel_id"]) for row in rows]

    async def clear_pending(self, message_id: int) -> None:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM pending_messages WHERE message_id = ?", (message_id,))

    async def story_for_pending(self, message_id: int) -> int | None:
        row = await self._one(
            "SELECT story_id FROM pending_messages WHERE message_id = ?", (message_id,)
        )
        return int(row["story_id"]) if row else None


async def _count(conn: aiosqlite.Connection, where: str, args: tuple[Any, ...]) -> Deleted:
    row = await (
        await conn.execute(
            f"SELECT COUNT(*), (SELECT COUNT(*) FROM parts WHERE story_id IN"
            f" (SELECT s.id FROM stories s WHERE {where})),"
            f" (SELECT COUNT(*) FROM part_messages pm JOIN parts p ON p.id = pm.part_id"
            f"  WHERE p.story_id IN (SELECT s.id FROM stories s WHERE {where}))"
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
