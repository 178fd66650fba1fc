"""The openai backend through the real pool: against `transformers serve`, and
against the stand-in for the faults a real server will not make on cue."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from generation.errors import (
    Cancelled,
    EngineRefused,
    EngineStartError,
    EngineUnavailable,
    TimedOut,
)
from generation.openai_backend import OpenAIBackend
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from generation.types import GenerationParams, GenerationRequest
from tests.conftest import free_port, wait_for
from tests.remote.conftest import Serve, StandIn, remote_pool


def request(prompt: str = "The detective opened the door", **params: Any) -> GenerationRequest:
    return GenerationRequest(prompt, GenerationParams(**({"max_new_tokens": 20} | params)))


async def first_text(ticket: Any) -> str:
    async for delta in ticket.stream():
        return str(delta)
    raise AssertionError("no text came")


# ------------------------------------------------------------ transformers serve
async def test_a_story_streams_from_transformers_serve(
    transformers_serve: Serve, tiny_model_dir: Path
) -> None:
    tokenizer = tiny_model_dir / "tokenizer.json"
    async with remote_pool(transformers_serve.url, tokenizer=tokenizer) as pool:
        backend = pool.backend
        assert isinstance(backend, OpenAIBackend)
        # transformers serve answers none of the engines' own paths, refuses unknown
        # top-level fields and takes a generation_config: the probe finds it.
        assert backend.sampling_fields == "transformers"
        assert backend.engine == "transformers serve"
        assert backend.model_id == str(tiny_model_dir)
        ticket = pool.submit(request(max_new_tokens=40, seed=3))
        deltas = [delta async for delta in ticket.stream()]
        result = await ticket.result()
    assert len(deltas) >= 5, "the text must arrive as it is written"
    assert "".join(deltas) == result.raw_text
    assert result.backend == "openai" and result.new_tokens > 0
    assert result.first_token_s is not None


async def test_remote_greedy_text_matches_the_local_engine(
    transformers_serve: Serve, tiny_model_dir: Path
) -> None:
    """Prompt, length, repetition penalty and no-repeat n-grams all reach the server:
    its greedy text is exactly what our own engine writes from the same weights."""
    params = {"max_new_tokens": 30, "do_sample": False}
    tokenizer = tiny_model_dir / "tokenizer.json"
    async with remote_pool(transformers_serve.url, tokenizer=tokenizer) as pool:
        remote = await pool.submit(request("The ship left the harbour", **params)).result()
    local_pool = GenerationPool(lambda: TransformersBackend(tiny_model_dir, threads=1))
    async with local_pool:
        local = await local_pool.submit(request("The ship left the harbour", **params)).result()
    assert remote.raw_text == local.raw_text
    assert len(remote.raw_text) > 20


async def test_eight_requests_from_transformers_serve_at_once(
    transformers_serve: Serve, tiny_model_dir: Path
) -> None:
    tokenizer = tiny_model_dir / "tokenizer.json"
    async with remote_pool(transformers_serve.url, tokenizer=tokenizer) as pool:
        tickets = [pool.submit(request(f"Story {i} began", seed=i)) for i in range(8)]
        results = await asyncio.gather(*(t.result() for t in tickets))
    assert all(r.new_tokens > 0 and r.text for r in results)


async def test_eight_requests_are_in_flight_at_once(stand_in: StandIn) -> None:
    """The server answers nothing until all eight have arrived: a client that
    sent them one after another (or fewer at a time) would never get there."""
    stand_in.default = ("held", 3)
    # No time limit runs out while the server holds them: nothing is retried, so
    # eight requests seen are eight different stories at once.
    async with remote_pool(stand_in.url, connect_timeout_s=60, read_timeout_s=60) as pool:
        tickets = [pool.submit(request(f"Story {i} began", seed=i)) for i in range(8)]
        await wait_for(lambda: len(stand_in.completions) == 8, within=20)
        assert len({seen.body["prompt"] for seen in stand_in.completions}) == 8
        backend = pool.backend
        assert isinstance(backend, OpenAIBackend)
        assert backend.peak_in_flight == 8  # one pool of connections, all at once
        stand_in.release()
        results = await asyncio.gather(*(t.result() for t in tickets))
    assert all(r.text for r in results)


async def test_cancelling_closes_the_stream_mid_story(
    transformers_serve: Serve, tiny_model_dir: Path
) -> None:
    tokenizer = tiny_model_dir / "tokenizer.json"
    async with remote_pool(transformers_serve.url, tokenizer=tokenizer) as pool:
        ticket = pool.submit(request(max_new_tokens=400, min_new_tokens=400))
        await first_text(ticket)
        assert ticket.cancel()
        with pytest.raises(Cancelled) as caught:
            await asyncio.wait_for(ticket.result(), 10)
        assert caught.value.partial.new_tokens < 400  # type: ignore[attr-defined]
        # The pool is free again at once.
        after = await pool.submit(request(max_new_tokens=5)).result()
        assert after.new_tokens > 0


async def test_a_server_stopped_mid_stream_is_a_clear_error(
    own_transformers_serve: Serve, tiny_model_dir: Path
) -> None:
    tokenizer = tiny_model_dir / "tokenizer.json"
    async with remote_pool(own_transformers_serve.url, tokenizer=tokenizer) as pool:
        ticket = pool.submit(request(max_new_tokens=400, min_new_tokens=400))
        await first_text(ticket)
        own_transformers_serve.kill()
        with pytest.raises(EngineUnavailable, match="stopped in the middle"):
            await asyncio.wait_for(ticket.result(), 10)
        backend = pool.backend
        assert isinstance(backend, OpenAIBackend)
        health = await backend.health()
        assert not health.reachable and health.error
        # And a new request, with nothing shown yet, is retried and then refused clearly.
        with pytest.raises(EngineUnavailable, match="not answering"):
            await asyncio.wait_for(pool.submit(request()).result(), 10)


# -------------------------------------------------------------------- stand-in
async def test_sampling_fields_go_as_extra_fields_where_accepted(stand_in: StandIn) -> None:
    async with remote_pool(stand_in.url) as pool:
        assert pool.backend.sampling_fields == "extra"  # type: ignore[union-attr]
        params = GenerationParams(
            max_new_tokens=30, temperature=0.7, top_k=40, top_p=0.9, seed=11, min_new_tokens=10
        )
        req = GenerationRequest("The door creaked.", params, primer="A ghost story.\n\n")
        await pool.submit(req).result()
    body = stand_in.completions[-1].body
    assert body["prompt"] == "A ghost story.\n\nThe door creaked."  # primer included
    assert body["model"] == "gpt2" and body["stream"] is True and body["max_tokens"] == 30
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.7, 0.9, 11)
    assert (body["top_k"], body["repetition_penalty"], body["no_repeat_ngram_size"]) == (40, 1.2, 3)
    assert body["min_tokens"] == 10 and body["stop"] == ["<|endoftext|>"]


async def test_sampling_fields_fall_back_to_a_generation_config(stand_in: StandIn) -> None:
    stand_in.reject_fields = {"top_k", "repetition_penalty", "no_repeat_ngram_size"}
    async with remote_pool(stand_in.url) as pool:
        assert pool.backend.sampling_fields == "transformers"  # type: ignore[union-attr]
        await pool.submit(request(top_k=7)).result()
    config = json.loads(stand_in.completions[-1].body["generation_config"])
    assert config["top_k"] == 7 and config["do_sample"] is True
    assert config["no_repeat_ngram_size"] == 3 and config["repetition_penalty"] == 1.2


async def test_a_server_that_takes_neither_is_warned_about(
    stand_in: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in.reject_fields = {"top_k", "generation_config"}
    with caplog.at_level(logging.WARNING):
        async with remote_pool(stand_in.url) as pool:
            assert pool.backend.sampling_fields == "none"  # type: ignore[union-attr]
            result = await pool.submit(request()).result()
    assert result.text and "temperature and top_p only" in caplog.text
    assert "top_k" not in stand_in.completions[-1].body


async def test_429_is_retried_after_its_retry_after(stand_in: StandIn) -> None:
    stand_in.script = [("status", 429, 1)]
    async with remote_pool(stand_in.url) as pool:
        result = await pool.submit(request()).result()
    first, second = stand_in.completions
    assert second.at - first.at >= 0.9
    assert result.text == " word0. word1. word2. word3. word4."
    assert result.new_tokens == 6  # the server's usage count, not the number of chunks


async def test_5xx_is_retried_with_backoff_then_a_clear_error(stand_in: StandIn) -> None:
    stand_in.script = [("status", 503, None), ("status", 502, None)]
    async with remote_pool(stand_in.url, retries=2) as pool:
        assert (await pool.submit(request()).result()).text
        assert len(stand_in.completions) == 3
        stand_in.script = [("status", 500, None)] * 3
        with pytest.raises(EngineUnavailable, match="not answering"):
            await pool.submit(request()).result()
    assert len(stand_in.completions) == 6  # one try and two retries


async def test_a_stream_cut_after_text_is_not_retried(stand_in: StandIn) -> None:
    stand_in.script = [("cut", 3)]
    async with remote_pool(stand_in.url) as pool:
        ticket = pool.submit(request())
        shown = [delta async for delta in ticket.stream()]
        with pytest.raises(EngineUnavailable, match="stopped in the middle"):
            await ticket.result()
    assert "".join(shown) == " word0. word1. word2."
    assert len(stand_in.completions) == 1  # the user saw text: a retry would rewrite it


async def test_a_stream_cut_before_any_text_is_retried(stand_in: StandIn) -> None:
    stand_in.script = [("cut", 0)]
    async with remote_pool(stand_in.url) as pool:
        result = await pool.submit(request()).result()
    assert result.text and len(stand_in.completions) == 2


async def test_refused_connections_are_retried_then_reported(stand_in: StandIn) -> None:
    async with remote_pool(stand_in.url, retries=3) as pool:
        await stand_in.stop()  # the server goes away after start-up
        with pytest.raises(EngineUnavailable) as caught:
            await asyncio.wait_for(pool.submit(request()).result(), 10)
    assert caught.value.retry_after >= 1


async def test_a_silent_server_times_out_and_is_retried(stand_in: StandIn) -> None:
    stand_in.default = ("silent",)
    async with remote_pool(stand_in.url, read_timeout_s=0.3, retries=1) as pool:
        with pytest.raises(EngineUnavailable):
            await asyncio.wait_for(pool.submit(request()).result(), 10)
        assert len(stand_in.completions) == 2
        # The request's own time limit bounds it all.
        with pytest.raises(TimedOut):
            slow = GenerationRequest("x", GenerationParams(max_new_tokens=5), timeout_s=0.2)
            await asyncio.wait_for(pool.submit(slow).result(), 10)


async def test_cancel_while_waiting_for_the_server_and_mid_stream(stand_in: StandIn) -> None:
    stand_in.script = [("silent",), ("slow",)]
    async with remote_pool(stand_in.url) as pool:
        waiting = pool.submit(request())
        await wait_for(lambda: len(stand_in.completions) == 1)
        waiting.cancel()
        with pytest.raises(Cancelled):
            await asyncio.wait_for(waiting.result(), 5)
        streaming = pool.submit(request())
        assert await first_text(streaming) == " Slowly."
        streaming.cancel()
        with pytest.raises(Cancelled):
            await asyncio.wait_for(streaming.result(), 5)
        await wait_for(lambda: stand_in.disconnected >= 1)  # the stream was closed


async def test_a_refused_request_is_not_retried(stand_in: StandIn) -> None:
    stand_in.script = [("raw", 400, "application/json", '{"error": {"message": "bad prompt"}}')]
    async with remote_pool(stand_in.url) as pool:
        with pytest.raises(EngineRefused):
            await pool.submit(request()).result()
    assert len(stand_in.completions) == 1


async def test_the_api_key_is_sent_and_never_logged(
    stand_in: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in.api_key = "sk-very-secret"
    with caplog.at_level(logging.DEBUG):
        async with remote_pool(stand_in.url, api_key="sk-very-secret") as pool:
            await pool.submit(request()).result()
    assert stand_in.completions[-1].headers["Authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in caplog.text


# --------------------------------------------------------------- start-up check
async def start_error(url: str, **options: Any) -> str:
    pool = remote_pool(url, **options)
    with pytest.raises(EngineStartError) as caught:
        await asyncio.wait_for(pool.start(), 10)
    await pool.aclose()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_start_up_names_each_bad_server(stand_in: StandIn) -> None:
    assert "unreachable: cannot connect" in await start_error(f"http://127.0.0.1:{free_port()}/v1")
    assert "not served" in await start_error(stand_in.url, model="gpt-9")
    assert "it serves: gpt2" in await start_error(stand_in.url, model="gpt-9")
    assert "API root" in await start_error(stand_in.url.removesuffix("/v1"))

    stand_in.api_key = "right"
    assert "check OPENAI_API_KEY" in await start_error(stand_in.url, api_key="wrong")
    stand_in.api_key = None

    stand_in.models_answer = ("raw", 200, "text/html", "<html><body>Welcome</body></html>")
    assert "answered with HTML" in await start_error(stand_in.url)
    stand_in.models_answer = ("raw", 200, "application/json", "{}")
    assert "no model list" in await start_error(stand_in.url)
    stand_in.models_answer = None

    stand_in.probe = ("raw", 200, "application/json", '{"id": "x"}')
    assert "no choices" in await start_error(stand_in.url)
    stand_in.probe = ("json",)

    stand_in.models = [{"id": "a"}, {"id": "b"}]
    assert "set OPENAI_MODEL" in await start_error(stand_in.url)


async def test_start_up_does_not_hang_on_a_silent_server(stand_in: StandIn) -> None:
    stand_in.models_answer = ("silent",)
    assert "no answer in time" in await start_error(stand_in.url, read_timeout_s=0.3)
