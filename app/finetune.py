"""`python -m app.finetune`: a folder of texts -> a genre model.

    python -m app.finetune --data texts/noir --out models/noir-gpt2 --genre noir

Fine-tunes a causal LM (default: the local models/gpt2) on the .txt, .md and
.jsonl files of a folder (generation.finetune does the training) and, with
--genre, adds the genre that the new model serves to genres.toml. It lives in
app/ because it needs two layers: the training (generation) and the genre file
(stories).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generation.errors import ModelLoadError
from generation.finetune.data import DataError
from generation.finetune.pipeline import FinetuneError, finetune, say
from stories.genre_file import check_new_genre, register_model_genre
from stories.genres import GenreConfigError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, but none for a required option, a flag, or an
    option whose absence means something its help already says."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.finetune",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of .txt/.md/.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="the new model folder")
    parser.add_argument(
        "--base", type=Path, default=Path("models/gpt2"), help="model to start from"
    )
    parser.add_argument("--genre", help="add (or update) this genre in --genres, served by --out")
    parser.add_argument("--title", help="the genre's title (default: the key, capitalised)")
    parser.add_argument(
        "--description",
        help="the genre's one-line description (default: names the --data folder)",
    )
    parser.add_argument(
        "--genres", type=Path, default=Path("genres.toml"), help="the genre file --genre edits"
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=1.0,
        help="passes over the training data (up to --max-steps)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=1000, help="at most this many optimizer steps"
    )
    parser.add_argument(
        "--max-train-tokens",
        type=int,
        default=2_000_000,
        help="train on at most this many tokens (the rest is left out, and said so)",
    )
    parser.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warming up")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument("--block-size", type=int, help="tokens per block (default: the context)")
    parser.add_argument("--batch-size", type=int, default=4, help="blocks per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=4, help="micro-batches per step")
    parser.add_argument("--validation", type=float, default=0.1, help="fraction held out")
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="save a checkpoint every this many steps"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, the shuffling and dropout"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep --out/checkpoints after training"
    )
    parser.add_argument(
        "--no-convert", action="store_true", help="skip the ONNX conversion at the end"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_steps", "max_train_tokens", "batch_size", "grad_accum", "checkpoint_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.validation < 1 or not 0 <= args.warmup < 1 or args.epochs <= 0:
        parser.error("--validation and --warmup are fractions below 1; --epochs is positive")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.genre:
            check_new_genre(args.genres, args.genre)  # refuse a clash before hours of training
        code = finetune(args)
        if code == 0 and args.genre:
            title = args.title or args.genre.replace("-", " ").capitalize()
            description = args.description or f"Written by a model fine-tuned on {args.data.name}."
            register_model_genre(args.genres, args.genre, args.out, title, description)
            say(
                f"genre {args.genre!r} in {args.genres} now uses {args.out}; "
                "restart the bot to offer it"
            )
        return code
    except (FinetuneError, DataError, GenreConfigError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
