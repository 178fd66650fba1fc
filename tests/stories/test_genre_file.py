"""Adding a fine-tuned genre to genres.toml keeps the admin's file intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stories.genre_file import check_new_genre, register_model_genre
from stories.genres import GenreConfigError, GenreRegistry
from tests.conftest import REPO


@pytest.fixture
def genres(tmp_path: Path) -> Path:
    path = tmp_path / "genres.toml"
    shutil.copy(REPO / "genres.toml", path)
    return path


def test_a_new_genre_is_appended_and_the_rest_kept(genres: Path, tmp_path: Path) -> None:
    before = genres.read_text()
    register_model_genre(genres, "noir", tmp_path / "models" / "noir", "Noir", 'Rain, "neon"')
    after = genres.read_text()
    assert after.startswith(before.rstrip("\n"))  # comments and order untouched
    noir = GenreRegistry.load(genres).get("noir")
    assert noir.title == "Noir" and noir.description == 'Rain, "neon"' and noir.primer == ""
    assert noir.model == tmp_path / "models" / "noir"
    assert 'model = "models/noir"' in after  # relative to the file's folder


def test_a_finetuned_genre_is_updated_in_place(genres: Path, tmp_path: Path) -> None:
    register_model_genre(genres, "noir", tmp_path / "first", "Noir", "one")
    assert check_new_genre(genres, "noir") is True
    register_model_genre(genres, "noir", tmp_path / "second", "ignored", "ignored")
    text = genres.read_text()
    assert text.count("[genres.noir]") == 1 and 'model = "second"' in text
    assert GenreRegistry.load(genres).get("noir").title == "Noir"


def test_clashes_and_bad_names_are_refused(genres: Path, tmp_path: Path) -> None:
    before = genres.read_text()
    with pytest.raises(GenreConfigError, match="built-in genre"):
        register_model_genre(genres, "crime", tmp_path, "Crime", "x")
    with pytest.raises(GenreConfigError, match="lowercase"):
        check_new_genre(genres, "Noir!")
    assert genres.read_text() == before
