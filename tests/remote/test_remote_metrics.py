"""The remote engine's retries and failures reach /metrics (BACKEND=openai)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from generation.errors import EngineUnavailable
from generation.types import GenerationParams, GenerationRequest
from tests.app.test_metrics import parse, value
from tests.remote.conftest import StandIn, remote_pool


async def test_retries_and_failures_are_counted(stand_in: StandIn) -> None:
    request = GenerationRequest("The door opened", GenerationParams(max_new_tokens=8))
    metrics = Metrics(CollectorRegistry(), process=False)
    stand_in.script = [("status", 503, None), ("status", 502, None)]
    async with remote_pool(stand_in.url, retries=2) as pool:
        metrics.watch(pool)
        assert (await pool.submit(request).result()).text  # two retries, then text
        stand_in.script = [("status", 500, None)] * 3
        with pytest.raises(EngineUnavailable):
            await pool.submit(request).result()  # two more retries, then a failure
        samples = parse(metrics.exposition()[0].decode())
    assert value(samples, "storybot_remote_retries_total", model="gpt2") == 4
    assert value(samples, "storybot_remote_failures_total", model="gpt2") == 1
    assert value(samples, "storybot_new_tokens_total", model="gpt2") > 0
    # A remote engine batches for itself: no decoding steps of ours to count.
    assert value(samples, "storybot_batch_rows_count") == 0
