"""The genre registry: `genres.toml`, checked at start-up.

A genre steers GPT-2 with a hidden primer and a sampling preset, may name a
model folder of its own (a fine-tuned genre model), and may be restricted to
age-restricted channels.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from generation.errors import InvalidRequest
from generation.messages import N_
from generation.types import GenerationParams

MAX_GENRES = 25  # Discord's limit for slash-command choices
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_PRESET_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size")
_ALLOWED = {"title", "description", "primer", "model", "age_restricted", *_PRESET_FIELDS}


class GenreConfigError(Exception):
    """genres.toml is invalid; the message names the genre and the field."""


class UnknownGenre(InvalidRequest):
    code = "unknown_genre"


@dataclass(frozen=True)
class Genre:
    key: str
    title: str
    description: str
    primer: str
    preset: GenerationParams
    model: Path | None = None
    age_restricted: bool = False

    def params(self, **overrides: Any) -> GenerationParams:
        """The genre's preset with a caller's choices (length, seed...) on top."""
        known = {f.name for f in fields(GenerationParams)}
        chosen = {k: v for k, v in overrides.items() if k in known and v is not None}
        return replace(self.preset, **chosen)


class GenreRegistry:
    def __init__(self, genres: list[Genre]) -> None:
        self._genres = {genre.key: genre for genre in genres}

    def __iter__(self) -> Iterator[Genre]:
        return iter(self._genres.values())

    def __len__(self) -> int:
        return len(self._genres)

    def __contains__(self, key: object) -> bool:
        return key in self._genres

    @property
    def default(self) -> Genre:
        return next(iter(self._genres.values()))

    def get(self, key: str | None) -> Genre:
        if key is None or key == "":
            return self.default
        genre = self._genres.get(str(key).strip().lower())
        if genre is None:
            names = ", ".join(self._genres)
            raise UnknownGenre(
                N_(
                    "Unknown genre {genre}. Choose one of: {genres}.",
                    genre=repr(str(key)[:40]),
                    genres=names,
                )
            )
        return genre

    @classmethod
    def load(cls, path: Path) -> GenreRegistry:
        return cls.from_dict(read_genre_file(path), source=str(path), base=path.parent)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "genres", base: Path = Path()
    ) -> GenreRegistry:
        table = data.get("genres")
        if not isinstance(table, dict) or not table:
            raise GenreConfigError(f"{source}: needs at least one [genres.<key>] table")
        if len(table) > MAX_GENRES:
            raise GenreConfigError(
                f"{source}: {len(table)} genres, but Discord allows at most {MAX_GENRES} choices"
            )
        return cls([_parse(key, value, source, base) for key, value in table.items()])


def read_genre_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenreConfigError(f"{path}: genre file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise GenreConfigError(f"{path}: not valid TOML: {error}") from None


def _parse(key: str, entry: Any, source: str, base: Path) -> Genre:
    where = f"{source}: genre {key!r}"
    if not _KEY.match(key):
        raise GenreConfigError(f"{where}: key must be lowercase letters, digits and dashes")
    if not isinstance(entry, dict):
        raise GenreConfigError(f"{where}: must be a table")
    unknown = set(entry) - _ALLOWED
    if unknown:
        raise GenreConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")

    def text(name: str, limit: int, required: bool = True) -> str:
        value = entry.get(name, "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise GenreConfigError(f"{where}: {name} must be a non-empty string")
        if len(value) > limit:
            raise GenreConfigError(f"{where}: {name} is longer than {limit} characters")
        return value

    preset_values = {name: entry[name] for name in _PRESET_FIELDS if name in entry}
    preset = replace(GenerationParams(), **preset_values)
    try:
        preset.validate()
    except InvalidRequest as error:
        raise GenreConfigError(f"{where}: {error}") from None
    model = entry.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise GenreConfigError(f"{where}: model must be a folder path")
    restricted = entry.get("age_restricted", False)
    if not isinstance(restricted, bool):
        raise GenreConfigError(f"{where}: age_restricted must be true or false")
    return Genre(
        key=key,
        title=text("title", 100),
        description=text("description", 100),
        primer=text("primer", 1000, required=False),
        preset=preset,
        model=(base / model) if model else None,
        age_restricted=restricted,
    )
