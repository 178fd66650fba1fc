from __future__ import annotations

from pathlib import Path

import pytest

from stories.genres import GenreConfigError, GenreRegistry, UnknownGenre
from tests.conftest import REPO


def test_shipped_genres_are_valid_and_complete() -> None:
    genres = GenreRegistry.load(REPO / "genres.toml")
    keys = {genre.key for genre in genres}
    assert 10 <= len(genres) <= 25
    assert {"romance", "crime", "politics"} <= keys
    assert any(genre.age_restricted for genre in genres)
    for genre in genres:
        assert genre.title and len(genre.description) <= 100
        assert genre.primer.strip() or genre is genres.default  # only the default has no primer
        genre.preset.validate()
    assert genres.default.key == "general" and not genres.default.primer


def test_lookup_is_forgiving_about_case_and_clear_when_unknown() -> None:
    genres = GenreRegistry.load(REPO / "genres.toml")
    assert genres.get(" Crime ").key == "crime"
    with pytest.raises(UnknownGenre, match="Choose one of"):
        genres.get("cooking")


def test_params_take_the_callers_choices_over_the_preset() -> None:
    crime = GenreRegistry.load(REPO / "genres.toml").get("crime")
    params = crime.params(max_new_tokens=33, seed=4, temperature=None)
    assert params.max_new_tokens == 33 and params.seed == 4
    assert params.temperature == crime.preset.temperature


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("", "at least one"),
        ("[genres.Bad_Key]\ntitle='x'\ndescription='y'", "lowercase"),
        ("[genres.a]\ndescription='y'", "title"),
        ("[genres.a]\ntitle='x'\ndescription='y'\ntemperature=0", "temperature"),
        ("[genres.a]\ntitle='x'\ndescription='y'\ncolour='red'", "unknown field"),
        ("[genres.a]\ntitle='x'\ndescription='y'\nage_restricted='yes'", "age_restricted"),
        ("[genres.a\n", "not valid TOML"),
        ("".join(f"[genres.g{i}]\ntitle='x'\ndescription='y'\n" for i in range(26)), "at most 25"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "genres.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(GenreConfigError, match=message):
        GenreRegistry.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenreConfigError, match="not found"):
        GenreRegistry.load(tmp_path / "nope.toml")
