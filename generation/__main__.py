"""Write a story in the terminal: `python -m generation --genre crime "The detective..."`.

The text streams as it is generated; timing and tokens per second follow on
stderr. Uses the same pool and backend as the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from generation.errors import GenerationError
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from generation.types import GenerationRequest
from stories.genres import GenreConfigError, GenreRegistry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m generation", description=__doc__)
    parser.add_argument("prompt", help="the beginning of the story")
    parser.add_argument("--genre", default="crime", help="a genre key from genres.toml")
    parser.add_argument("--genres", type=Path, default=Path("genres.toml"))
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model folder (default: models/gpt2, else models/tiny-gpt2)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--no-repeat-ngram-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding (no sampling)")
    parser.add_argument(
        "--precision",
        choices=["int8", "fp32"],
        default="int8",
        help="int8 (default, faster on CPU) or fp32 (the reference)",
    )
    return parser.parse_args(argv)


def default_model_dir() -> Path:
    real = Path("models/gpt2")
    return real if real.exists() else Path("models/tiny-gpt2")


async def run(args: argparse.Namespace) -> int:
    genres = GenreRegistry.load(args.genres)
    genre = genres.get(args.genre)
    params = genre.params(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        seed=args.seed,
        do_sample=not args.greedy,
    )
    model_dir = args.model_dir or genre.model or default_model_dir()
    print(f"loading {model_dir} ...", file=sys.stderr, flush=True)

    def backend() -> TransformersBackend:
        return TransformersBackend(model_dir, precision=args.precision)

    async with GenerationPool(backend, max_batch=1) as pool:
        ticket = pool.submit(GenerationRequest(args.prompt, params, primer=genre.primer))
        sys.stdout.write(args.prompt)
        async for delta in ticket.stream():
            sys.stdout.write(delta)
            sys.stdout.flush()
        result = await ticket.result()
        sys.stdout.write("\n")
    first = f"{result.first_token_s * 1000:.0f} ms" if result.first_token_s else "n/a"
    print(
        f"\n[{result.model_id} · {genre.key} · seed {result.seed}] {result.new_tokens} tokens "
        f"in {result.generation_s:.2f} s ({result.tokens_per_s:.1f} tokens/s, first token "
        f"{first}, stopped: {result.finish_reason})",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (GenerationError, GenreConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
