"""`python -m bot`: the bot and the HTTP service (the HTTP service alone without a token).

The arguments are parsed before anything heavy is imported, so `--help` (and a
mistyped option) answers at once without loading a model or opening the
database.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Run storybot, which writes stories with GPT-2: the HTTP service (POST / writes
a story; /healthz, /readyz and /openapi.json describe it) on
http://127.0.0.1:5000 by default and, when DISCORD_TOKEN is set, the Discord
bot too. Without DISCORD_TOKEN only the HTTP service starts. The model loads at
start-up; Ctrl-C or SIGTERM stops it cleanly.
"""

EPILOG = """\
All configuration comes from the environment, then from the file .env in the
current folder (copy .env.example, which describes every variable). The main
ones: DISCORD_TOKEN, MODEL_DIR (models/gpt2; `python download_model.py` fetches
it), BACKEND (onnx, transformers or openai) and PRECISION (int8 or fp32),
DATABASE_PATH (or DATABASE_URL), HTTP_HOST, HTTP_PORT and HTTP_API_KEY, GENRES_PATH,
LOG_LEVEL.
A missing or invalid value stops start-up with one line naming the variable
(exit status 2). See README.md for setting up and running it.
"""


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m bot",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)  # --help exits 0; an unknown argument exits 2

    from app.runtime import main as serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
