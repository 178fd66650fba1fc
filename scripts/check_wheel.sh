#!/usr/bin/env bash
# The distribution as a user installs it: build the wheel, install it with the
# runtime lock into a clean venv, and run its console scripts' --help.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation . -w "$work/dist"
rm -rf build ./*.egg-info
"$PYTHON" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install --quiet)
"${pip[@]}" --no-deps torch==2.13.0
"${pip[@]}" --require-hashes -r requirements.txt
"${pip[@]}" --no-deps "$work"/dist/storybot-*.whl
cd "$work"  # not the checkout: the installed package, not the source tree
for script in storybot storybot-download storybot-generate storybot-finetune storybot-bench; do
  "$work/venv/bin/$script" --help > /dev/null || { echo "error: $script --help failed" >&2; exit 1; }
done
"$work/venv/bin/python" -m storage.copy --help > /dev/null \
  || { echo "error: python -m storage.copy --help failed" >&2; exit 1; }
# The package data: the built-in genres, the schema files and the bot's message
# catalogues, from a folder with none of them; then a story from the installed
# code, on the tiny model.
"$work/venv/bin/python" - <<'PY'
import asyncio, tempfile
from pathlib import Path
from app.settings import load_settings
from bot.i18n import messages
from stories.genres import GenreRegistry
from storage.db import PG_SCHEMA_DIR, SCHEMA_DIR, migrations
from storage.store import Store

# PostgreSQL's schema files ship too, reaching the version SQLite's reach.
assert migrations(PG_SCHEMA_DIR, baseline=True)[-1][0] == migrations(SCHEMA_DIR)[-1][0]
assert messages("de")._("Cancelled.") == "Abgebrochen.", "no German catalogue in the wheel"
assert messages("es-ES")._("Cancelled.") == "Cancelado.", "no Spanish catalogue in the wheel"

settings = load_settings()
genres = GenreRegistry.load(settings.genres_path)
assert "crime" in {genre.key for genre in genres}, settings.genres_path

async def schema() -> None:
    async with await Store.open(Path(tempfile.mkdtemp()) / "db.sqlite3"):
        pass

asyncio.run(schema())
PY
"$work/venv/bin/storybot-download" --tiny --out "$work/tiny" > /dev/null
MODEL_DIR="$work/tiny" GENERATION_THREADS=1 "$work/venv/bin/storybot-generate" \
  --max-new-tokens 8 --seed 1 "The detective reached the crime scene" > /dev/null
echo "wheel ok: $(basename "$work"/dist/storybot-*.whl) installs from the lock; its commands answer --help"
