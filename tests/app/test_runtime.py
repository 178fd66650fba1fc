"""`python -m bot` as a user runs it: a real process, a real port, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port


def env_for(model_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_"))}
    env.update(
        MODEL_DIR=str(model_dir),
        DATABASE_PATH=str(tmp_path / "db" / "s.sqlite3"),
        HTTP_PORT=str(free_port()),
        LOG_LEVEL="INFO",
        GENERATION_THREADS="1",
    )
    env.update(extra)
    return env


def start(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_http(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the HTTP interface did not come up")


def post(port: int, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_http_only_start_serve_and_clean_shutdown(
    tiny_model_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    env = env_for(tiny_model_dir, tmp_path)
    port = int(env["HTTP_PORT"])
    process = start(env, REPO)
    try:
        wait_http(port, process)
        answer = post(port, {"input": "The detective reached the crime scene"})
        assert str(answer["output"]).startswith("The detective reached the crime scene")
    finally:
        process.send_signal(sig)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "serving the HTTP interface only" in output and "stopped cleanly" in output
    assert (tmp_path / "db" / "s.sqlite3").exists()


def test_shutdown_marks_unfinished_stories_interrupted(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import sqlite3

    env = env_for(tiny_model_dir, tmp_path, GENERATION_TIMEOUT_S="600")
    port = int(env["HTTP_PORT"])
    db = Path(env["DATABASE_PATH"])
    process = start(env, REPO)
    try:
        wait_http(port, process)
        # Leave a part "generating" in the file, as a crash would.
        with sqlite3.connect(db) as conn:
            conn.executescript(
                "INSERT INTO stories (id, author_id, source, genre, title, created_at,"
                " updated_at) VALUES (1, 1, 'discord', 'crime', 't', 0, 0);"
                "INSERT INTO parts (id, story_id, kind, text, created_at)"
                " VALUES (1, 1, 'prompt', 't', 0);"
                "INSERT INTO runs (story_id, parent_id, kind, state, created_at, updated_at)"
                " VALUES (1, 1, 'start', 'generating', 0, 0);"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    process = start(env, REPO)  # the restart finds it
    try:
        wait_http(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state FROM runs").fetchall() == [("interrupted",)]
    assert "interrupted" in output


def run_once(env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=cwd, env=env, text=True, capture_output=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_model_folder(tmp_path: Path) -> None:
    line = one_line_error(run_once(env_for(tmp_path / "nothing", tmp_path)))
    assert "does not exist" in line and "download_model.py" in line


def test_partial_and_corrupt_model_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    line = one_line_error(run_once(env_for(partial, tmp_path)))
    assert "incomplete" in line and "model.safetensors" in line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.is_file():
            (corrupt / item.name).write_bytes(item.read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    line = one_line_error(run_once(env_for(corrupt, tmp_path)))
    assert "could not be loaded" in line


def test_bad_database_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = env_for(tiny_model_dir, tmp_path, DATABASE_PATH=str(blocker / "db.sqlite3"))
    line = one_line_error(run_once(env))
    assert "DATABASE_PATH" in line and "not a folder" in line


def test_port_already_in_use(tiny_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run_once(env_for(tiny_model_dir, tmp_path, HTTP_PORT=str(port))))
    assert "already in use" in line and str(port) in line


def test_invalid_setting_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    line = one_line_error(run_once(env_for(tiny_model_dir, tmp_path, QUEUE_SIZE="lots")))
    assert "QUEUE_SIZE" in line


async def test_sigterm_answers_every_waiting_caller_and_exits_in_time(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """300 requests queued behind one running story: at SIGTERM each waiting
    caller gets a JSON 503 with Retry-After, and the process is gone within the
    grace period plus 2 s, whatever is queued. (The torch backend, the slowest
    to stop: the tiny model on ONNX Runtime answers faster than 300 arrive.)"""
    import asyncio

    import aiohttp

    grace = 1.0
    env = env_for(
        tiny_model_dir,
        tmp_path,
        BACKEND="transformers",
        MAX_BATCH_SIZE="1",
        QUEUE_SIZE="400",
        SHUTDOWN_GRACE_S=str(grace),
        MAX_NEW_TOKENS_LIMIT="400",
    )
    port = int(env["HTTP_PORT"])
    process = start(env, REPO)
    await asyncio.to_thread(wait_http, port, process, 120)
    # Read its log as it comes: 300 requests write more than a pipe holds, and
    # a process blocked writing its log answers nobody.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def ask(n: int) -> tuple[int, dict[str, str], object]:
            body = {"input": f"Story {n}", "max_new_tokens": 400, "seed": n}
            async with session.post(f"{url}/", json=body) as response:
                return response.status, dict(response.headers), await response.json()

        calls = [asyncio.create_task(ask(n)) for n in range(300)]

        async def queued() -> int:
            async with session.get(f"{url}/readyz") as response:
                return int((await response.json())["queue_depth"])

        deadline = time.monotonic() + 60
        while await queued() < 290:  # polling the server: it is another process
            assert time.monotonic() < deadline, "the requests never queued up"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(*calls), 30)
        await asyncio.to_thread(process.wait, 30)
        exited = time.monotonic() - signalled
    reader.join(10)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert exited < grace + 2.0, f"exit took {exited:.1f} s"
    refused = [(headers, body) for status, headers, body in answers if status == 503]
    assert len(refused) >= 290
    assert {status for status, _, _ in answers} <= {200, 503}
    for headers, body in refused:
        assert int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert "Traceback" not in output


async def test_sigterm_with_a_stream_in_flight_does_not_wait_a_minute(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """aiohttp waits 60 s for open requests by default; a stop must not (compose
    allows 15 s): the stream ends, its part is stored or marked, and the process
    exits within the grace period plus 2 s."""
    import asyncio
    import sqlite3

    import aiohttp

    grace = 1.0
    env = env_for(tiny_model_dir, tmp_path, BACKEND="transformers", SHUTDOWN_GRACE_S=str(grace))
    port = int(env["HTTP_PORT"])
    process = start(env, REPO)
    await asyncio.to_thread(wait_http, port, process, 120)
    events: list[str] = []
    async with aiohttp.ClientSession() as session:
        body = {"input": "A long one", "max_new_tokens": 400, "stream": True}
        async with session.post(f"http://127.0.0.1:{port}/", json=body) as response:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    events.append(line[7:])
                    if line == "event: text" and events.count("text") == 1:
                        process.send_signal(signal.SIGTERM)
                        signalled = time.monotonic()
    await asyncio.to_thread(process.wait, 30)
    exited = time.monotonic() - signalled
    assert process.returncode == 0
    assert exited < grace + 2.0, f"exit took {exited:.1f} s"
    assert events[-1] in ("done", "error")  # the stream was ended, not cut
    with sqlite3.connect(env["DATABASE_PATH"]) as conn:
        (state,) = conn.execute("SELECT state FROM runs").fetchone()
    assert state in ("done", "interrupted")


async def test_stories_go_to_postgresql_when_database_url_says_so(
    tiny_model_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    import asyncio

    import asyncpg

    env = env_for(tiny_model_dir, tmp_path, DATABASE_URL=postgres_url, INSTANCE_ID="bot-a")
    port = int(env["HTTP_PORT"])
    process = start(env, REPO)
    try:
        await asyncio.to_thread(wait_http, port, process)
        answer = await asyncio.to_thread(post, port, {"input": "The detective reached"})
        assert str(answer["output"]).startswith("The detective reached")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, output
    assert f"stories in {postgres_url} (postgresql), instance bot-a" in output
    assert not (tmp_path / "db").exists()  # DATABASE_URL wins over DATABASE_PATH
    conn = await asyncpg.connect(postgres_url)
    try:
        runs = await conn.fetch("SELECT state, owner FROM runs")
        texts = await conn.fetch("SELECT text FROM parts ORDER BY id")
    finally:
        await conn.close()
    assert [(r["state"], r["owner"]) for r in runs] == [("done", "bot-a")]
    assert texts[0]["text"] == "The detective reached"
