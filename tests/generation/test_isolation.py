"""One request's fault is its own: the rest of its batch, and the worker, go on.

A fault is injected into one row of a batch of eight, at each stage a row goes
through on the worker (preparing, sampling, decoding), on both local engines.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generation.errors import GenerationError
from generation.job import Job
from generation.pool import GenerationPool
from generation.sampling import RowSampler
from generation.text import StreamDecoder
from generation.types import GenerationParams, GenerationRequest
from tests.conftest import GatedBackend, wait_for

FAULTY_SEED = 666
# Who asked, as the bot's log context would say: the worker thread's lines about
# a request must carry its asker's ids.
ASKER: ContextVar[int | None] = ContextVar("asker", default=None)
SEEDS = [11, 12, 13, FAULTY_SEED, 14, 15, 16, 17]


@pytest.fixture(scope="module")
def engines(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Callable[[], Any]]:
    from generation.onnx_backend import OnnxBackend
    from generation.torch_backend import TransformersBackend

    copy = tmp_path_factory.mktemp("isolation") / "tiny-gpt2"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns("onnx"))
    return {
        "transformers": lambda: TransformersBackend(tiny_model_dir, max_batch_size=8, threads=1),
        "onnx": lambda: OnnxBackend(copy, max_batch_size=8, threads=1, precision="fp32"),
    }


def _inject(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """Make the request with FAULTY_SEED fail at `stage`, a few tokens in."""
    if stage == "prepare":
        prepare = Job.prepare

        def faulty_prepare(self: Job, backend: Any) -> None:
            if self.params.seed == FAULTY_SEED:
                raise RuntimeError("injected fault while preparing")
            prepare(self, backend)

        monkeypatch.setattr(Job, "prepare", faulty_prepare)
    elif stage == "sample":  # recording the fourth token, sampled with the batch or alone
        append = RowSampler.append

        def faulty_append(self: RowSampler, token: int) -> None:
            if self.params.seed == FAULTY_SEED and getattr(self, "_generated", 0) == 3:
                raise IndexError("injected fault while sampling")
            append(self, token)

        monkeypatch.setattr(RowSampler, "append", faulty_append)
    else:
        push = StreamDecoder.push
        counts: dict[int, int] = {}

        def faulty_push(self: StreamDecoder, token: int) -> str:
            counts[id(self)] = counts.get(id(self), 0) + 1
            if getattr(self, "faulty", False) and counts[id(self)] == 3:
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected fault while decoding")
            return push(self, token)

        prepare = Job.prepare

        def marking_prepare(self: Job, backend: Any) -> None:
            prepare(self, backend)
            if self.params.seed == FAULTY_SEED:
                self.decoder.faulty = True  # type: ignore[union-attr]

        monkeypatch.setattr(StreamDecoder, "push", faulty_push)
        monkeypatch.setattr(Job, "prepare", marking_prepare)


@pytest.fixture
def quiet_errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    def asked_by(record: logging.LogRecord) -> bool:
        record.asker = ASKER.get()  # read where the line is logged, as app.logs does
        return True

    with caplog.at_level("ERROR"):
        caplog.handler.addFilter(asked_by)
        yield caplog
        caplog.handler.removeFilter(asked_by)


@pytest.mark.parametrize("stage", ["prepare", "sample", "decode"])
@pytest.mark.parametrize("engine", ["transformers", "onnx"])
async def test_a_fault_in_one_row_fails_only_that_row(
    engine: str,
    stage: str,
    engines: dict[str, Callable[[], Any]],
    monkeypatch: pytest.MonkeyPatch,
    quiet_errors: pytest.LogCaptureFixture,
) -> None:
    gated: list[GatedBackend] = []

    def backend() -> GatedBackend:
        gated.append(GatedBackend(engines[engine]()))
        return gated[0]

    _inject(monkeypatch, stage)
    async with GenerationPool(backend, max_batch=8) as pool:  # type: ignore[arg-type]
        gate = gated[0]
        gate.hold()
        params = GenerationParams(max_new_tokens=12, min_new_tokens=12)
        # A one-token request the worker takes alone and holds; once it is done the
        # eight waiting are admitted together and prefilled as one batch.
        first = pool.submit(GenerationRequest("Warm up", replace_seed(params, 1, 1)))
        await asyncio.to_thread(gate.entered.wait, 30)
        tickets = []
        for seed in SEEDS:
            asking = ASKER.set(seed)
            tickets.append(
                pool.submit(GenerationRequest(f"Row {seed} walked in", replace_seed(params, seed)))
            )
            ASKER.reset(asking)
        await wait_for(lambda: pool.queue_depth == 8)
        gate.release()
        await first.result()
        outcomes = await asyncio.gather(*(t.result() for t in tickets), return_exceptions=True)
        assert pool.stats.admitted_late == 8, "the eight did not run as one batch"

        for seed, outcome in zip(SEEDS, outcomes, strict=True):
            if seed == FAULTY_SEED:
                assert isinstance(outcome, GenerationError), outcome
                assert "try again" in str(outcome)
            else:
                assert not isinstance(outcome, BaseException), (seed, outcome)
                assert outcome.new_tokens == 12 and outcome.finish_reason == "length"
        # The worker is still alive and serves the next request.
        after = await pool.submit(GenerationRequest("And then", replace_seed(params, 1))).result()
        assert after.new_tokens == 12
    about_the_row = [
        r for r in quiet_errors.records if r.exc_info and "injected" in str(r.exc_info[1])
    ]
    assert about_the_row, "the fault was not logged"
    assert {getattr(r, "asker", None) for r in about_the_row} == {FAULTY_SEED}


def replace_seed(
    params: GenerationParams, seed: int, tokens: int | None = None
) -> GenerationParams:
    if tokens is None:
        return replace(params, seed=seed)
    return replace(params, seed=seed, max_new_tokens=tokens, min_new_tokens=tokens)


@pytest.mark.parametrize("field", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [5e-324, 1e-320, 1e-300, 1e-12])
async def test_tiny_but_positive_sampling_values_are_served(
    pool: GenerationPool, field: str, value: float
) -> None:
    """Values that pass validation can be sampled: a tiny temperature is greedy."""
    params = GenerationParams(max_new_tokens=6, min_new_tokens=6, seed=5, **{field: value})
    result = await pool.submit(GenerationRequest("The door opened", params)).result()
    assert result.new_tokens == 6
    if field == "temperature":
        greedy = GenerationParams(max_new_tokens=6, min_new_tokens=6, do_sample=False)
        expected = await pool.submit(GenerationRequest("The door opened", greedy)).result()
        assert result.text == expected.text
