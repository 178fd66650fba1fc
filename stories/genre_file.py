"""Adding a fine-tuned model's genre to `genres.toml`, keeping the admin's text.

The file is edited as text (a new `[genres.<key>]` table, or the `model` line
of an earlier fine-tune's table), checked by the registry's own loader before
it is written, and replaced atomically: a mistake never leaves a file that
stops the bot.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

from stories.genres import _KEY, MAX_GENRES, GenreConfigError, GenreRegistry, read_genre_file


def check_new_genre(path: Path, key: str) -> bool:
    """Raise `GenreConfigError` unless `key` can name a model genre; True when it
    updates an earlier fine-tune's genre rather than adding one."""
    if not _KEY.match(key):
        raise GenreConfigError(
            f"genre {key!r}: use lowercase letters, digits and dashes (at most 32)"
        )
    genres = _table(path)
    if key in genres:
        if "model" not in genres[key]:
            raise GenreConfigError(
                f"genre {key!r} is a built-in genre of {path}: choose another name"
            )
        return True
    if len(genres) >= MAX_GENRES:
        raise GenreConfigError(f"{path} already has {MAX_GENRES} genres, Discord's limit")
    return False


def register_model_genre(
    path: Path, key: str, model_dir: Path, title: str, description: str
) -> None:
    """Add (or point at a new model) the genre `key` served by `model_dir`."""
    updating = check_new_genre(path, key)
    text = path.read_text(encoding="utf-8")
    model = Path(os.path.relpath(model_dir.resolve(), path.resolve().parent)).as_posix()
    if updating:
        new = _replace_model_line(text, key, model)
    else:
        table = (
            f"\n[genres.{key}]\n"
            f"title = {json.dumps(title[:100])}\n"
            f"description = {json.dumps(description[:100])}\n"
            '# A fine-tuned model knows its genre: it needs no primer.\nprimer = ""\n'
            f"model = {json.dumps(model)}\n"
        )
        new = text.rstrip("\n") + "\n" + table
    GenreRegistry.from_dict(tomllib.loads(new), source=str(path), base=path.parent)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(new, encoding="utf-8")
    os.replace(staging, path)


def _table(path: Path) -> dict[str, dict[str, object]]:
    genres = read_genre_file(path).get("genres", {})
    return genres if isinstance(genres, dict) else {}


def _replace_model_line(text: str, key: str, model: str) -> str:
    lines = text.splitlines(keepends=True)
    header = re.compile(rf"^\s*\[genres\.{re.escape(key)}\]\s*(#.*)?$")
    inside = False
    for index, line in enumerate(lines):
        if header.match(line):
            inside = True
        elif inside and line.lstrip().startswith("["):
            break
        elif inside and re.match(r"^\s*model\s*=", line):
            lines[index] = f"model = {json.dumps(model)}\n"
            return "".join(lines)
    raise GenreConfigError(f"genre {key!r}: could not find its model line to update")
