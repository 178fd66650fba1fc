"""The story store's write throughput (not a test): `python -m bench.store`.

How many stories a second the store can record, on SQLite and on PostgreSQL,
as storybot writes them. One story here is the five write transactions a
Discord story costs the store: create_story (the story, its prompt, its run),
the run starting (set_run_state), its message recorded (add_message), the part
stored (finish_run) and Discord's confirmation of the final edit (set_shown).

Each database is measured with 1 writer, with `--writers` writers at once in
one process (one Store, as storybot shares it between its tasks), and with
`--processes` processes of that many writers each on the same database (as
several storybot processes would share it; for SQLite: one file, which is
what SQLite is not made for). Every row lands on disk as the bot would have
it: SQLite in WAL mode with synchronous=NORMAL, PostgreSQL with its defaults
(fsync and synchronous_commit on), a throwaway server of Debian's package
started here (`--postgres-url` to measure another one, whose database must be
empty or storybot's).

Prints a Markdown table; `--write` puts it in bench/RESULTS.md as the section
"## Store writes", replacing an earlier one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench.results import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Store writes"
WRITES_PER_STORY = 5


@dataclass(frozen=True)
class Row:
    database: str
    setup: str  # "1 writer", "16 writers", "4 processes x 16 writers"
    stories: int
    seconds: float
    p95_ms: float  # one story's five writes, start to end

    @property
    def per_second(self) -> float:
        return self.stories / self.seconds


async def _writer(store: object, until: float, latencies: list[float]) -> int:
    from storage.models import GeneratedPart
    from storage.store import Store

    assert isinstance(store, Store)
    done = 0
    message_id = int.from_bytes(os.urandom(6), "big")
    while time.perf_counter() < until:
        began = time.perf_counter()
        story, _, run = await store.create_story(
            prompt="The detective reached the crime scene and looked around",
            genre="crime",
            author_id=1000 + done % 50,
            guild_id=1,
            channel_id=2,
        )
        await store.set_run_state(run.id, "generating")
        message_id += 1
        await store.add_message(
            message_id, 2, story_id=story.id, run_id=run.id, shows=f"run:{run.id}:generating"
        )
        part = await store.finish_run(
            run.id,
            GeneratedPart(
                " It was late, and the rain had not stopped since noon. " * 8,
                requested_by=1000,
                params={"max_new_tokens": 120, "top_k": 50},
                seed=done,
                model_id="gpt2",
                new_tokens=120,
            ),
        )
        await store.set_shown(message_id, f"part:{part.id}:0")
        latencies.append(time.perf_counter() - began)
        done += 1
    return done


async def measure(where: str, writers: int, seconds: float) -> tuple[int, float, list[float]]:
    """Stories written by `writers` tasks on one Store in `seconds`."""
    from storage.store import Store

    async with await Store.open(where, pool_size=max(2, writers)) as store:
        latencies: list[float] = []
        began = time.perf_counter()
        until = began + seconds
        counts = await asyncio.gather(*(_writer(store, until, latencies) for _ in range(writers)))
        return sum(counts), time.perf_counter() - began, latencies


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] * 1000 if ordered else 0.0


async def _processes(where: str, processes: int, writers: int, seconds: float) -> Row:
    from storage.store import Store

    async with await Store.open(where):  # migrate once, before they start together
        pass
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.store",
            "--worker",
            where,
            "--writers",
            str(writers),
            "--seconds",
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    outputs = [await child.communicate() for child in children]
    stories, longest, latencies = 0, 0.0, []
    for (out, _), child in zip(outputs, children, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"a writer process failed ({child.returncode})")
        result = json.loads(out)
        stories += result["stories"]
        longest = max(longest, result["seconds"])
        latencies += result["latencies"]
    return Row(
        _kind(where),
        f"{processes} processes x {writers} writers",
        stories,
        longest,
        _p95(latencies),
    )


def _kind(where: str) -> str:
    return "PostgreSQL" if where.startswith("postgres") else "SQLite"


async def bench(where: str, writers: int, processes: int, seconds: float) -> list[Row]:
    rows = []
    for count in (1, writers):
        stories, took, latencies = await measure(where, count, seconds)
        label = "1 writer" if count == 1 else f"{count} writers"
        rows.append(Row(_kind(where), label, stories, took, _p95(latencies)))
        print(
            f"  {rows[-1].database}, {label}: {rows[-1].per_second:.0f} stories/s", file=sys.stderr
        )
    if processes > 1:
        rows.append(await _processes(where, processes, writers, seconds))
        print(
            f"  {rows[-1].database}, {rows[-1].setup}: {rows[-1].per_second:.0f} stories/s",
            file=sys.stderr,
        )
    return rows


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from bench.pg_server import create_database, running_server

    with running_server(fast=False) as server:
        yield asyncio.run(create_database(server, "bench"))


async def _relaxed(url: str) -> str:
    """A second database on the same server whose commits do not wait for the
    WAL to reach the disk (synchronous_commit=off): crash-safe like SQLite's
    synchronous=NORMAL, which may also lose the last commits when the machine,
    not the process, fails."""
    import asyncpg

    from bench.pg_server import replace_database

    relaxed = replace_database(url, "bench_relaxed")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP DATABASE IF EXISTS bench_relaxed")
        await conn.execute("CREATE DATABASE bench_relaxed")
        await conn.execute("ALTER DATABASE bench_relaxed SET synchronous_commit = off")
    finally:
        await conn.close()
    return relaxed


def table(rows: list[Row], seconds: float) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; {seconds:g} s per row;"
        f" one story = {WRITES_PER_STORY} write transactions.",
        "",
        "| database | writers | stories/s | writes/s | p95 per story |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.database} | {row.setup} | {row.per_second:,.0f} |"
            f" {row.per_second * WRITES_PER_STORY:,.0f} | {row.p95_ms:.1f} ms |"
        )
    return "\n".join(lines)


def write_results(text: str) -> None:
    write_section(HEADING, f"{HEADING}\n\n`python -m bench.store`\n\n{text}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store",
        description="Stories a second the store records, on SQLite and on PostgreSQL.",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per row (default 5)")
    parser.add_argument("--writers", type=int, default=16, help="writers at once (default 16)")
    parser.add_argument(
        "--processes", type=int, default=4, help="processes sharing a database (default 4)"
    )
    parser.add_argument(
        "--postgres-url", help="measure this PostgreSQL database instead of a throwaway server"
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one process of a --processes row
    args = parser.parse_args(argv)
    if args.worker:
        stories, took, latencies = asyncio.run(measure(args.worker, args.writers, args.seconds))
        print(json.dumps({"stories": stories, "seconds": took, "latencies": latencies}))
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="storybot-bench-") as folder:
        print("SQLite:", file=sys.stderr)
        rows += asyncio.run(
            bench(str(Path(folder) / "bench.sqlite3"), args.writers, args.processes, args.seconds)
        )
    if not args.no_postgres:
        print("PostgreSQL:", file=sys.stderr)
        with _postgres(args.postgres_url) as url:
            rows += asyncio.run(bench(url, args.writers, args.processes, args.seconds))
            if args.postgres_url is None:
                print("PostgreSQL, synchronous_commit=off:", file=sys.stderr)
                relaxed = asyncio.run(_relaxed(url))
                for row in asyncio.run(bench(relaxed, args.writers, args.processes, args.seconds)):
                    rows.append(replace(row, database="PostgreSQL, synchronous_commit=off"))
    text = table(rows, args.seconds)
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
