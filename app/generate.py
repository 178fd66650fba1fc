"""Write a story in the terminal: `python -m app.generate --genre crime "The detective..."`.

The text streams as it is generated; timing and tokens per second follow on
stderr. It runs the bot's own pool and backend, built from the same settings
(BACKEND, PRECISION, DEVICE, MODEL_DIR, GENRES_PATH... from the environment,
then .env); the options below override them for this run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.settings import Settings

# Only the standard library above: `--help` answers before torch, ONNX Runtime or
# the settings are imported. The backend's libraries load once it is chosen.
BACKENDS = ("onnx", "transformers", "openai")  # app.settings.BackendName
PRECISIONS = ("int8", "fp32", "int4")  # app.settings.Precision
FALLBACK_MODEL = Path("models/tiny-gpt2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="the beginning of the story")
    parser.add_argument(
        "--genre", default="crime", help="a genre key from the genre file (default: %(default)s)"
    )
    parser.add_argument(
        "--genres",
        type=Path,
        help="the genre file (default: GENRES_PATH, else genres.toml)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the engine: onnx (ONNX Runtime, fastest on CPU), transformers (torch) "
        "or openai (a remote server at OPENAI_BASE_URL) (default: BACKEND, else onnx)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="int8 (faster on CPU), fp32 (the reference; a GPU always runs fp32) or int4 "
        "(onnx only; below the quality bar) (default: PRECISION, else int8)",
    )
    parser.add_argument(
        "--device",
        help="where --backend transformers runs: auto, cpu, cuda, cuda:1 ... "
        "(default: DEVICE, else auto)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="model folder (default: the genre's model, else MODEL_DIR when set, "
        f"else models/gpt2 when present, else {FALLBACK_MODEL})",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=120,
        help="tokens to write, at most MAX_NEW_TOKENS_LIMIT (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature", type=float, help="sampling temperature (default: the genre's)"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        help="sample from the k likeliest tokens; 0: off (default: the genre's)",
    )
    parser.add_argument(
        "--top-p", type=float, help="nucleus sampling's probability mass (default: the genre's)"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        help="1 is none; higher repeats less (default: the genre's)",
    )
    parser.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        help="never repeat an n-gram of this size; 0: off (default: the genre's)",
    )
    parser.add_argument(
        "--seed", type=int, help="sampling seed, to write the same text again (default: random)"
    )
    parser.add_argument("--greedy", action="store_true", help="argmax decoding (no sampling)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def configured(args: argparse.Namespace) -> Settings:
    """The bot's settings (environment, then .env) with this run's options on top;
    raises `SettingsError` with one line naming what is wrong."""
    from app.settings import load_settings

    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("backend", args.backend),
            ("precision", args.precision),
            ("device", args.device),
            ("genres_path", args.genres),
        )
        if value is not None
    }
    return load_settings(**overrides)


def default_model_dir(settings: Settings) -> Path:
    """MODEL_DIR when it is set; else models/gpt2, or the tiny model without it."""
    if "model_dir" in settings.model_fields_set or settings.model_dir.exists():
        return settings.model_dir
    return FALLBACK_MODEL


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from app.runtime import make_pool
    from generation.types import GenerationRequest
    from stories.genres import GenreRegistry

    genres = GenreRegistry.load(settings.genres_path)
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
    model_dir = args.model_dir or genre.model or default_model_dir(settings)
    where = settings.openai_base_url if settings.backend == "openai" else model_dir
    print(f"loading {where} ({settings.backend}) ...", file=sys.stderr, flush=True)

    async with make_pool(settings, model_dir) as pool:
        ticket = pool.submit(GenerationRequest(args.prompt, params, primer=genre.primer))
        sys.stdout.write(args.prompt)
        async for delta in ticket.stream():
            sys.stdout.write(delta)
            sys.stdout.flush()
        result = await ticket.result()
        sys.stdout.write("\n")
    backend = pool.backend.name if pool.backend else settings.backend
    first = f"{result.first_token_s * 1000:.0f} ms" if result.first_token_s else "n/a"
    print(
        f"\n[{result.model_id} · {backend} · {genre.key} · seed {result.seed}] "
        f"{result.new_tokens} tokens in {result.generation_s:.2f} s "
        f"({result.tokens_per_s:.1f} tokens/s, first token {first}, "
        f"stopped: {result.finish_reason})",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from app.settings import SettingsError
    from generation.errors import GenerationError
    from stories.genres import GenreConfigError

    try:
        settings = configured(args)
    except SettingsError as error:
        print(f"error: configuration: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, settings))
    except (GenerationError, GenreConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
