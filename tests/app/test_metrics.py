"""GET /metrics on the real HTTP app and the tiny model: it parses as the
Prometheus text format, and its counters move as stories are written, refused
and cancelled, without a word of anyone's text in a label."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.telemetry import metrics_app
from app.metrics import Metrics
from generation.pool import GenerationPool
from storage.store import Store
from stories.genres import GenreRegistry
from stories.moderation import BLOCKLIST, read_blocklist
from stories.service import Requester, StoryService
from stories.telemetry import OUTCOMES
from tests.conftest import GatedBackend, wait_for

KEY = "metrics-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (the official parser)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Metered:
    client: TestClient[Any, Any]
    service: StoryService
    pool: GenerationPool
    metrics: Metrics

    @property
    def backend(self) -> GatedBackend:
        assert isinstance(self.pool.backend, GatedBackend)
        return self.pool.backend

    async def scrape(self) -> Samples:
        response = await self.client.get("/metrics", headers=AUTH)
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


@pytest.fixture
async def metered(
    store: Store, make_pool: Callable[..., GenerationPool], genres: GenreRegistry
) -> AsyncIterator[Metered]:
    """Wired as app.runtime wires it, on a registry of the test's own."""
    metrics = Metrics(CollectorRegistry())
    store.on_write = metrics.on_write
    pool = make_pool(gated=True, max_batch=2, max_queue=1)
    await pool.start()
    assert isinstance(pool.backend, GatedBackend)
    pool.backend.inner.on_step = metrics.on_step
    metrics.watch(pool)
    service = StoryService(
        store, pool, genres, user_max_active=5, user_cooldown_s=0, observer=metrics
    )
    app = create_app(service, api_key=KEY, observer=metrics, metrics=metrics)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Metered(client, service, pool, metrics)
    finally:
        pool.backend.release()
        await client.close()
        await service.wait_idle()
        await pool.aclose()


async def test_a_story_moves_the_counters_and_histograms(metered: Metered) -> None:
    before = await metered.scrape()
    response = await metered.client.post(
        "/", json={"input": "The detective reached the crime scene"}, headers=AUTH
    )
    assert response.status == 200
    tokens = (await response.json())["tokens"]
    after = await metered.scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("storybot_requests_total", frontend="api", outcome="story") == 1
    assert moved("storybot_time_to_first_token_seconds_count") == 1
    assert moved("storybot_story_seconds_count") == 1
    assert moved("storybot_story_seconds_sum") > 0
    assert moved("storybot_queue_wait_seconds_count") == 1
    assert moved("storybot_new_tokens_total", model="tiny-gpt2") == tokens > 0
    assert moved("storybot_batch_rows_count") >= tokens - 1  # one per decoding step
    assert moved("storybot_database_write_seconds_count") >= 2  # the story, the part
    assert moved("storybot_http_requests_total", method="POST", route="/", status="200") == 1
    assert value(after, "storybot_queue_depth", model="tiny-gpt2") == 0
    assert value(after, "storybot_running_rows", model="tiny-gpt2") == 0
    assert value(after, "storybot_queue_capacity", model="tiny-gpt2") == 1
    assert value(after, "storybot_models_loaded") == 1
    # Every outcome of both front-ends is there from the start, at zero.
    counted = {
        dict(labels)["outcome"] + "/" + dict(labels)["frontend"]
        for name, labels in before
        if name == "storybot_requests_total"
    }
    assert counted == {f"{o}/{f}" for o in OUTCOMES for f in ("api", "discord")}


async def test_refused_and_cancelled_requests_count_as_such(metered: Metered) -> None:
    before = await metered.scrape()
    client, backend = metered.client, metered.backend
    # invalid: a prompt of white space; filtered: a term of the built-in list.
    assert (await client.post("/", json={"input": "   "}, headers=AUTH)).status == 422
    term = read_blocklist(BLOCKLIST)[0][0]
    filtered = await client.post("/", json={"input": f"They shouted {term}."}, headers=AUTH)
    assert filtered.status == 422
    # busy: one story generating (held), one waiting, the queue (of one) full.
    backend.hold()
    first = asyncio.create_task(client.post("/", json={"input": "First"}, headers=AUTH))
    await asyncio.to_thread(backend.entered.wait, 30)
    second = asyncio.create_task(client.post("/", json={"input": "Second"}, headers=AUTH))
    await wait_for(lambda: metered.pool.queue_depth == 1)
    during = await metered.scrape()
    assert value(during, "storybot_queue_depth", model="tiny-gpt2") == 1
    assert value(during, "storybot_running_rows", model="tiny-gpt2") == 1
    busy = await client.post("/", json={"input": "Third"}, headers=AUTH)
    assert busy.status == 503
    # cancelled: the waiting one, by the service's own cancel.
    (run,) = [r for r in metered.service._runs.values() if r.previous_text == "Second"]
    assert await metered.service.cancel(run.id, Requester(user_id=None, source="api"))
    backend.release()
    assert (await first).status == 200
    assert (await second).status == 409
    # A use-case that calls another (continue_story calls continue_from) counts once.
    story_id = (await (await first).json())["story_id"]
    too_long = {"max_new_tokens": 100_000}
    refused = await client.post(f"/stories/{story_id}/continue", json=too_long, headers=AUTH)
    assert refused.status == 422
    after = await metered.scrape()
    for outcome, count in {
        "invalid": 2,
        "filtered": 1,
        "busy": 1,
        "cancelled": 1,
        "story": 1,
        "error": 0,
    }.items():
        moved = value(after, "storybot_requests_total", frontend="api", outcome=outcome) - value(
            before, "storybot_requests_total", frontend="api", outcome=outcome
        )
        assert moved == count, outcome
    # Only a written part has timings.
    assert (
        value(after, "storybot_story_seconds_count") - value(before, "storybot_story_seconds_count")
        == 1
    )
    assert value(after, "storybot_http_requests_total", method="POST", route="/", status="503")


async def test_label_values_carry_no_text_and_no_ids(metered: Metered) -> None:
    marker = "Zanzibar-marker-7f3a"
    client = metered.client
    response = await client.post(
        "/", json={"input": f"{marker} began"}, headers={**AUTH, "X-Request-Id": "req-" + marker}
    )
    story_id = (await response.json())["story_id"]
    await client.get(f"/stories/{story_id}", headers=AUTH)
    await client.get(f"/stories/{story_id}.md", headers=AUTH)
    await client.get(f"/no/such/{marker}", headers=AUTH)
    await client.post(f"/stories/{marker}/continue", headers=AUTH)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert marker not in text
    labels = {
        (name, value)
        for (_, pairs) in parse(text)
        for name, value in pairs
        if name != "le"  # histogram bucket bounds
    }
    assert not {v for _, v in labels} & {str(story_id), f"{story_id}.md"}
    routes = {v for name, v in labels if name == "route"}
    known = {"/", "/stories/{id}", "/stories/{id}.md", "/stories/{id}/continue", "/metrics"}
    assert routes <= known | {"unmatched"}, routes


async def test_metrics_need_the_key(metered: Metered) -> None:
    client = metered.client
    refused = await client.get("/metrics")
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "unauthorized"
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    # Prometheus dials the service by its compose name: any Host, like /readyz.
    named = await client.get("/metrics", headers={**AUTH, "Host": "storybot:5000"})
    assert named.status == 200
    openmetrics = await client.get(
        "/metrics", headers={**AUTH, "Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await openmetrics.text()).rstrip().endswith("# EOF")
    described = await (await client.get("/openapi.json")).json()
    assert described["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]


def test_no_created_series() -> None:
    """One `_created` series per labelled child would double what Prometheus
    stores for nothing: none is exported."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    Metrics(registry, process=False)
    text = generate_latest(registry).decode()
    assert "storybot_requests_total" in text
    assert "_created" not in text


async def test_without_a_key_metrics_answer_only_this_servers_names(
    service: StoryService,
) -> None:
    """With no key (the loopback default), the Host check is what keeps a page
    that rebinds its own name to 127.0.0.1 from reading the metrics."""
    metrics = Metrics(CollectorRegistry(), process=False)
    client = TestClient(TestServer(create_app(service, observer=metrics, metrics=metrics)))
    await client.start_server()
    try:
        assert (await client.get("/metrics")).status == 200
        rebound = await client.get("/metrics", headers={"Host": "evil.example"})
        assert rebound.status == 421
    finally:
        await client.close()


async def test_without_metrics_there_is_no_route(service: StoryService) -> None:
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        assert (await client.get("/metrics")).status == 404
        assert "/metrics" not in (await (await client.get("/openapi.json")).json())["paths"]
    finally:
        await client.close()


async def test_a_port_of_its_own_answers_loopback_names_only() -> None:
    metrics = Metrics(CollectorRegistry(), process=False)
    client = TestClient(TestServer(metrics_app(metrics, metrics)))
    await client.start_server()
    try:
        response = await client.get("/metrics")  # no key on the loopback port
        assert response.status == 200 and response.headers["X-Request-Id"]
        parse(await response.text())
        rebound = await client.get("/metrics", headers={"Host": "evil.example"})
        assert rebound.status == 421
        assert "request_id" in (await rebound.json())["error"]
        assert (await client.get("/")).status == 404
    finally:
        await client.close()


async def test_loaded_models_and_evictions(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from tests.generation.test_model_pools import pools

    folders = []
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        folders.append(tmp_path / name)
    models = pools(tiny_model_dir, budget_mb=250, loads=[])  # room for two genre models
    await models.default.start()
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.watch(models.default, models)
    try:
        for folder in folders:
            await models.pool_for(folder)
        samples = parse(metrics.exposition()[0].decode())
        assert value(samples, "storybot_models_loaded") == 3  # the default and two of three
        assert value(samples, "storybot_model_evictions_total") == 1
        assert value(samples, "storybot_model_memory_bytes") == 200e6
    finally:
        await models.aclose()
        await models.default.aclose()


def test_each_hook_is_counted_without_a_server() -> None:
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.discord_error(404, 10008)
    metrics.discord_rate_limited("user", 1.5)
    metrics.discord_rate_limited("user", 0.5)
    metrics.request_ended("somewhere-else", "error", None)
    samples = parse(metrics.exposition()[0].decode())
    assert value(samples, "storybot_discord_api_errors_total", status="404", code="10008") == 1
    assert value(samples, "storybot_discord_rate_limit_waits_total", scope="user") == 2
    assert value(samples, "storybot_discord_rate_limit_wait_seconds_total", scope="user") == 2.0
    # A front-end name the metrics do not know is not a new label value.
    assert value(samples, "storybot_requests_total", frontend="other", outcome="error") == 1
    assert json.dumps(sorted(k[0] for k in samples))  # plain names, nothing odd


def test_the_description_with_metrics_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    from api.openapi import spec

    for api_key in (True, False):
        described = spec(api_key=api_key, metrics=True)
        validate(described)
        assert "/metrics" in described["paths"]


def test_an_eager_scraper_gets_the_last_rendering_within_the_interval() -> None:
    eager = Metrics(CollectorRegistry(), process=False, min_render_interval_s=60)
    fresh = Metrics(CollectorRegistry(), process=False)
    for metrics in (eager, fresh):
        first = metrics.exposition()[0]
        metrics.discord_error(404, 10008)
        assert (metrics.exposition()[0] == first) is (metrics is eager)
    # Each format is kept apart.
    assert eager.exposition("application/openmetrics-text")[0].endswith(b"# EOF\n")
