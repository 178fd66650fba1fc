"""The two databases the store runs on, behind one small interface.

The store's SQL is written once, with `?` placeholders, in what SQLite and
PostgreSQL both speak (RETURNING, ON CONFLICT, WITH RECURSIVE, CASE, no
booleans). What differs lives here, one class per dialect:

- placeholders: `?` for SQLite, `$1, $2...` for PostgreSQL (rewritten here);
- connections and transactions: one aiosqlite connection under an asyncio lock
  (SQLite has one writer anyway), or an asyncpg pool, one connection per
  transaction (PostgreSQL runs many at once, from several processes);
- row locks: `Conn.lock` takes the row with SELECT ... FOR NO KEY UPDATE on PostgreSQL
  and does nothing on SQLite, where a write transaction (BEGIN IMMEDIATE)
  already holds the whole database;
- errors: each driver's errors become `storage.errors` types;
- schema versions: `PRAGMA user_version`, or the `schema_migrations` table,
  written under an advisory lock so two processes starting together do not
  both migrate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiosqlite

from storage.errors import InvalidData, SchemaTooNew, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).parent / "schema"  # SQLite's
PG_SCHEMA_DIR = SCHEMA_DIR / "postgresql"
_SCHEMA_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_xact_lock's key for migrations: "storybot" in ASCII, as a bigint.
MIGRATION_LOCK = int.from_bytes(b"storybot", "big")
PG_SCHEMES = ("postgresql", "postgres")

Row = Any  # sqlite3.Row or asyncpg.Record: both read by column name and by position
Args = Sequence[Any]


def migrations(schema_dir: Path = SCHEMA_DIR, *, baseline: bool = False) -> list[tuple[int, Path]]:
    """The numbered schema files of a folder, in order. They must follow each
    other without gaps from 0001, or, with `baseline`, from any number: the
    first file then builds the whole schema of that version in an empty
    database (PostgreSQL's folder starts where SQLite's history had got to)."""
    found = []
    for path in sorted(schema_dir.iterdir()):
        match = _SCHEMA_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    numbers = [number for number, _ in found]
    first = numbers[0] if numbers and baseline else 1
    if numbers != list(range(first, first + len(numbers))):
        raise StorageError(
            f"schema files in {schema_dir} must be numbered without gaps from "
            f"{'their first' if baseline else '0001'}: {numbers}"
        )
    return found


def is_postgres_url(where: object) -> bool:
    return isinstance(where, str) and urlsplit(where).scheme in PG_SCHEMES


def redacted(url: str) -> str:
    """The URL without its password, fit for a log line or an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Conn(ABC):
    """One transaction's statements. Every query is parameterised with `?`."""

    # Appended to a SELECT whose rows the transaction goes on to change, after
    # deciding on what it read: PostgreSQL locks them; SQLite's write
    # transaction holds the whole database already.
    for_update: ClassVar[str] = ""

    @abstractmethod
    async def execute(self, sql: str, args: Args = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    async def all(self, sql: str, args: Args = ()) -> list[Row]: ...

    async def one(self, sql: str, args: Args = ()) -> Row | None:
        rows = await self.all(sql, args)
        return rows[0] if rows else None

    @abstractmethod
    async def lock(self, table: str, key: int) -> None:
        """Hold the row `table.id = key` until the transaction ends, so that what
        the transaction reads next about it cannot change under it."""


class Database(ABC):
    dialect: ClassVar[str]
    # Several processes may use it at once (so each recovers only its own runs).
    shared: ClassVar[bool]
    description: str  # for messages: a path, or the URL without its password

    @abstractmethod
    def transaction(self, write: bool) -> contextlib.AbstractAsyncContextManager[Conn]:
        """BEGIN ... COMMIT, or ROLLBACK when the body raises; driver errors
        come out as `storage.errors` types."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    async def migrate(self, read_only: bool) -> None:
        """Apply the schema files this database has not seen, each in one
        transaction; refuse a database newer than the files."""

    @abstractmethod
    async def integrity_check(self) -> str:
        """'ok', or what is wrong."""


# --------------------------------------------------------------------- SQLite
def _translate_sqlite(error: sqlite3.Error) -> StorageError:
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


class _SQLiteConn(Conn):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Args = ()) -> int:
        cursor = await self._conn.execute(sql, args)
        try:
            return cursor.rowcount
        finally:
            await cursor.close()

    async def all(self, sql: str, args: Args = ()) -> list[Row]:
        # Every row is fetched: a RETURNING statement left half-read would keep
        # the transaction from committing.
        return list(await self._conn.execute_fetchall(sql, args))

    async def lock(self, table: str, key: int) -> None:
        return None  # BEGIN IMMEDIATE holds the whole database already


class SQLiteDatabase(Database):
    """One file, one connection shared by every task: each transaction runs
    under an asyncio lock, so statements of two tasks never interleave and no
    caller sees "database is locked". WAL journal, foreign keys on, a busy
    timeout, synchronous=NORMAL: a killed process loses no committed
    transaction, and readers never block the writer."""

    dialect = "sqlite"
    shared = False

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.description = str(path)
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, read_only: bool = False) -> SQLiteDatabase:
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
        database = cls(conn, path)
        try:
            await database._configure(read_only)
        except BaseException:
            await conn.close()
            raise
        return database

    async def _configure(self, read_only: bool) -> None:
        try:
            await self.conn.execute("PRAGMA busy_timeout = 10000")
            await self.conn.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                cursor = await self.conn.execute("PRAGMA journal_mode = WAL")
                row = await cursor.fetchone()
                if row is None or str(row[0]).lower() != "wal":
                    log.warning("database %s is not in WAL mode", self.path)
                await self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            if not read_only and _why_read_only(self.path) is not None:
                raise _open_error(self.path, error) from None
            raise StorageUnavailable(
                f"{self.path} is not a usable SQLite database: {error}"
            ) from None

    async def close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self.conn.close()

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            await self.conn.execute("ROLLBACK")

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[Conn]:
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("the database is closed")
            try:
                await self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield _SQLiteConn(self.conn)
                await self.conn.execute("COMMIT")
            except sqlite3.Error as error:
                await self._rollback()
                raise _translate_sqlite(error) from None
            except BaseException:
                await self._rollback()
                raise

    async def schema_version(self) -> int:
        cursor = await self.conn.execute("PRAGMA user_version")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self, read_only: bool) -> None:
        steps = migrations(SCHEMA_DIR)
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
            # Foreign keys off while a file runs (they cannot change inside a
            # transaction): a table built again, as SQLite's documented way to
            # change one goes, is dropped without cascading to the rows that
            # point at it. A reference the file breaks is found before the commit.
            await self.conn.execute("PRAGMA foreign_keys = OFF")
            try:
                before = await self._broken_references()
                # executescript commits whatever is open first: BEGIN is the script's.
                await self.conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number:d};"
                )
                if broken := sorted(await self._broken_references() - before):
                    table, rowid, parent = broken[0]
                    raise StorageError(
                        f"schema {path.name} would break {len(broken)} reference(s), such as"
                        f" {table} row {rowid} to {parent}; it was not applied"
                    )
                if before:  # not this file's doing (written with foreign keys off)
                    log.warning(
                        "database %s has %d reference(s) to rows that no longer exist",
                        self.path,
                        len(before),
                    )
                await self.conn.execute("COMMIT")
            except sqlite3.Error as error:
                await self._rollback()
                raise _translate_sqlite(error) from None
            except BaseException:
                await self._rollback()
                raise
            finally:
                await self.conn.execute("PRAGMA foreign_keys = ON")
            log.info("database %s upgraded to schema %d (%s)", self.path, number, path.name)

    async def _broken_references(self) -> set[tuple[str, int, str]]:
        """Rows whose foreign key names a row that does not exist (table, rowid,
        the table it names)."""
        cursor = await self.conn.execute("PRAGMA foreign_key_check")
        return {(str(row[0]), int(row[1] or 0), str(row[2])) for row in await cursor.fetchall()}

    async def integrity_check(self) -> str:
        async with self.transaction(write=False) as conn:
            row = await conn.one("PRAGMA integrity_check")
        return str(row[0]) if row else "no answer"


# ----------------------------------------------------------------- PostgreSQL
@functools.lru_cache(maxsize=2048)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2...` (never inside a '...' literal)."""
    out: list[str] = []
    count = 0
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "?" and not quoted:
            count += 1
            out.append(f"${count}")
        else:
            out.append(char)
    return "".join(out)


def _changed(status: str) -> int:
    """Rows changed, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _translate_pg(error: Exception) -> StorageError:
    import asyncpg

    text = str(error)
    if isinstance(error, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
        return InvalidData(f"refused by the database: {text}")
    if isinstance(error, asyncpg.DiskFullError):
        return StorageUnavailable("the database's disk is full; nothing was saved")
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return StorageUnavailable("the database is read-only; nothing was saved")
    if isinstance(
        error,
        asyncpg.InsufficientResourcesError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | OSError
        | TimeoutError,
    ):
        return StorageUnavailable(f"the database cannot be reached: {text or type(error).__name__}")
    return StorageError(f"database error: {text}")


class _PgConn(Conn):
    # NO KEY UPDATE: holders queue behind each other, while rows that merely
    # refer to the locked one (a new part under it) are not held up.
    for_update = " FOR NO KEY UPDATE"

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # an asyncpg connection, inside a transaction

    async def execute(self, sql: str, args: Args = ()) -> int:
        return _changed(await self._conn.execute(numbered(sql), *args))

    async def all(self, sql: str, args: Args = ()) -> list[Row]:
        return list(await self._conn.fetch(numbered(sql), *args))

    async def lock(self, table: str, key: int) -> None:
        # The table name comes from the store's own code, never from input.
        await self._conn.execute(f"SELECT 1 FROM {table} WHERE id = $1{self.for_update}", key)


class PostgresDatabase(Database):
    """An asyncpg pool: each transaction takes a connection of its own, so
    transactions of one process run side by side like those of several
    processes. Writes run at READ COMMITTED, taking row locks (`Conn.lock`)
    where a decision depends on what they read; reads run in a read-only
    REPEATABLE READ snapshot, so a page of results is one moment's."""

    dialect = "postgresql"
    shared = True

    def __init__(self, pool: Any, url: str, read_only: bool) -> None:
        self.pool = pool
        self.url = url
        self.description = redacted(url)
        self.read_only = read_only
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, read_only: bool = False, pool_size: int = 10
    ) -> PostgresDatabase:
        import asyncpg

        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                command_timeout=60,
                server_settings={"application_name": "storybot"},
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL at {redacted(url)}: {error or type(error).__name__}"
            ) from None
        except ValueError as error:  # a malformed URL
            raise StorageUnavailable(
                f"DATABASE_URL {redacted(url)} is not usable: {error}"
            ) from None
        return cls(pool, url, read_only)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.pool.close()

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[Conn]:
        import asyncpg

        if self._closed:
            raise StorageUnavailable("the database is closed")
        try:
            async with (
                self.pool.acquire() as raw,
                raw.transaction(
                    isolation="read_committed" if write else "repeatable_read",
                    readonly=self.read_only or not write,
                ),
            ):
                yield _PgConn(raw)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            if self._closed:
                raise StorageUnavailable("the database is closed") from None
            raise _translate_pg(error) from None

    async def _version(self, raw: Any) -> int:
        exists = await raw.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(await raw.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    async def schema_version(self) -> int:
        async with self.pool.acquire() as raw:
            return await self._version(raw)

    async def migrate(self, read_only: bool) -> None:
        import asyncpg

        steps = migrations(PG_SCHEMA_DIR, baseline=True)
        latest = steps[-1][0]
        try:
            async with self.pool.acquire() as raw:
                while await self._step(raw, steps, latest, read_only):
                    pass
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise _translate_pg(error) from None

    async def _step(
        self, raw: Any, steps: list[tuple[int, Path]], latest: int, read_only: bool
    ) -> bool:
        """Apply the next schema file, if any, in one transaction under the
        migration lock; False when there is nothing left to apply."""
        async with raw.transaction():
            # Held to the end of this transaction: a second process starting now
            # waits here, then finds the version this one wrote.
            await raw.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            current = await self._version(raw)
            if current > latest:
                raise SchemaTooNew(
                    f"database {self.description} has schema version {current}, newer than "
                    f"this storybot knows ({latest}): upgrade storybot or use another "
                    "DATABASE_URL"
                )
            if current == latest:
                return False
            if read_only:
                raise StorageUnavailable(
                    f"database {self.description} needs an upgrade but is opened read-only"
                )
            if current == 0:
                number, path = steps[0]  # an empty database: the baseline builds it all
            else:
                following = [(n, p) for n, p in steps if n == current + 1]
                if not following:
                    raise StorageError(
                        f"database {self.description} has schema version {current}, which "
                        f"these schema files cannot upgrade (they start at {steps[0][0]})"
                    )
                number, path = following[0]
            await raw.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
            await raw.execute(path.read_text(encoding="utf-8"))
            await raw.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                number,
                path.name,
                time.time(),
            )
        log.info("database %s upgraded to schema %d (%s)", self.description, number, path.name)
        return True

    async def integrity_check(self) -> str:
        # PostgreSQL keeps its constraints itself and checks its pages as it reads
        # them (with data checksums on); here: does the server answer, and is
        # every part in the story its parent is in (the trigger's promise).
        async with self.transaction(write=False) as conn:
            row = await conn.one(
                "SELECT COUNT(*) FROM parts c JOIN parts p ON p.id = c.parent_id"
                " WHERE c.story_id <> p.story_id"
            )
        return "ok" if row is not None and row[0] == 0 else f"{row[0] if row else '?'} bad parts"


async def open_database(
    where: Path | str, *, read_only: bool = False, pool_size: int = 10
) -> Database:
    """A SQLite file (a path, or a sqlite:/// URL) or a postgresql:// URL."""
    if is_postgres_url(where):
        return await PostgresDatabase.open(str(where), read_only=read_only, pool_size=pool_size)
    return await SQLiteDatabase.open(sqlite_path(where), read_only=read_only)


def sqlite_path(where: Path | str) -> Path:
    """sqlite:///relative/path, sqlite:////absolute/path, or a plain path."""
    if isinstance(where, str) and where.startswith("sqlite:"):
        rest = where.removeprefix("sqlite:")
        if not rest.startswith("///"):
            raise StorageUnavailable(
                f"{where} is not a SQLite URL: write sqlite:///relative/path or "
                "sqlite:////absolute/path"
            )
        return Path(rest[3:])
    return Path(where)
