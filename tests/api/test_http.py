"""The HTTP interface through aiohttp's test client, on the tiny model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.openapi import spec
from generation.pool import GenerationPool
from storage.store import Store
from stories.genres import GenreRegistry
from stories.moderation import BLOCKLIST, read_blocklist
from stories.service import StoryService
from tests.conftest import GatedBackend, wait_for

SPEC = spec()


def check(
    response_json: Any, path: str, method: str, status: int, content_type: str = "application/json"
) -> None:
    """Validate a response body against the OpenAPI schema for that route."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} {status} not described"
    schema = responses[str(status)]["content"][content_type]["schema"]
    resolver_schema = {**schema, "components": SPEC["components"]}
    jsonschema.validate(response_json, resolver_schema)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(service: StoryService, **kwargs: Any) -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(service, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(service: StoryService, client_for: Callable[..., Any]) -> TestClient[Any, Any]:
    return await client_for(service, max_body_bytes=64 * 1024)


async def test_old_contract_input_output(client: TestClient[Any, Any]) -> None:
    text = "The detective reached the crime scene"
    response = await client.post("/", json={"input": text})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    check(body, "/", "post", 200)
    assert body["output"].startswith(text) and len(body["output"]) > len(text)
    assert {"story_id", "genre", "seed", "tokens", "seconds"} <= set(body)
    # A client that knows only the old contract still reads "output".
    assert isinstance(body["output"], str)


@pytest.mark.parametrize("stream", [False, True])
async def test_output_is_the_stored_text(client: TestClient[Any, Any], stream: bool) -> None:
    """The output is the story as stored: the input without its surrounding white
    space (characters kept exactly), then the continuation; streamed or not."""
    text = "  Spaces and ünïcödé 😀 and a trailing space \n"
    response = await client.post("/", json={"input": text, "max_new_tokens": 8, "stream": stream})
    if stream:
        events = _parse_sse(await response.text())
        assert events[0] == ("story", {"story_id": events[-1][1]["story_id"], "part": 1})
        body = events[-1][1]
    else:
        body = await response.json()
    assert body["output"].startswith(text.strip())
    stored = await (await client.get(f"/stories/{body['story_id']}")).json()
    assert body["output"] == stored["text"]
    assert stored["parts"][0]["kind"] == "prompt" and stored["parts"][0]["text"] == text.strip()


async def test_optional_fields_are_used(client: TestClient[Any, Any]) -> None:
    request = {
        "input": "Mara",
        "genre": "romance",
        "max_new_tokens": 7,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "seed": 1234,
    }
    first = await (await client.post("/", json=request)).json()
    second = await (await client.post("/", json=request)).json()
    assert first["genre"] == "romance" and first["seed"] == 1234 and first["tokens"] <= 7
    assert first["output"] == second["output"]  # same seed, same text


async def test_streaming_server_sent_events(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/", json={"input": "Tom ran", "stream": True, "max_new_tokens": 20}
    )
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    events = _parse_sse(await response.text())
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("text") >= 2
    streamed = "".join(data["text"] for kind, data in events if kind == "text")
    final = events[-1][1]
    check(final, "/", "post", 200)
    assert final["output"].startswith("Tom ran")
    # The final text is the streamed text trimmed to its last full sentence.
    assert ("Tom ran" + streamed).startswith(final["output"].rstrip())


async def test_accept_header_also_streams(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/", json={"input": "Ada"}, headers={"Accept": "text/event-stream"}
    )
    assert response.headers["Content-Type"] == "text/event-stream"
    assert _parse_sse(await response.text())[-1][0] == "done"


def _parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        match = re.match(r"event: (\w+)\ndata: (.*)", block, re.S)
        assert match, block
        events.append((match.group(1), json.loads(match.group(2))))
    return events


async def test_continue_get_and_markdown(client: TestClient[Any, Any]) -> None:
    first = await (
        await client.post("/", json={"input": "The captain", "max_new_tokens": 10})
    ).json()
    story_id = first["story_id"]
    response = await client.post(f"/stories/{story_id}/continue", json={"max_new_tokens": 10})
    second = await response.json()
    check(second, "/stories/{id}/continue", "post", 200)
    assert second["output"].startswith(first["output"]) and second["story_id"] == story_id
    empty_body = await client.post(f"/stories/{story_id}/continue")
    assert empty_body.status == 200
    story = await (await client.get(f"/stories/{story_id}")).json()
    check(story, "/stories/{id}", "get", 200)
    assert story["story"]["source"] == "api" and story["story"]["author_id"] is None
    assert len(story["parts"]) == 4 and story["story"]["status"] == "done"
    markdown = await client.get(f"/stories/{story_id}.md")
    assert markdown.status == 200 and markdown.headers["Content-Type"].startswith("text/markdown")
    assert "**The captain**" in await markdown.text()


async def test_health_ready_and_openapi(
    client: TestClient[Any, Any], service: StoryService, app_routes: None
) -> None:
    health = await client.get("/healthz")
    check(await health.json(), "/healthz", "get", 200)
    ready = await client.get("/readyz")
    body = await ready.json()
    check(body, "/readyz", "get", 200)
    assert body["ready"] and body["model"] == "tiny-gpt2" and body["backend"] == "transformers"
    served = await (await client.get("/openapi.json")).json()
    # The document describes this server: its genres, its limit, no key asked.
    here = spec(
        api_key=False,
        genres=[genre.key for genre in service.genres],
        max_new_tokens=service.pool.max_new_tokens_limit,
    )
    assert served == json.loads(json.dumps(here))
    assert "security" not in served["paths"]["/"]["post"]


@pytest.fixture
def app_routes(service: StoryService) -> None:
    """Every route the app serves is described in the OpenAPI document."""
    app = create_app(service)
    described = {
        (path.replace("{id}", "X"), method.upper())
        for path, methods in SPEC["paths"].items()
        for method in methods
    }
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        path = re.sub(r"\{id[^}]*\}", "X", path)
        assert (path, route.method) in described, f"{route.method} {path} missing from openapi"
    assert len(described) == len([r for r in app.router.routes() if r.method != "HEAD"])


BAD = [
    (b'{"input": ', 400, "malformed_json"),
    (b"not json at all", 400, "malformed_json"),
    (b"", 400, "malformed_json"),
    (b"[1, 2]", 400, "not_an_object"),
    (b'"just a string"', 400, "not_an_object"),
    (b"{}", 422, "missing_input"),
    (b'{"input": ""}', 422, "empty_input"),
    (b'{"input": "   "}', 422, "empty_input"),
    (b'{"input": 5}', 422, "wrong_type"),
    (b'{"input": "x", "genre": "cooking"}', 422, "unknown_genre"),
    (b'{"input": "x", "genre": 3}', 422, "wrong_type"),
    (b'{"input": "x", "temperature": 0}', 422, "invalid_request"),
    (b'{"input": "x", "temperature": "hot"}', 422, "wrong_type"),
    (b'{"input": "x", "top_p": 2}', 422, "invalid_request"),
    (b'{"input": "x", "max_new_tokens": 0}', 422, "invalid_request"),
    (b'{"input": "x", "max_new_tokens": true}', 422, "wrong_type"),
    (b'{"input": "x", "stream": "yes"}', 422, "wrong_type"),
    (b'{"input": "\\ud800"}', 422, "control_character"),  # a lone surrogate
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
async def test_bad_input_gets_json_errors(
    client: TestClient[Any, Any], body: bytes, status: int, code: str
) -> None:
    response = await client.post("/", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    payload = await response.json()
    check(payload, "/", "post", status)
    assert payload["error"]["code"] == code and payload["error"]["message"]
    assert (await client.get("/healthz")).status == 200  # still serving


async def test_the_built_in_filter_refuses_a_prompt_without_naming_the_word(
    client: TestClient[Any, Any],
) -> None:
    terms, _ = read_blocklist(BLOCKLIST)
    term = terms[0]  # read from the list: the test names no slur itself
    for prompt in (f"They shouted {term} at him.", f"They shouted {term.upper()}!"):
        response = await client.post("/", json={"input": prompt})
        assert response.status == 422
        payload = await response.json()
        check(payload, "/", "post", 422)
        assert payload["error"]["code"] == "content_filtered"
        assert term.casefold() not in payload["error"]["message"].casefold()
    response = await client.get("/stories/1")
    assert response.status == 404  # nothing was stored


async def test_memory_and_authors_note_are_kept_and_changed_by_continue(
    client: TestClient[Any, Any],
) -> None:
    first = await client.post(
        "/", json={"input": "The rain fell.", "memory": "Ada, a detective.", "max_new_tokens": 8}
    )
    assert first.status == 200, await first.text()
    story_id = (await first.json())["story_id"]
    later = await client.post(
        f"/stories/{story_id}/continue", json={"authors_note": "Someone lies.", "max_new_tokens": 8}
    )
    assert later.status == 200, await later.text()
    story = await (await client.get(f"/stories/{story_id}")).json()
    check(story, "/stories/{id}", "get", 200)
    assert story["story"]["memory"] == "Ada, a detective."
    assert story["story"]["authors_note"] == "Someone lies."
    parts = story["parts"]
    assert parts[1]["authors_note"] == "" and parts[2]["authors_note"] == "Someone lies."
    assert parts[2]["memory"] == "Ada, a detective."
    too_long = await client.post("/", json={"input": "x", "memory": "m" * 501})
    assert too_long.status == 422
    assert (await too_long.json())["error"]["code"] == "invalid_notes"
    wrong = await client.post("/", json={"input": "x", "authors_note": 5})
    assert wrong.status == 422 and (await wrong.json())["error"]["code"] == "wrong_type"


async def test_a_refused_continue_leaves_the_notes_as_they_were(
    client: TestClient[Any, Any],
) -> None:
    """The notes a continue brings are saved only with the part they write: a
    continue refused for its other options, or for the prompt its new memory
    makes too long, changes nothing, and the next continue still works."""
    first = await client.post(
        "/", json={"input": "The rain fell.", "memory": "Ada.", "max_new_tokens": 4}
    )
    assert first.status == 200, await first.text()
    story_id = (await first.json())["story_id"]
    path = f"/stories/{story_id}/continue"
    for body, code in (
        ({"memory": "Changed.", "max_new_tokens": 10**6}, "invalid_request"),
        ({"authors_note": "Changed.", "temperature": 99}, "invalid_request"),
        ({"memory": "Changed.", "seed": -4}, "invalid_request"),
        ({"memory": "\U0001f9d1\u200d\U0001f680" * 160, "max_new_tokens": 1}, "prompt_too_long"),
    ):
        refused = await client.post(path, json=body)
        assert refused.status == 422, (body, await refused.text())
        assert (await refused.json())["error"]["code"] == code, body
        story = (await (await client.get(f"/stories/{story_id}")).json())["story"]
        assert (story["memory"], story["authors_note"]) == ("Ada.", ""), body
    later = await client.post(path, json={"max_new_tokens": 4})
    assert later.status == 200, await later.text()
    changed = await client.post(path, json={"authors_note": "Tense.", "max_new_tokens": 4})
    assert changed.status == 200, await changed.text()
    story = (await (await client.get(f"/stories/{story_id}")).json())["story"]
    assert (story["memory"], story["authors_note"]) == ("Ada.", "Tense.")


async def test_oversized_body_unknown_story_and_method(client: TestClient[Any, Any]) -> None:
    big = json.dumps({"input": "x" * 70_000})
    response = await client.post("/", data=big, headers={"Content-Type": "application/json"})
    assert response.status == 413
    check(await response.json(), "/", "post", 413)
    for path in ("/stories/999999", "/stories/abc", "/stories/999999.md"):
        missing = await client.get(path)
        assert missing.status == 404, path
        assert (await missing.json())["error"]["code"] == "not_found"
    gone = await client.post("/stories/424242/continue", json={})
    assert gone.status == 404
    wrong = await client.get("/")
    assert wrong.status == 405 and (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_api_key_is_required_when_configured(
    service: StoryService, client_for: Callable[..., Any]
) -> None:
    client = await client_for(service, api_key="s3cret-key")
    assert (await client.get("/healthz")).status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        response = await client.post("/", json={"input": "x"}, headers=headers)
        assert response.status == 401
        check(await response.json(), "/", "post", 401)
        assert "s3cret" not in await response.text()
    ok = await client.post(
        "/",
        json={"input": "x", "max_new_tokens": 3},
        headers={"Authorization": "Bearer s3cret-key"},
    )
    assert ok.status == 200
    # The document, public, tells a client that this server wants the key.
    described = await (await client.get("/openapi.json")).json()
    assert described["paths"]["/"]["post"]["security"] == [{"bearer": []}]
    assert "401" in described["paths"]["/"]["post"]["responses"]


async def test_cors_is_off_unless_configured(
    service: StoryService, client_for: Callable[..., Any]
) -> None:
    plain = await client_for(service)
    response = await plain.get("/healthz", headers={"Origin": "https://example.org"})
    assert "Access-Control-Allow-Origin" not in response.headers
    allowed = await client_for(service, cors_origins=["https://example.org"])
    response = await allowed.get("/healthz", headers={"Origin": "https://example.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://example.org"


async def test_full_queue_answers_503_with_retry_after(
    make_pool: Callable[..., GenerationPool],
    store: Store,
    genres: GenreRegistry,
    client_for: Callable[..., Any],
) -> None:
    async with make_pool(gated=True, max_batch=1, max_queue=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        service = StoryService(store, pool, genres)
        client = await client_for(service)
        backend.hold()
        running = asyncio.create_task(client.post("/", json={"input": "one"}))
        await asyncio.to_thread(backend.entered.wait, 10)
        queued = asyncio.create_task(client.post("/", json={"input": "two"}))
        await wait_for(lambda: pool.queue_depth == 1)
        busy = await client.post("/", json={"input": "three"})
        assert busy.status == 503 and int(busy.headers["Retry-After"]) >= 1
        check(await busy.json(), "/", "post", 503)
        backend.release()
        assert (await running).status == 200 and (await queued).status == 200


async def test_concurrent_requests_are_batched(
    service: StoryService, client: TestClient[Any, Any]
) -> None:
    pool = service.pool
    before = pool.stats.largest_batch
    responses = await asyncio.gather(
        *(
            client.post("/", json={"input": f"Story {i}", "max_new_tokens": 30, "seed": i})
            for i in range(6)
        )
    )
    assert all(r.status == 200 for r in responses)
    assert pool.stats.largest_batch > max(1, before)


async def test_a_client_that_disconnects_loses_nothing(
    service: StoryService, client: TestClient[Any, Any]
) -> None:
    response = await client.post("/", json={"input": "Gone", "stream": True, "max_new_tokens": 40})
    await response.content.readline()  # read a little, then hang up
    response.close()
    await service.wait_idle()
    runs = await service.store._all("SELECT state FROM runs")
    assert [row["state"] for row in runs] == ["done"]
