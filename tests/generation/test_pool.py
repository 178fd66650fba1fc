"""The executor pool on the tiny model: batching, streaming, cancellation,
Busy, queue positions, seeds, context truncation, loop lag, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from generation.errors import (
    Busy,
    Cancelled,
    InvalidRequest,
    ModelLoadError,
    PoolClosed,
    PromptTooLong,
    TimedOut,
)
from generation.pool import GenerationPool
from generation.types import GenerationParams, GenerationRequest
from tests.conftest import GatedBackend, wait_for

PoolFactory = Callable[..., GenerationPool]


def req(
    prompt: str = "The detective walked into",
    tokens: int = 20,
    seed: int | None = 1,
    **kwargs: object,
) -> GenerationRequest:
    # The tiny model likes to end its text: hold end-of-text off for the whole run.
    params = GenerationParams(max_new_tokens=tokens, seed=seed, min_new_tokens=tokens)
    return GenerationRequest(prompt, params, **kwargs)  # type: ignore[arg-type]


async def test_stream_concatenates_to_the_result_in_order(pool: GenerationPool) -> None:
    ticket = pool.submit(req(tokens=40))
    deltas = [delta async for delta in ticket.stream()]
    result = await ticket.result()
    assert len(deltas) > 1
    assert "".join(deltas) == result.raw_text
    assert result.text == result.raw_text or result.raw_text.startswith(result.text)
    assert result.new_tokens >= 1 and result.seed == 1
    assert "<|endoftext|>" not in result.raw_text


async def test_same_seed_same_text_alone_or_batched(pool: GenerationPool) -> None:
    first = await pool.submit(req(seed=42, tokens=30)).result()
    crowd = [pool.submit(req(f"Story {i} began", seed=i, tokens=30)) for i in range(4)]
    again = pool.submit(req(seed=42, tokens=30))
    results = await asyncio.gather(again.result(), *(t.result() for t in crowd))
    assert results[0].raw_text == first.raw_text
    other = await pool.submit(req(seed=43, tokens=30)).result()
    assert other.raw_text != first.raw_text


async def test_concurrent_requests_share_model_passes(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        tickets = [pool.submit(req(f"Tale {i}:", seed=i, tokens=25)) for i in range(6)]
        backend.release()
        results = await asyncio.gather(*(t.result() for t in tickets))
        passes = backend.forward_calls
        sequential = sum(r.new_tokens for r in results)
        assert pool.stats.largest_batch == 6
        assert passes < sequential / 3, (passes, sequential)


async def test_late_request_joins_the_running_batch(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        long = pool.submit(req(tokens=300, seed=3))
        await wait_for(lambda: long.position == 0)
        stream = long.stream()
        await stream.__anext__()  # the batch is producing tokens
        late = pool.submit(req("Ada", tokens=5, seed=4))
        result = await late.result()
        assert pool.stats.admitted_late >= 1
        assert not long.done() or result.generation_s < 5
        long.cancel()
        with pytest.raises(Cancelled):
            await long.result()


async def test_queue_positions_and_their_changes(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True, max_batch=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        first = pool.submit(req(seed=1))
        await asyncio.to_thread(backend.entered.wait, 10)
        second, third = pool.submit(req(seed=2)), pool.submit(req(seed=3))
        assert (first.position, second.position, third.position) == (0, 1, 2)
        seen: list[int] = []

        async def watch() -> None:
            async for position in third.positions():
                seen.append(position)

        watcher = asyncio.create_task(watch())
        await wait_for(lambda: seen == [2])
        backend.release()
        await asyncio.gather(first.result(), second.result(), third.result())
        await watcher
        assert seen[0] == 2 and seen[-1] in (0, -1) and 1 in seen
        assert first.position == -1


async def test_full_queue_answers_busy_at_once(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True, max_batch=1, max_queue=2) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        running = pool.submit(req(seed=1))
        await asyncio.to_thread(backend.entered.wait, 10)
        queued = [pool.submit(req(seed=2)), pool.submit(req(seed=3))]
        started = time.monotonic()
        with pytest.raises(Busy) as busy:
            pool.submit(req(seed=4))
        assert time.monotonic() - started < 0.1
        assert busy.value.retry_after >= 1
        assert "try again" in str(busy.value)
        backend.release()
        await asyncio.gather(running.result(), *(t.result() for t in queued))


async def test_cancel_a_queued_request_removes_it(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True, max_batch=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        running = pool.submit(req(seed=1))
        await asyncio.to_thread(backend.entered.wait, 10)
        doomed, after = pool.submit(req(seed=2)), pool.submit(req(seed=3))
        assert after.position == 2
        assert doomed.cancel()
        assert after.position == 1 and pool.queue_depth == 1
        with pytest.raises(Cancelled):
            await doomed.result()
        backend.release()
        await asyncio.gather(running.result(), after.result())
        assert not doomed.cancel()  # already finished


async def test_cancel_a_running_request_stops_it_at_the_next_token(pool: GenerationPool) -> None:
    ticket = pool.submit(req(tokens=900, seed=5))
    stream = ticket.stream()
    await stream.__anext__()
    assert ticket.cancel()
    with pytest.raises(Cancelled) as cancelled:
        await ticket.result()
    partial = cancelled.value.partial  # type: ignore[attr-defined]
    assert 1 <= partial.new_tokens < 900
    assert pool.running == 0
    # The pool keeps serving after a cancellation.
    assert (await pool.submit(req(tokens=5)).result()).new_tokens >= 1


async def test_bad_requests_are_refused_before_queueing(pool: GenerationPool) -> None:
    for bad in (
        req("   "),
        req(""),
        GenerationRequest("x", GenerationParams(temperature=0)),
        GenerationRequest("x", GenerationParams(top_p=1.5)),
        GenerationRequest("x", GenerationParams(max_new_tokens=0)),
    ):
        with pytest.raises(InvalidRequest):
            pool.submit(bad)
    with pytest.raises(PromptTooLong):
        pool.submit(GenerationRequest("x", GenerationParams(max_new_tokens=1000), primer="p " * 40))
    assert pool.queue_depth == 0 and pool.stats.jobs_done == 0


async def test_long_story_keeps_primer_and_recent_text(pool: GenerationPool) -> None:
    backend = pool.backend
    assert backend is not None
    primer = "PRIMER: a crime story.\n\n"
    story = " ".join(f"Sentence number {i} is here." for i in range(800)) + " THE END"
    ticket = pool.submit(
        GenerationRequest(story, GenerationParams(max_new_tokens=50, seed=1), primer=primer)
    )
    result = await ticket.result()
    job = ticket._job
    assert result.truncated_prompt
    assert result.prompt_tokens + 50 <= backend.context_size
    kept = backend.decode(job.prompt_ids)
    assert kept.startswith(primer) and kept.endswith("THE END")
    assert "number 0 " not in kept
    assert "PRIMER" not in result.raw_text


async def test_event_loop_stays_responsive_while_generating(pool: GenerationPool) -> None:
    tickets = [pool.submit(req(f"Story {i}", tokens=200, seed=i)) for i in range(4)]
    worst = 0.0
    while not all(t.done() for t in tickets):
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        worst = max(worst, time.perf_counter() - before - 0.01)
    await asyncio.gather(*(t.result() for t in tickets))
    assert worst < 0.1, f"event loop stalled for {worst * 1000:.0f} ms"


async def test_time_limit_keeps_partial_text(pool: GenerationPool) -> None:
    ticket = pool.submit(req(tokens=900, seed=2, timeout_s=0.3))
    result = await ticket.result()
    assert result.finish_reason == "timeout" and 1 <= result.new_tokens < 900


async def test_waiting_too_long_in_the_queue_times_out(make_pool: PoolFactory) -> None:
    async with make_pool(gated=True, max_batch=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        running = pool.submit(req(seed=1))
        await asyncio.to_thread(backend.entered.wait, 10)
        waiting = pool.submit(req(seed=2, timeout_s=0.05))
        with pytest.raises(TimedOut):
            await waiting.result()
        assert pool.queue_depth == 0
        backend.release()
        await running.result()


async def test_aclose_fails_the_queue_at_once_and_stops_running_work_after_grace(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(gated=True, max_batch=1)
    await pool.start()
    backend = pool.backend
    assert isinstance(backend, GatedBackend)
    backend.hold()
    running = pool.submit(req(tokens=900, seed=1))
    await asyncio.to_thread(backend.entered.wait, 10)
    queued = pool.submit(req(seed=2))
    closing = asyncio.create_task(pool.aclose(grace_s=0.5))
    await wait_for(lambda: pool._closing)
    with pytest.raises(PoolClosed):
        pool.submit(req(seed=3))
    with pytest.raises(PoolClosed):  # the waiting one is answered before any work ends
        await asyncio.wait_for(queued.result(), 5)
    assert not running.done()
    backend.release()
    await asyncio.wait_for(closing, 30)
    with pytest.raises(PoolClosed):  # 900 tokens do not fit in the grace period
        await asyncio.wait_for(running.result(), 5)
    assert pool._thread is not None and not pool._thread.is_alive()


async def test_aclose_lets_running_work_finish_within_grace(pool: GenerationPool) -> None:
    ticket = pool.submit(req(tokens=10))
    await wait_for(lambda: ticket.position == 0)
    await pool.aclose(grace_s=30)
    assert (await ticket.result()).new_tokens >= 1


async def test_aclose_returns_within_grace_whatever_is_queued(make_pool: PoolFactory) -> None:
    async with make_pool(max_batch=1, max_queue=300) as pool:
        tickets = [pool.submit(req(tokens=50, seed=n)) for n in range(300)]
        await wait_for(lambda: tickets[0].position == 0)
        started = time.monotonic()
        await pool.aclose(grace_s=1.0)
        assert time.monotonic() - started < 1.0 + 2.0
        results = await asyncio.gather(*(t.result() for t in tickets), return_exceptions=True)
        assert sum(isinstance(r, PoolClosed) for r in results) >= 299


async def test_every_reader_of_a_ticket_gets_all_the_text_and_the_end(
    make_pool: PoolFactory,
) -> None:
    async with make_pool(gated=True, max_batch=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        backend.hold()
        ticket = pool.submit(req(tokens=40, seed=5))

        async def read() -> tuple[list[int], str]:
            positions = [p async for p in ticket.positions()]
            text = "".join([d async for d in ticket.stream()])
            return positions, text

        readers = [asyncio.create_task(read()) for _ in range(3)]
        early_leaver = ticket.stream()
        await wait_for(lambda: backend.entered.is_set())
        backend.release()
        first = await early_leaver.__anext__()  # one reader leaves after one delta
        await early_leaver.aclose()
        done = await asyncio.wait_for(asyncio.gather(*readers), 30)
        result = await ticket.result()
        for positions, text in done:
            assert text == result.raw_text and positions[-1] == 0
        assert result.raw_text.startswith(first)


async def test_a_broken_model_folder_fails_at_start(tmp_path: Path, tiny_model_dir: Path) -> None:
    from generation.torch_backend import TransformersBackend

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    pool = GenerationPool(lambda: TransformersBackend(broken))
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        await pool.start()
    missing = GenerationPool(lambda: TransformersBackend(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match=r"download_model\.py"):
        await missing.start()


async def test_a_failed_story_at_load_still_leaves_a_working_pool(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The story a local engine writes at load (`rehearse`) only warms code
    up: if it fails, the pool says so in the log and serves the first story
    all the same."""
    from generation.torch_backend import TransformersBackend

    class Unrehearsed(TransformersBackend):
        def rehearse(self) -> None:
            raise RuntimeError("no rehearsal today")

    pool = GenerationPool(lambda: Unrehearsed(tiny_model_dir, threads=1))
    with caplog.at_level("WARNING", logger="generation.pool"):
        async with pool:
            result = await pool.submit(req(seed=5, tokens=6)).result()
    assert result.new_tokens == 6
    assert any("the story at load failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("engine", ["transformers", "onnx"])
def test_each_local_engine_writes_its_story_at_load(
    tiny_model_dir: Path, tmp_path: Path, engine: str
) -> None:
    """`rehearse` runs on every local engine the way its stories run (torch's
    in inference mode), tells the metrics nothing and counts no forward
    calls."""
    import shutil

    from generation.onnx_backend import OnnxBackend
    from generation.torch_backend import TransformersBackend

    backend: TransformersBackend | OnnxBackend
    if engine == "transformers":
        backend = TransformersBackend(tiny_model_dir, threads=1)
    else:  # converted in a copy of its own
        backend = OnnxBackend(shutil.copytree(tiny_model_dir, tmp_path / "model"), threads=1)
    steps: list[int] = []
    backend.on_step = steps.append
    calls = backend.forward_calls
    backend.rehearse()
    assert backend.forward_calls == calls and steps == []
    assert backend.on_step is not None
