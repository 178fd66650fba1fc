"""Copy a SQLite database into an empty PostgreSQL database, and check the copy.

    python -m storage.copy data/storybot.sqlite3 postgresql://storybot:secret@db/storybot

Stop storybot first (a story written meanwhile would be missed). The SQLite
file is only read. The PostgreSQL database gets storybot's schema (as at a
start), then every table's rows with their ids, in one transaction: parents
before the rows that refer to them, PostgreSQL's binary COPY, batch by batch.
Then, before anything is committed, the copy is checked: the rows of every
table are counted on both sides, and a sample of texts (parts, titles, notes)
is compared character by character. Any difference rolls it all back. The id
sequences continue after the highest id SQLite ever gave (not only the highest
left), so no id is given twice.

Two things change on the way: runs lose their owner (the instance that wrote
them is gone; the first storybot to start on PostgreSQL takes the unfinished
ones), and a NUL character, which PostgreSQL cannot store (storybot no longer
writes one), becomes U+FFFD; the count of such texts is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.db import SCHEMA_DIR, is_postgres_url, migrations, redacted
from storage.errors import StorageError
from storage.store import Store

BATCH_ROWS = 2000
SAMPLE_TEXTS = 200
SKIPPED = {"write_probe"}  # a row there is a probe in flight, never data
# Each text column compared on a sample, and the table's key.
TEXTS = {
    "parts": ("id", ("text", "memory", "authors_note")),
    "stories": ("id", ("title", "memory", "authors_note", "genre")),
    "runs": ("id", ("error",)),
}
# Identity columns whose sequence must continue after the copied ids.
IDENTITIES = ("stories", "parts", "runs", "votes")


class CopyFailed(Exception):
    """The copy was not made, or did not match; nothing was committed."""


@dataclass
class Report:
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (sqlite, pg)
    texts_checked: int = 0
    nul_replaced: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        width = max((len(t) for t in self.counts), default=5)
        out = [f"{'table':<{width}}  {'sqlite':>9}  {'postgresql':>10}"]
        for table, (lite, pg) in self.counts.items():
            out.append(f"{table:<{width}}  {lite:>9}  {pg:>10}" + ("" if lite == pg else "  !"))
        out.append(f"{self.texts_checked} sampled texts are the same on both sides")
        if self.nul_replaced:
            out.append(f"{self.nul_replaced} texts held a NUL character, copied as U+FFFD")
        return out


def tables_in_order(lite: sqlite3.Connection) -> list[str]:
    """The tables, each after the tables its foreign keys refer to."""
    names = [
        row[0]
        for row in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
        if row[0] not in SKIPPED
    ]
    needs = {
        name: {row[2] for row in lite.execute(f"PRAGMA foreign_key_list({name})")} - {name}
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and needs[n] <= set(ordered)]
        if not ready:
            raise CopyFailed(f"the foreign keys of {sorted(set(names) - set(ordered))} form a loop")
        ordered += ready
    return ordered


def _highest_id_given(lite: sqlite3.Connection, table: str) -> int:
    """The highest id SQLite ever gave in `table` (AUTOINCREMENT keeps it, also
    once that row is deleted): PostgreSQL counts on from there, so an id in an
    old message's button never names a new row."""
    row = lite.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row else 0


def columns_of(lite: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]


class _Cleaner:
    """Values as PostgreSQL takes them."""

    def __init__(self) -> None:
        self.nul_replaced = 0

    def row(self, table: str, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for index, value in enumerate(values):
            if isinstance(value, str) and "\x00" in value:
                values[index] = value.replace("\x00", "\ufffd")
                self.nul_replaced += 1
        if table == "runs":
            values[columns.index("owner")] = None  # that process is gone
        return tuple(values)


def _batches(
    lite: sqlite3.Connection, table: str, columns: list[str]
) -> Iterator[list[tuple[Any, ...]]]:
    order = "id" if "id" in columns else "rowid"
    cursor = lite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
    while rows := cursor.fetchmany(BATCH_ROWS):
        yield [tuple(row) for row in rows]


async def copy(
    sqlite_path: Path,
    url: str,
    *,
    sample: int = SAMPLE_TEXTS,
    progress: bool = True,
    seed: int | None = None,
) -> Report:
    """Copy, check, commit; raise `CopyFailed` (nothing committed) otherwise."""
    import asyncpg
    from tqdm import tqdm

    began = time.perf_counter()
    try:
        lite = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        lite.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        raise CopyFailed(f"{sqlite_path} cannot be read as a SQLite database: {error}") from None
    try:
        version = int(lite.execute("PRAGMA user_version").fetchone()[0])
        latest = migrations(SCHEMA_DIR)[-1][0]
        if version != latest:
            raise CopyFailed(
                f"{sqlite_path} has schema version {version}, this storybot {latest}: "
                + (
                    "start this storybot on it once (it upgrades the file), then copy"
                    if version < latest
                    else "copy it with the storybot that wrote it"
                )
            )
        # The target gets the schema as a storybot start gives it.
        async with await Store.open(url):
            pass
        tables = tables_in_order(lite)
        counts = {t: int(lite.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}
        cleaner = _Cleaner()
        report = Report()
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                for table in tables:
                    if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                        raise CopyFailed(
                            f"{redacted(url)} is not empty (table {table} has rows): "
                            "copy into a new database"
                        )
                bar = tqdm(
                    total=sum(counts.values()),
                    unit="rows",
                    disable=not progress,
                    file=sys.stderr,
                    desc="copying",
                )
                with bar:
                    for table in tables:
                        columns = columns_of(lite, table)
                        bar.set_postfix_str(table)
                        for batch in _batches(lite, table, columns):
                            records = [cleaner.row(table, columns, row) for row in batch]
                            await conn.copy_records_to_table(
                                table, records=records, columns=columns
                            )
                            bar.update(len(records))
                for table in IDENTITIES:
                    if table in tables:
                        await conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" GREATEST(COALESCE((SELECT MAX(id) FROM {table}), 0), $1) + 1,"
                            " false)",
                            _highest_id_given(lite, table),
                        )
                for table in tables:
                    copied = int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))
                    report.counts[table] = (counts[table], copied)
                wrong = [t for t, (a, b) in report.counts.items() if a != b]
                if wrong:
                    raise CopyFailed(f"row counts differ in {', '.join(wrong)}")
                report.texts_checked = await _compare_texts(lite, conn, sample, seed)
        finally:
            await conn.close()
        report.nul_replaced = cleaner.nul_replaced
        report.seconds = time.perf_counter() - began
        return report
    finally:
        lite.close()


async def _compare_texts(lite: sqlite3.Connection, conn: Any, sample: int, seed: int | None) -> int:
    """Compare `sample` random rows' texts of each table in TEXTS; the count."""
    chooser = random.Random(seed)
    checked = 0
    for table, (key, columns) in TEXTS.items():
        ids = [row[0] for row in lite.execute(f"SELECT {key} FROM {table}")]
        for row_id in chooser.sample(ids, min(sample, len(ids))):
            listed = ", ".join(columns)
            want = lite.execute(
                f"SELECT {listed} FROM {table} WHERE {key} = ?", (row_id,)
            ).fetchone()
            got = await conn.fetchrow(f"SELECT {listed} FROM {table} WHERE {key} = $1", row_id)
            for name, a, b in zip(columns, want, got or [None] * len(columns), strict=True):
                a = a.replace("\x00", "\ufffd") if isinstance(a, str) else a
                if a != b:
                    raise CopyFailed(f"{table} {row_id}: {name} differs after the copy")
                checked += 1
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m storage.copy",
        description=(
            "Copy storybot's SQLite database into an empty PostgreSQL database, in one "
            "transaction, and check it: row counts of every table and a sample of texts. "
            "Stop storybot first; the SQLite file is only read."
        ),
        epilog=(
            "Then set DATABASE_URL to the PostgreSQL URL and start storybot "
            "(README, 'When to move to PostgreSQL')."
        ),
    )
    parser.add_argument("sqlite_path", type=Path, help="the SQLite file (DATABASE_PATH)")
    parser.add_argument(
        "postgres_url", help="postgresql://user:password@host:5432/database (an empty database)"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=SAMPLE_TEXTS,
        help=f"rows per table whose texts are compared (default {SAMPLE_TEXTS})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not is_postgres_url(args.postgres_url):
        parser.error("the second argument must be a postgresql:// URL")
    try:
        report = asyncio.run(
            copy(args.sqlite_path, args.postgres_url, sample=args.sample, progress=not args.quiet)
        )
    except (CopyFailed, StorageError) as error:
        print(f"error: {error}; nothing was copied", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print(f"copied into {redacted(args.postgres_url)} in {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
