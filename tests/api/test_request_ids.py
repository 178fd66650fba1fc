"""X-Request-Id: generated when absent, kept when it is a short safe token,
replaced otherwise; in the response header, in an error's body and in every
log line of the request (the access log's included)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from app.logs import ContextFilter
from stories.service import StoryService

GENERATED = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
async def client_with(service: StoryService) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**kwargs: Any) -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(service, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


class Records(logging.Handler):
    """Every record, with the log context fields ContextFilter adds."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, request_id: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "request_id", None) == request_id]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def test_generated_when_absent_and_kept_when_safe(client_with: Callable[..., Any]) -> None:
    client = await client_with()
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert GENERATED.fullmatch(first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    for sent in ("abc-123", "Trace.id:7_x", "a" * 64):
        answer = await client.get("/healthz", headers={"X-Request-Id": sent})
        assert answer.headers["X-Request-Id"] == sent


@pytest.mark.parametrize(
    "sent", ["has space", "a" * 65, "<script>", "semi;colon", "quote'd", "", "ünï"]
)
async def test_an_unsafe_one_is_replaced(client_with: Callable[..., Any], sent: str) -> None:
    client = await client_with()
    answer = await client.get("/healthz", headers={"X-Request-Id": sent.encode().decode("latin-1")})
    assert GENERATED.fullmatch(answer.headers["X-Request-Id"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/route", None, 404),
        ("POST", "/", {"no": "input"}, 422),
        ("GET", "/stories/999", None, 404),
        ("DELETE", "/", None, 405),
    ],
)
async def test_errors_carry_it_in_the_body_and_header(
    client_with: Callable[..., Any], method: str, path: str, body: Any, status: int
) -> None:
    client = await client_with()
    answer = await client.request(method, path, json=body, headers={"X-Request-Id": "err-1"})
    assert answer.status == status
    assert answer.headers["X-Request-Id"] == "err-1"
    assert (await answer.json())["error"]["request_id"] == "err-1"
    generated = await client.request(method, path, json=body)
    rid = generated.headers["X-Request-Id"]
    assert (await generated.json())["error"]["request_id"] == rid


async def test_a_key_refusal_carries_it_too(client_with: Callable[..., Any]) -> None:
    client = await client_with(api_key="request-id-test-key-0123")
    answer = await client.get("/readyz", headers={"X-Request-Id": "no-key"})
    assert answer.status == 401 and answer.headers["X-Request-Id"] == "no-key"
    assert (await answer.json())["error"]["request_id"] == "no-key"


async def test_every_log_line_of_a_request_names_it(
    client_with: Callable[..., Any], records: Records, service: StoryService
) -> None:
    client = await client_with()
    prompt = "The lighthouse keeper counted the ships"
    answer = await client.post("/", json={"input": prompt}, headers={"X-Request-Id": "story-1"})
    story_id = (await answer.json())["story_id"]
    await service.wait_idle()  # the run's own task logs the stored part
    mine = records.of("story-1")
    messages = [r.getMessage() for r in mine]
    assert any("queued at position" in m for m in messages), messages
    assert any("tokens in" in m for m in messages), messages  # from the run's task
    assert any(m.startswith("POST / 200 ") for m in messages), messages  # the access log
    from_the_service = [r for r in mine if r.name.startswith("stories")]
    assert from_the_service and all(r.story_id == story_id for r in from_the_service)  # type: ignore[attr-defined]
    # The same connection's next request has its own id, and no story of the last.
    await client.get("/healthz", headers={"X-Request-Id": "next-1"})
    (line,) = records.of("next-1")
    assert line.getMessage().startswith("GET /healthz 200 ")
    assert line.story_id is None  # type: ignore[attr-defined]
    # The access log has no body: the prompt is nowhere in it.
    assert not any(prompt in r.getMessage() for r in records.records if r.name == "api.access")


async def test_the_access_log_is_one_line_per_request_and_can_be_off(
    client_with: Callable[..., Any], records: Records
) -> None:
    client = await client_with()
    await client.get("/stories/abc%0Adef", headers={"X-Request-Id": "odd-path"})
    (line,) = [r for r in records.of("odd-path") if r.name == "api.access"]
    assert line.getMessage().startswith("GET /stories/abc%0Adef 404 ")  # one line stays one
    quiet = await client_with(access_log=False)
    await quiet.get("/healthz", headers={"X-Request-Id": "quiet-1"})
    assert records.of("quiet-1") == []


async def test_a_streamed_answer_names_its_request(client_with: Callable[..., Any]) -> None:
    client = await client_with()
    body = {"input": "Once", "stream": True, "max_new_tokens": 4}
    answer = await client.post("/", json=body, headers={"X-Request-Id": "sse-1"})
    assert answer.headers["X-Request-Id"] == "sse-1"
    assert "event: done" in await answer.text()
