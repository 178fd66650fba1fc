"""The OpenAPI document is valid, and a real server answers as it says.

schemathesis reads the document, sends a server on 127.0.0.1 (started as
`python -m app` starts it, by `app.runtime.start_http`) generated requests, good
and bad, and runs all its checks on each answer: no 5xx, only the statuses,
content types, headers and bodies described, valid input accepted, invalid
input refused, the key enforced where it is required. Once with no key (the
default server), once with one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig

from api.app import create_app, is_public
from api.openapi import spec
from app.runtime import start_http
from app.settings import Settings
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService
from tests.conftest import REPO

KEY = "openapi-test-key-0123456789"
GENRES = GenreRegistry.load(REPO / "genres.toml")
# The server's MAX_NEW_TOKENS_LIMIT: small, so each story is quick (and under the
# genres' default length, which then fits it: test_the_default_length_fits_the_limit).
MAX_NEW_TOKENS = 16
MAX_EXAMPLES = 50  # per operation, in the fuzzing phase


def _described(api_key: bool) -> dict[str, Any]:
    """The document, for the test server's own facts."""
    return spec(api_key=api_key, genres=[g.key for g in GENRES], max_new_tokens=MAX_NEW_TOKENS)


@pytest.mark.parametrize("api_key", [True, False])
def test_the_document_is_valid_openapi(api_key: bool) -> None:
    validate(_described(api_key))


def test_the_served_document_is_valid_openapi(live: Live) -> None:
    for url in (live.url, live.keyed_url):
        with urllib.request.urlopen(url + "/openapi.json", timeout=30) as response:
            validate(json.loads(response.read()))


def test_the_key_is_a_security_scheme_where_it_is_needed() -> None:
    """Not a header parameter on every route: the bearer scheme, required by the
    routes api_key_auth guards when a key is configured, and by none without."""
    keyed = spec()
    scheme = keyed["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, methods in keyed["paths"].items():
        for method, operation in methods.items():
            assert not any(p["in"] == "header" for p in operation.get("parameters", []))
            public = is_public(method.upper(), path)
            assert operation["security"] == ([] if public else [{"bearer": []}]), path
            assert ("401" in operation["responses"]) is not public, path
    for methods in _described(api_key=False)["paths"].values():
        for operation in methods.values():
            assert not operation.get("security") and "401" not in operation["responses"]


@dataclass
class Live:
    url: str  # no key
    keyed_url: str  # with KEY


@pytest.fixture(scope="module")
def live(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Two servers (no key; KEY) on one service, in a thread with its own event
    loop: schemathesis's tests are synchronous and block while they wait."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="openapi-server", daemon=True)
    thread.start()
    db = tmp_path_factory.mktemp("openapi") / "stories.sqlite3"

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)

    async def start() -> tuple[Store, GenerationPool, StoryService, list[web.AppRunner]]:
        store = await Store.open(db)
        pool = GenerationPool(
            lambda: TransformersBackend(tiny_model_dir, max_batch_size=4, threads=1),
            max_batch=4,
            max_new_tokens_limit=MAX_NEW_TOKENS,
        )
        await pool.start()
        service = StoryService(store, pool, GENRES, user_max_active=2, user_cooldown_s=0)
        runners = []
        for key in (None, KEY):
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                http_host="127.0.0.1",
                http_port=0,
                http_api_key=SecretStr(key) if key else None,
                max_new_tokens_limit=MAX_NEW_TOKENS,
                database_path=db,
            )
            runners.append(await start_http(service, settings))
        return store, pool, service, runners

    async def stop(
        store: Store, pool: GenerationPool, service: StoryService, runners: list[web.AppRunner]
    ) -> None:
        for runner in runners:
            await runner.cleanup()
        await service.wait_idle(within=30)
        await pool.aclose()
        await store.close()

    try:
        store, pool, service, runners = run(start())
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        raise
    open_port, keyed_port = (
        next(addr[1] for addr in runner.addresses if isinstance(addr, tuple)) for runner in runners
    )
    try:
        yield Live(f"http://127.0.0.1:{open_port}", f"http://127.0.0.1:{keyed_port}")
    finally:
        run(stop(store, pool, service, runners))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _config(api_key: bool) -> SchemathesisConfig:
    project: dict[str, Any] = {
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,  # the same requests on every run
            "database": "none",  # and no replay of an earlier run's failures
            "no-shrink": True,  # a failure is reported as found, at once
        },
        "request-timeout": 30,
    }
    if api_key:
        # Sent through the document's security scheme, as a client would.
        project["auth"] = {"openapi": {"bearer": {"bearer": KEY}}}
    return SchemathesisConfig.from_dict(project)


OPEN = schemathesis.openapi.from_dict(_described(api_key=False), config=_config(api_key=False))
KEYED = schemathesis.openapi.from_dict(_described(api_key=True), config=_config(api_key=True))

_WHOLE_NUMBERS = ("max_new_tokens", "top_k", "seed")

_SETTINGS = hypothesis.settings(
    deadline=None,  # a story takes what it takes; time is bounded by the example count
    suppress_health_check=list(hypothesis.HealthCheck),
)


@OPEN.parametrize()
@_SETTINGS
def test_the_server_without_a_key_answers_as_described(case: Any, live: Live) -> None:
    case.call_and_validate(base_url=live.url)


@KEYED.parametrize()
@_SETTINGS
def test_the_server_with_a_key_answers_as_described(case: Any, live: Live) -> None:
    case.call_and_validate(base_url=live.keyed_url)


@pytest.mark.parametrize("api_key", [False, True], ids=["no key", "key"])
def test_sequences_of_calls_answer_as_described(live: Live, api_key: bool) -> None:
    """Stateful: a story made by POST / is read and continued through the links
    of its answer (use_after_free, ensure_resource_availability, ...)."""
    url = live.keyed_url if api_key else live.url

    class Calls((KEYED if api_key else OPEN).as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": url}

    Calls.run(
        settings=hypothesis.settings(
            max_examples=8,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("field", _WHOLE_NUMBERS)
def test_whole_floats_are_whole_numbers(live: Live, field: str) -> None:
    status, body = _post(live.url + "/", {"input": "Once", "max_new_tokens": 3, field: 3.0})
    assert status == 200, body


async def test_the_default_length_fits_the_limit(
    make_pool: Any, store: Store, genres: GenreRegistry
) -> None:
    async with make_pool(max_new_tokens_limit=20) as pool:
        service = StoryService(store, pool, genres)
        client = TestClient(TestServer(create_app(service)))
        await client.start_server()
        try:
            # No length asked for: the genre's default (120) is cut to the limit,
            # for a new story and for its continuation.
            response = await client.post("/", json={"input": "Once"})
            assert response.status == 200, await response.text()
            story_id = (await response.json())["story_id"]
            response = await client.post(f"/stories/{story_id}/continue")
            assert response.status == 200, await response.text()
            parts = await store.path_to((await store.latest_part(story_id)).id)
            assert [p.params["max_new_tokens"] for p in parts if p.params] == [20, 20]
            # A length somebody asks for is theirs: over the limit it is refused.
            response = await client.post("/", json={"input": "Once", "max_new_tokens": 21})
            assert response.status == 422, await response.text()
        finally:
            await client.close()
            await service.wait_idle()
