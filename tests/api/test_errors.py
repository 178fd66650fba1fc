"""api.errors: every failure becomes `{"error": {"code", "message"}}` with its status.

The domain error classes are found by walking their modules, so a new error
class fails `test_every_domain_error_is_mapped` until it has a row in EXPECTED
(and from_domain maps it): none falls to 500 unless the table says so.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import generation.errors as generation_errors
import storage.errors as storage_errors
import stories.errors as stories_errors
from api import openapi
from api.errors import ApiError, error_response, from_domain, json_errors

MODULES: tuple[ModuleType, ...] = (generation_errors, storage_errors, stories_errors)

# status, and the Retry-After a sample instance (retry_after=12.3) gets; None: no header.
EXPECTED: dict[str, tuple[int, str | None]] = {
    # generation.errors
    "GenerationError": (500, None),  # deliberate: a base class, a bug if it escapes
    "InvalidRequest": (422, None),
    "PromptTooLong": (422, None),
    "Busy": (503, "13"),  # ceil: never too early
    "Cancelled": (409, None),
    "TimedOut": (504, None),
    "PoolClosed": (503, "30"),
    "ModelLoadError": (500, None),  # deliberate: a start-up error, not a request's
    "EngineUnavailable": (502, "12"),
    "EngineRefused": (500, None),  # deliberate: the operator's configuration is wrong
    "EngineStartError": (500, None),  # deliberate: a start-up error
    # storage.errors
    "StorageError": (500, None),  # deliberate: a base class
    "NotFound": (404, None),
    "InvalidData": (422, None),
    "StorageUnavailable": (503, "30"),
    "SchemaTooNew": (500, None),  # deliberate: a start-up error
    # stories.errors
    "StoryError": (400, None),
    "InvalidPrompt": (422, None),
    "EmptyPrompt": (422, None),
    "OverlongPrompt": (422, None),
    "ControlCharacter": (422, None),
    "NotAllowed": (403, None),
    "AgeRestricted": (403, None),
    "UserLimit": (429, "12"),
    "NothingToContinue": (409, None),
    "Conflict": (409, None),
    "StillWriting": (409, None),
    "StoryDeleted": (404, None),
    "ContentFiltered": (422, None),
    "InvalidNotes": (422, None),
    "ChannelClosed": (403, None),
    "GenreDisabled": (403, None),
    "SharingOff": (403, None),
    "InvalidSetting": (422, None),
    "QuotaReached": (429, "12"),
    "PartHidden": (409, None),
    "WritingElsewhere": (409, None),
    "Claimed": (409, None),
}

# Constructor arguments by name, for the classes that need some.
SAMPLE_ARGS: dict[str, Any] = {
    "message": "Something went sideways.",
    "retry_after": 12.3,
    "reason": "the queue is full",
    "limit": 100,
    "character": "\x07",
    "part_id": 5,
    "by": "continue",
}


def domain_errors() -> list[type[BaseException]]:
    return [
        cls
        for module in MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]


def sample(cls: type[BaseException]) -> BaseException:
    """An instance of `cls`, built from SAMPLE_ARGS by parameter name."""
    own = [c for c in cls.__mro__ if c not in (Exception, BaseException, object)]
    if not any("__init__" in vars(c) for c in own):  # Exception's: one message
        return cls(SAMPLE_ARGS["message"])
    parameters = inspect.signature(cls).parameters.values()
    kwargs = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name in SAMPLE_ARGS:
            kwargs[parameter.name] = SAMPLE_ARGS[parameter.name]
        else:
            assert parameter.default is not parameter.empty, (
                f"{cls.__name__}({parameter.name}=...): add a sample value to SAMPLE_ARGS"
            )
    return cls(**kwargs)


def test_every_domain_error_is_mapped() -> None:
    found = {cls.__name__ for cls in domain_errors()}
    assert len(found) == len(domain_errors()), "two error classes share a name"
    unmapped = found - set(EXPECTED)
    assert not unmapped, (
        f"new error classes {sorted(unmapped)}: add them to EXPECTED with their status "
        "(and to api.errors.from_domain, so they do not fall to 500)"
    )
    assert not set(EXPECTED) - found, "EXPECTED names classes that no longer exist"


@pytest.mark.parametrize("cls", domain_errors(), ids=lambda cls: cls.__name__)
def test_from_domain_maps_each_error(cls: type[BaseException]) -> None:
    error = sample(cls)
    status, retry_after = EXPECTED[cls.__name__]
    mapped = from_domain(error)
    assert (mapped.status, mapped.code) == (status, cls.code)  # type: ignore[attr-defined]
    assert mapped.code != "internal_error"  # a domain error keeps its own code
    assert mapped.message == str(error) and mapped.message
    assert mapped.headers.get("Retry-After") == retry_after
    assert set(mapped.headers) <= {"Retry-After"}


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, None), (0.0, None), (0.3, "1"), (1.6, "2"), (90, "90")]
)
def test_user_limit_retry_after_is_whole_seconds_and_at_least_one(
    retry_after: float | None, header: str | None
) -> None:
    mapped = from_domain(stories_errors.UserLimit("Slow down.", retry_after))
    assert mapped.status == 429 and mapped.headers.get("Retry-After") == header


@pytest.mark.parametrize(("given", "header"), [(0.01, "1"), (1.2, "2"), (30, "30")])
def test_busy_retry_after_rounds_up(given: float, header: str) -> None:
    assert from_domain(generation_errors.Busy(given)).headers["Retry-After"] == header


@pytest.mark.parametrize(("given", "header"), [(0.2, "1"), (2.4, "2"), (45.5, "46")])
def test_engine_unavailable_retry_after(given: float, header: str) -> None:
    error = generation_errors.EngineUnavailable(retry_after=given)
    assert from_domain(error).headers["Retry-After"] == header


def test_documented_statuses_are_the_ones_the_table_expects() -> None:
    """Each code the OpenAPI document names under a status is mapped to that status."""
    by_code = {
        cls.code: EXPECTED[cls.__name__][0]  # type: ignore[attr-defined]
        for cls in domain_errors()
    }
    for status, reason in openapi._REASONS.items():
        for code in re.findall(r"`([a-z_]+)`", reason):
            if code in by_code:
                assert by_code[code] == status, (code, status)


def test_prompt_codes_the_http_interface_can_answer_are_documented() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", openapi._REASONS[422]))
    raised_for_prompts = {
        cls.code
        for cls in (
            stories_errors.EmptyPrompt,
            stories_errors.OverlongPrompt,
            stories_errors.ControlCharacter,
            stories_errors.ContentFiltered,
        )
    }
    assert raised_for_prompts <= documented, sorted(raised_for_prompts - documented)


def where_it_failed() -> None:
    raise ValueError("the secret detail")


def test_an_unexpected_error_is_500_with_a_reference_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        where_it_failed()
    except ValueError as caught:
        error = caught
    with caplog.at_level(logging.ERROR, "api.errors"):
        mapped = from_domain(error)
    assert (mapped.status, mapped.code) == (500, "internal_error")
    match = re.fullmatch(r"Something went wrong \(reference ([0-9a-f]{8})\)\.", mapped.message)
    assert match, mapped.message
    assert "secret" not in mapped.message and not mapped.headers
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and match[1] in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "Traceback (most recent call last)" in caplog.text
    assert "where_it_failed" in caplog.text and "the secret detail" in caplog.text


def test_each_unexpected_error_gets_its_own_reference() -> None:
    references = {from_domain(RuntimeError()).message for _ in range(20)}
    assert len(references) == 20


def test_error_response_is_json_and_can_close_the_connection() -> None:
    response = error_response(ApiError(400, "bad_body", "Broken.", {"X-A": "1"}, close=True))
    assert response.status == 400 and response.content_type == "application/json"
    assert response.headers["X-A"] == "1"
    assert response.text is not None
    assert json.loads(response.text) == {"error": {"code": "bad_body", "message": "Broken."}}
    assert response.keep_alive is False


# ------------------------------------------------------------------ middleware
MAX_BODY = 100


async def thing(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def upload(request: web.Request) -> web.Response:
    body = await request.read()  # raises 413 past client_max_size
    return web.Response(text=str(len(body)))


async def domain(request: web.Request) -> web.Response:
    classes = {cls.__name__: cls for cls in domain_errors()}
    raise sample(classes[request.match_info["name"]])


async def api_error(request: web.Request) -> web.Response:
    raise ApiError(400, "bad_body", "The body cannot be read.", {"X-Why": "chunk"}, close=True)


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/thing")


async def bad_request(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(reason="Nope")


async def legal(request: web.Request) -> web.Response:
    raise web.HTTPUnavailableForLegalReasons(link=None)


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    app.router.add_get("/thing", thing)
    app.router.add_post("/upload", upload)
    app.router.add_get("/domain/{name}", domain)
    app.router.add_get("/api-error", api_error)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/bad", bad_request)
    app.router.add_get("/legal", legal)
    app.router.add_get("/boom", boom)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def error_of(response: Any) -> dict[str, str]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return dict(body["error"])


async def test_no_route_is_a_json_404_that_names_it(client: TestClient[Any, Any]) -> None:
    response = await client.get("/nope/here")
    assert response.status == 404
    assert await error_of(response) == {
        "code": "not_found",
        "message": "No route for GET /nope/here.",
    }


async def test_wrong_method_is_a_json_405_that_keeps_allow(client: TestClient[Any, Any]) -> None:
    response = await client.delete("/thing")
    assert response.status == 405
    assert (await error_of(response))["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(",")) >= {"GET"}


async def test_a_large_body_is_a_json_413(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/upload", data=b"x" * MAX_BODY)).status == 200
    response = await client.post("/upload", data=b"x" * (MAX_BODY + 1))
    assert response.status == 413
    assert await error_of(response) == {
        "code": "body_too_large",
        "message": "The request body is too large.",
    }


async def test_other_http_errors_keep_their_reason(client: TestClient[Any, Any]) -> None:
    response = await client.get("/bad")
    assert response.status == 400
    assert await error_of(response) == {"code": "bad_request", "message": "Nope"}
    response = await client.get("/legal")
    assert response.status == 451
    assert (await error_of(response))["code"] == "http_error"


async def test_a_redirect_passes_through(client: TestClient[Any, Any]) -> None:
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/thing"


async def test_an_api_error_keeps_its_headers_and_closes(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api-error")
    assert response.status == 400 and response.headers["X-Why"] == "chunk"
    assert response.headers.get("Connection", "").lower() == "close"
    assert (await error_of(response))["code"] == "bad_body"


@pytest.mark.parametrize("name", ["Busy", "StillWriting", "NotFound", "EngineUnavailable"])
async def test_domain_errors_through_the_middleware(
    client: TestClient[Any, Any], name: str
) -> None:
    response = await client.get(f"/domain/{name}")
    status, retry_after = EXPECTED[name]
    assert response.status == status
    assert response.headers.get("Retry-After") == retry_after
    cls = {c.__name__: c for c in domain_errors()}[name]
    assert (await error_of(response))["code"] == cls.code  # type: ignore[attr-defined]


async def test_an_unexpected_error_through_the_middleware(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "api.errors"):
        response = await client.get("/boom")
    assert response.status == 500
    error = await error_of(response)
    assert error["code"] == "internal_error" and "boom" not in error["message"]
    assert "Traceback" in caplog.text and "in boom" in caplog.text
