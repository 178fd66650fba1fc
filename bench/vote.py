"""What a vote's candidates cost (not a test): `python -m bench.vote [--rounds N]`.

A vote writes its two or three candidate continuations at once, as one batch
of the pool. This measures, on the default backend (onnx, int8) and a model
of GPT-2 small's exact shape (random weights cost what GPT-2's do), the wall
time of one part against three written together, from the same story text,
the three with different seeds, at two points of a story: its opening (a
short context) and its middle (a context of about 400 tokens, where votes
usually happen; the engine prefills the shared story once for all three).
The issue's target: three under 1.5 times the time of one. Rounds alternate
the order; medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from app.runtime import make_pool
from app.settings import load_settings
from bench.__main__ import OUT, build_model, progress
from generation.pool import GenerationPool
from generation.types import GenerationParams, GenerationRequest

TARGET = 1.5
STORY = (
    "The detective reached the crime scene a little after midnight. Rain ran down the "
    "windows of the old warehouse, and somewhere inside a radio was still playing. "
)


async def timed(pool: GenerationPool, story: str, count: int, tokens: int, round_: int) -> float:
    requests = [
        GenerationRequest(
            story,
            GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens, seed=round_ * 10 + i),
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(pool.submit(request).result() for request in requests))
    return time.perf_counter() - started


async def measure(
    model: Path, story: str, rounds: int, tokens: int
) -> tuple[list[float], list[float]]:
    settings = load_settings(backend="onnx", precision="int8", model_dir=model)
    one: list[float] = []
    three: list[float] = []
    async with make_pool(settings, model) as pool:
        await timed(pool, story, 1, 8, 0)  # warm-up
        for round_ in range(rounds):
            order = [(1, one), (3, three)] if round_ % 2 == 0 else [(3, three), (1, one)]
            for count, into in order:
                into.append(await timed(pool, story, count, tokens, round_))
                progress(f"round {round_ + 1}: {count} at once, {into[-1]:.2f} s")
    return one, three


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vote", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument(
        "--tokens", type=int, default=120, help="tokens a candidate writes (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, _ = build_model(OUT / "gpt2-shape")
    # About 400 tokens of story so far (376 with the bench model's tokenizer).
    middle = STORY * 4
    for where, story in (("opening", STORY), ("middle (~400 tokens)", middle)):
        one, three = asyncio.run(measure(model, story, args.rounds, args.tokens))
        ratio = statistics.median(three) / statistics.median(one)
        print(
            f"{where}: one part {statistics.median(one):.2f} s; three candidates at once "
            f"{statistics.median(three):.2f} s; ratio {ratio:.2f}x "
            f"(target under {TARGET}x: {'met' if ratio < TARGET else 'missed'}), "
            f"{args.tokens} tokens each, onnx int8, {os.cpu_count()} cores"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
