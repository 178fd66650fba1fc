"""Each engine gets the repetition controls under its own names, and start-up
says once which ones it cannot honour. The engines are stand-ins that answer
like each one (tests/remote/conftest.py `ENGINES`, taken from their documents):
they note every field the real engine would ignore."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from generation.dialects import DIALECTS
from generation.errors import EngineStartError
from generation.openai_backend import OpenAIBackend
from generation.types import GenerationParams, GenerationRequest
from tests.remote.conftest import ENGINES, Engine, StandIn, remote_pool

# A story that asks for every control: each engine must get each one it has.
STORY = GenerationParams(
    max_new_tokens=30,
    temperature=0.7,
    top_k=40,
    top_p=0.9,
    seed=11,
    repetition_penalty=1.3,
    no_repeat_ngram_size=3,
    min_new_tokens=10,
)
STANDARD = {"temperature": 0.7, "top_p": 0.9, "seed": 11}
NOT_SAMPLING = {"prompt", "model", "max_tokens", "stream", "stop"}

EXPECTED: dict[str, tuple[dict[str, Any], str | None]] = {
    "llamacpp": (
        STANDARD
        | {
            "top_k": 40,
            "min_p": 0.0,
            "repeat_penalty": 1.3,
            "repeat_last_n": 512,  # the whole context: /props says 512 a slot
            # n-gram ban of 3: DRY from a repeat of 2 tokens, steep enough to be a ban
            "dry_multiplier": 1000.0,
            "dry_base": 1.75,
            "dry_allowed_length": 2,
            "dry_penalty_last_n": 512,
        },
        "llama.cpp has no field for min_new_tokens: stories from it are written without them",
    ),
    "vllm": (
        STANDARD | {"top_k": 40, "repetition_penalty": 1.3, "min_tokens": 10},
        "vLLM has no field for no_repeat_ngram_size: stories from it are written without them",
    ),
    "tgi": (
        STANDARD | {"repetition_penalty": 1.3},
        "text-generation-inference has no field for top_k, no_repeat_ngram_size, "
        "min_new_tokens: stories from it are written without them",
    ),
    "transformers": (
        STANDARD
        | {
            "generation_config": {
                "do_sample": True,
                "max_new_tokens": 30,
                "temperature": 0.7,
                "top_k": 40,
                "top_p": 0.9,
                "repetition_penalty": 1.3,
                "no_repeat_ngram_size": 3,
                "min_new_tokens": 10,
            }
        },
        None,
    ),
}


@asynccontextmanager
async def engine_stand_in(engine: Engine, **options: Any) -> AsyncIterator[StandIn]:
    server = StandIn(engine=engine, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sampling_fields(server: StandIn) -> dict[str, Any]:
    body = server.completions[-1].body
    fields = {k: v for k, v in body.items() if k not in NOT_SAMPLING}
    if "generation_config" in fields:
        fields["generation_config"] = json.loads(fields["generation_config"])
    return fields


def backend_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The backend's own log lines at `level`, but the one about a missing tokenizer."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "generation.openai_backend"
        and r.levelno == level
        and not r.getMessage().startswith("no tokenizer.json")
    ]


async def write(url: str, params: GenerationParams = STORY, **options: Any) -> OpenAIBackend:
    async with remote_pool(url, **options) as pool:
        await pool.submit(GenerationRequest("The lighthouse keeper", params)).result()
        backend = pool.backend
        assert isinstance(backend, OpenAIBackend)
        return backend


@pytest.mark.parametrize("key", list(EXPECTED))
async def test_each_engine_gets_the_controls_under_its_own_names(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected, warning = EXPECTED[key]
    engine = ENGINES[key]
    with caplog.at_level(logging.INFO, logger="generation.openai_backend"):
        async with engine_stand_in(engine) as server:
            backend = await write(server.url)
    assert backend.sampling_fields == key and backend.engine == engine.name
    assert sampling_fields(server) == expected
    assert server.completions[-1].ignored == set(), "a field this engine would ignore"
    # Start-up says once which engine it found, and once what it cannot honour.
    started = backend_lines(caplog, logging.INFO)
    assert len(started) == 1 and started[0].startswith(f"remote engine: {engine.name}")
    if engine.path is not None:
        assert f"(it answers {engine.path})" in started[0]
    assert backend_lines(caplog, logging.WARNING) == ([warning] if warning else [])


async def test_llamacpp_gets_controls_left_off_as_off() -> None:
    """Left out, llama.cpp's own defaults (top_k 40, and whatever DRY the server
    was started with) would apply: a story that asks for none gets them off."""
    params = GenerationParams(
        max_new_tokens=5,
        top_k=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        do_sample=False,
        seed=1,
    )
    async with engine_stand_in(ENGINES["llamacpp"]) as server:
        await write(server.url, params)
    assert sampling_fields(server) == {
        "temperature": 0.0,
        "seed": 1,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "repeat_last_n": 512,
        "dry_multiplier": 0.0,
    }


@pytest.mark.parametrize("n", [1, 2, 4])
def test_dry_starts_where_an_n_gram_would_repeat(n: int) -> None:
    fields = DIALECTS["llamacpp"].fields(replace(STORY, no_repeat_ngram_size=n), 1024)
    assert fields["dry_allowed_length"] == n - 1


async def test_tgi_gets_no_top_p_of_one() -> None:
    """TGI refuses top_p 1.0 (it must be below 1), which means no nucleus cut anyway."""
    async with engine_stand_in(ENGINES["tgi"]) as server:
        await write(server.url, replace(STORY, top_p=1.0))
    assert "top_p" not in sampling_fields(server)


@pytest.mark.parametrize(("key", "context"), [("llamacpp", 512), ("tgi", 768)])
async def test_the_context_the_engine_reports_bounds_the_prompt(key: str, context: int) -> None:
    """llama.cpp's /props gives each slot's context (the whole / --parallel), TGI's
    /info its max_total_tokens (vLLM's max_model_len in /v1/models was read before)."""
    async with engine_stand_in(ENGINES[key]) as server:
        backend = await write(server.url, context_size=1024)
    assert backend.context_size == context


async def test_llamacpp_is_known_by_its_models_list_when_props_is_not_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In router mode /props wants a model named; /v1/models still says owned_by llamacpp."""
    engine = replace(ENGINES["llamacpp"], path=None)
    with caplog.at_level(logging.INFO, logger="generation.openai_backend"):
        async with engine_stand_in(engine) as server:
            backend = await write(server.url)
    assert backend.sampling_fields == "llamacpp" and server.completions[-1].ignored == set()
    assert '(it answers /v1/models with owned_by "llamacpp")' in caplog.text


@pytest.mark.parametrize(
    ("setting", "key"),
    [("vllm", "vllm"), ("llamacpp", "llamacpp"), ("generation_config", "transformers")],
)
async def test_a_named_dialect_is_used_without_asking(setting: str, key: str) -> None:
    """OPENAI_SAMPLING_FIELDS naming an engine skips detection; the old
    `generation_config` is transformers serve's dialect."""
    async with engine_stand_in(ENGINES[key]) as server:
        backend = await write(server.url, sampling_fields=setting)
    assert backend.sampling_fields == key
    assert server.completions[-1].ignored == set()
    assert [s.path for s in server.seen if s.method == "GET"] == ["/v1/models"]


async def test_an_unknown_engine_is_probed_and_warned_about(
    stand_in: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """No path answers like a known engine: the common names go, with a warning that
    such an engine may ignore them."""
    with caplog.at_level(logging.INFO, logger="generation.openai_backend"):
        backend = await write(stand_in.url)
    assert backend.sampling_fields == "extra"
    (warning,) = backend_lines(caplog, logging.WARNING)
    assert "ignores without a word" in warning and "OPENAI_SAMPLING_FIELDS" in warning
    assert "no_repeat_ngram_size" in sampling_fields(stand_in)


async def test_an_engine_that_refuses_its_own_dialect_stops_start_up() -> None:
    async with engine_stand_in(ENGINES["llamacpp"], reject_fields={"repeat_penalty"}) as server:
        pool = remote_pool(server.url)
        with pytest.raises(EngineStartError) as caught:
            await asyncio.wait_for(pool.start(), 10)
        await pool.aclose()
    message = str(caught.value)
    assert "llama.cpp refused storybot's sampling fields" in message
    assert "OPENAI_SAMPLING_FIELDS=none" in message


def test_every_dialect_has_a_stand_in_or_is_generic() -> None:
    """A new engine in the table needs its stand-in (and its field list) here."""
    generic = {"extra", "none"}
    assert set(DIALECTS) - generic == set(ENGINES)
