"""The HTTP service as `python -m bot` serves it (`start_http`: the capped site,
the read time limit, the host check) against hostile and unlucky clients, over
raw sockets on loopback, so nothing a client library would tidy up is hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.runtime import start_http
from app.settings import Settings
from stories.service import StoryService
from tests.conftest import wait_for

KEY = "k" * 24


@dataclass
class Server:
    runner: web.AppRunner
    port: int
    db: Path

    def snapshot(self) -> list[str]:
        """Everything stored, as SQL: a bad request must change none of it."""
        with sqlite3.connect(self.db) as conn:
            return list(conn.iterdump())


async def serve(service: StoryService, tmp_path: Path, **settings: Any) -> Server:
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        http_port=0,
        database_path=tmp_path / "stories.sqlite3",
        **settings,
    )
    runner = await start_http(service, config)
    port = next(addr[1] for addr in runner.addresses if isinstance(addr, tuple))
    return Server(runner, port, tmp_path / "stories.sqlite3")


@pytest.fixture
async def server(service: StoryService, tmp_path: Path) -> AsyncIterator[Server]:
    started = await serve(service, tmp_path, http_read_timeout_s=2.0, http_max_connections=20)
    yield started
    await started.runner.cleanup()


@pytest.fixture
async def keyed(service: StoryService, tmp_path: Path) -> AsyncIterator[Server]:
    started = await serve(service, tmp_path, http_api_key=KEY, http_read_timeout_s=2.0)
    yield started
    await started.runner.cleanup()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(port: int, raw: bytes, within: float = 10.0) -> Answer:
    """Send `raw` bytes, read until the server closes; parse the one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Answer(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out


def request(
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    *,
    host: str | None = "127.0.0.1",
) -> bytes:
    """Raw HTTP/1.1 bytes; JSON content type when there is a body, unless
    `headers` says otherwise (None as a value leaves a header out)."""
    if isinstance(body, str):
        body = body.encode()
    given: dict[str, str | None] = {"Host": host, "Connection": "close"}
    if body is not None:
        given["Content-Type"] = "application/json"
        given["Content-Length"] = str(len(body))
    given.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in given.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post(body: Any, path: str = "/", **kwargs: Any) -> bytes:
    return request(
        "POST", path, body if isinstance(body, bytes | str) else json.dumps(body), **kwargs
    )


def nested(depth: int) -> str:
    return '{"input": ' + "[" * depth + "]" * depth + "}"


@dataclass
class Case:
    name: str
    raw: bytes
    status: int | tuple[int, ...]
    code: str | None = None  # the error code in the JSON body, when it is ours
    keyed: bool = False  # against the server that requires an API key
    extra: dict[str, str] = field(default_factory=dict)


S = "/stories/1"  # the story each run starts with
BAD_INPUT: list[Case] = [
    # Bodies that are not JSON objects.
    Case("malformed JSON", post('{"input": '), 400, "malformed_json"),
    Case("JSON array", post([1, 2]), 400, "not_an_object"),
    Case("JSON string", post('"once"'), 400, "not_an_object"),
    Case("JSON null", post("null"), 400, "not_an_object"),
    Case("empty JSON body", post(""), 400, "malformed_json"),
    Case("whitespace body", post("   \n"), 400, "malformed_json"),
    Case("deep JSON", post(nested(10_000)), 400, "malformed_json"),
    Case("invalid UTF-8", post(b'{"input": "\xff\xfe"}'), 400, "malformed_json"),
    Case("latin-1 body", post('{"input": "café"}'.encode("latin-1")), 400, "malformed_json"),
    Case("NaN", post('{"input": "x", "temperature": NaN}'), 422),
    Case("Infinity", post('{"input": "x", "top_p": Infinity}'), 422),
    # Fields.
    Case("no input", post({}), 422),
    Case("input a number", post({"input": 5}), 422),
    Case("input null", post({"input": None}), 422),
    Case("empty input", post({"input": ""}), 422),
    Case("blank input", post({"input": " \n\t "}), 422),
    Case("zero-width input", post({"input": "\u200b\u200d"}), 422),
    Case("NUL in input", post({"input": "a\u0000b"}), 422),
    Case("escape in input", post({"input": "a\u001b[31mred"}), 422),
    Case("lone surrogate", post('{"input": "a\\ud800b"}'), 422),
    Case("lone surrogate in memory", post('{"input": "Hi", "memory": "\\ud83d"}'), 422),
    Case("lone surrogate in note", post('{"input": "Hi", "authors_note": "\\udc00"}'), 422),
    Case("C1 terminal escape in input", post({"input": "a\u009b31mred"}), 422),
    Case("C1 control in memory", post({"input": "Hi", "memory": "a\u0085b"}), 422),
    Case("huge prompt", post({"input": "word " * 2000}), 422),
    Case("unknown genre", post({"input": "x", "genre": "nope"}), 422),
    Case("genre a list", post({"input": "x", "genre": ["horror"]}), 422),
    Case("max_new_tokens 0", post({"input": "x", "max_new_tokens": 0}), 422),
    Case("max_new_tokens huge", post({"input": "x", "max_new_tokens": 10**9}), 422),
    Case("max_new_tokens float", post({"input": "x", "max_new_tokens": 2.5}), 422),
    Case("max_new_tokens bool", post({"input": "x", "max_new_tokens": True}), 422),
    Case("max_new_tokens string", post({"input": "x", "max_new_tokens": "5"}), 422),
    Case("temperature negative", post({"input": "x", "temperature": -1}), 422),
    Case("temperature huge", post({"input": "x", "temperature": 1e308}), 422),
    Case("top_p above 1", post({"input": "x", "top_p": 1.5}), 422),
    Case("top_k negative", post({"input": "x", "top_k": -3}), 422),
    Case("top_k 2^70", post({"input": "x", "top_k": 2**70}), 422),
    Case("seed 2^64", post({"input": "x", "seed": 2**64}), 422),
    Case("seed negative", post({"input": "x", "seed": -1}), 422),
    Case("stream a string", post({"input": "x", "stream": "yes"}), 422),
    # Transport.
    Case("body over the limit", post({"input": "x" * 70_000}), 413),
    Case("text/plain body", post({"input": "x"}, headers={"Content-Type": "text/plain"}), 415),
    Case(
        "form body",
        post("input=x", headers={"Content-Type": "application/x-www-form-urlencoded"}),
        415,
    ),
    Case("no content type", post({"input": "x"}, headers={"Content-Type": None}), 415),
    Case(
        "gzip that is not",
        post({"input": "x"}, headers={"Content-Encoding": "gzip"}),
        400,
        "bad_body",
    ),
    Case(
        "deflate that is not",
        post({"input": "x"}, headers={"Content-Encoding": "deflate"}),
        400,
        "bad_body",
    ),
    Case("brotli (not installed)", post({"input": "x"}, headers={"Content-Encoding": "br"}), 400),
    Case(
        "bad chunked body",
        request(
            "POST", "/", None, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        + b"zz\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    Case("garbage request line", b"HELLO\r\n\r\n", 400),
    Case(
        "TLS on a plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400
    ),
    Case("header too long", request("GET", S, headers={"X-Long": "a" * 20_000}), (400, 431)),
    # Routes and ids.
    Case("unknown route", request("GET", "/nope"), 404, "not_found"),
    Case("wrong method", request("PUT", S, "{}"), 405),
    Case("GET /", request("GET", "/"), 405),
    Case("unknown story", request("GET", "/stories/999999"), 404, "not_found"),
    Case("huge id", request("GET", "/stories/" + "9" * 40), 404, "not_found"),
    Case("negative id", request("GET", "/stories/-1"), 404, "not_found"),
    Case("superscript id", request("GET", "/stories/%C2%B2"), 404, "not_found"),
    Case("superscript .md", request("GET", "/stories/%C2%B2.md"), 404, "not_found"),
    Case("superscript continue", request("POST", "/stories/%C2%B2/continue"), 404, "not_found"),
    Case("fullwidth id", request("GET", "/stories/%EF%BC%91"), 404, "not_found"),
    Case("Arabic-Indic id", request("GET", "/stories/%D9%A1"), 404, "not_found"),
    Case("bad percent escape", request("GET", "/stories/%ff"), 404, "not_found"),
    Case("continue unknown story", request("POST", "/stories/999999/continue"), 404),
    Case("continue malformed JSON", post("{", "/stories/1/continue"), 400, "malformed_json"),
    Case("continue array", post([1], "/stories/1/continue"), 400, "not_an_object"),
    # Browsers and host names.
    Case(
        "foreign host (DNS rebinding)",
        request("GET", S, host="evil.example"),
        421,
        "misdirected_request",
    ),
    Case("foreign host on POST", post({"input": "x"}, host="evil.example:5000"), 421),
    Case("no Host header", request("GET", S, host=None), (400, 421)),
    Case(
        "cross-site POST",
        post({"input": "x"}, headers={"Origin": "https://evil.example"}),
        403,
        "cross_origin",
    ),
    Case(
        "cross-site text/plain",
        post(
            {"input": "x"}, headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}
        ),
        (403, 415),
    ),
    Case("Origin null", post({"input": "x"}, headers={"Origin": "null"}), 403, "cross_origin"),
    # The API key.
    Case("no key", post({"input": "x"}), 401, keyed=True),
    Case(
        "wrong key",
        post({"input": "x"}, headers={"Authorization": "Bearer " + "j" * 24}),
        401,
        keyed=True,
    ),
    Case(
        "key not UTF-8",
        post({"input": "x"}, headers={"Authorization": "Bearer \xff\xfe"}),
        401,
        keyed=True,
    ),
    Case(
        "key prefix",
        post({"input": "x"}, headers={"Authorization": "Bearer " + KEY[:-1]}),
        401,
        keyed=True,
    ),
    Case(
        "basic auth", post({"input": "x"}, headers={"Authorization": "Basic eDp5"}), 401, keyed=True
    ),
]


async def test_bad_input_is_refused_and_changes_nothing(
    server: Server, keyed: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """More than 40 kinds of bad input: each gets its 4xx (JSON, with our code
    where the request reached the app), the server stays up, nothing stored
    changes, and the log has no traceback."""
    assert len(BAD_INPUT) >= 40
    caplog.set_level(logging.INFO)
    # One story to aim at (story 1), on both servers' databases.
    for target in (server, keyed):
        raw = post(
            {"input": "The lighthouse", "max_new_tokens": 4},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert (await exchange(target.port, raw)).status == 200
    before = {id(s): s.snapshot() for s in (server, keyed)}

    wrong: list[str] = []
    for case in BAD_INPUT:
        target = keyed if case.keyed else server
        answer = await exchange(target.port, case.raw)
        allowed = case.status if isinstance(case.status, tuple) else (case.status,)
        if answer.status not in allowed:
            wrong.append(f"{case.name}: {answer.status} {answer.body[:120]!r}")
            continue
        if case.code is not None:
            body = answer.json()
            if body["error"]["code"] != case.code or not body["error"]["message"]:
                wrong.append(f"{case.name}: {body}")
        health = await exchange(target.port, request("GET", "/healthz"))
        if health.status != 200:
            wrong.append(f"{case.name}: /healthz then answered {health.status}")
    assert not wrong, "\n".join(wrong)
    for target in (server, keyed):
        assert target.snapshot() == before[id(target)]
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_good_request_still_works_beside_them(server: Server) -> None:
    answer = await exchange(server.port, post({"input": "The ship sailed", "max_new_tokens": 4}))
    assert answer.status == 200 and answer.json()["output"].startswith("The ship sailed")
    gz = gzip.compress(json.dumps({"input": "The ship sank", "max_new_tokens": 4}).encode())
    answer = await exchange(server.port, post(gz, headers={"Content-Encoding": "gzip"}))
    assert answer.status == 200 and answer.json()["output"].startswith("The ship sank")
    # Other spellings of the allowed host names are the same names.
    for host in ("localhost:5000", "LOCALHOST", "[::1]:5000", "127.0.0.1."):
        assert (await exchange(server.port, request("GET", "/stories/1", host=host))).status == 200
    # Probes dial an address of their own: health and readiness answer any Host.
    assert (await exchange(server.port, request("GET", "/healthz", host="10.0.0.7"))).status == 200


async def test_slow_headers_are_cut_off_within_the_limit(server: Server) -> None:
    """A slowloris client, sending a header line now and then, never finishing:
    the server closes the connection within HTTP_READ_TIMEOUT_S (2 s here)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = loop.time()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)

    dripping = asyncio.create_task(trickle())
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
    finally:
        dripping.cancel()
        writer.close()
    assert loop.time() - started < 2.0 + 1.5


async def test_a_slow_body_gets_408(server: Server) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = loop.time()
    head = request("POST", "/", None, {"Content-Type": "application/json", "Content-Length": "100"})
    writer.write(head + b'{"input": ')
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"request_timeout" in data
    assert loop.time() - started < 2.0 + 1.5


async def test_idle_connections_are_capped(server: Server) -> None:
    """20 connections allowed: 20 idle ones are held, the 21st gets 503 at once,
    and once they go, the server answers again."""
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
    try:
        await _wait_connections(server, 20)
        answer = await exchange(server.port, request("GET", "/healthz"), within=5)
        assert answer.status == 503 and answer.json()["error"]["code"] == "too_many_connections"
        assert answer.headers["retry-after"] == "1"
    finally:
        for _, writer in held:
            writer.close()
    await _wait_connections(server, 0)
    assert (await exchange(server.port, request("GET", "/healthz"))).status == 200


async def _wait_connections(server: Server, count: int) -> None:
    assert server.runner.server is not None
    await wait_for(lambda: len(server.runner.server.connections) == count)  # type: ignore[union-attr]


async def test_a_client_that_leaves_mid_stream_is_one_quiet_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post({"input": "A long road", "max_new_tokens": 200, "stream": True}))
    await reader.readuntil(b"event: text")  # the story has started streaming
    writer.transport.abort()  # gone, mid-stream
    await wait_for(lambda: "stream before the end" in caplog.text)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # The story was kept (the text written so far) and the server goes on.
    answer = await exchange(server.port, request("GET", "/stories/1"))
    assert answer.status == 200
