"""A throwaway PostgreSQL server for the tests and `bench.store`: Debian's
binaries, a cluster in a temporary folder, on 127.0.0.1 at a free port, stopped
and deleted at the end.

As root (CI, containers) the server runs as another user, which PostgreSQL
insists on: the `postgres` user Debian's package creates, else `nobody`. The
tests' cluster trades durability for speed (`fast`: fsync off; a test never
survives a crash of the machine); the benchmark's keeps PostgreSQL's defaults.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FAST = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off",)


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb and pg_ctl, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


MISSING = (
    "PostgreSQL is not installed (no initdb and pg_ctl in /usr/lib/postgresql/*/bin): "
    "apt-get install postgresql, as .ci/run does"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def _runner() -> dict[str, object]:
    """subprocess arguments that run a command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid}
    raise RuntimeError("running as root, and there is no postgres or nobody user to run as")


@contextlib.contextmanager
def running_server(*, fast: bool = True) -> Iterator[PostgresServer]:
    """Start a fresh cluster, yield where it listens, stop it and delete it."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError(MISSING)
    runner = _runner()
    folder = Path(tempfile.mkdtemp(prefix="storybot-pg-"))
    data = folder / "data"
    if runner:
        os.chown(folder, int(runner["user"]), int(runner["group"]))  # type: ignore[call-overload]
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    user = "storybot"
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd=folder, check=False, **runner
        )  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        if fast:
            options += " " + FAST[0]
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        try:
            yield PostgresServer("127.0.0.1", port, user, folder)
        finally:
            with contextlib.suppress(RuntimeError):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def create_database(server: PostgresServer, name: str) -> str:
    """A new empty database on `server`; its URL."""
    import asyncpg

    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.url(name)


def replace_database(url: str, name: str) -> str:
    """The same server's URL for another database."""
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"
