"""PUBLIC_BASE_URL: where share links point (app.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("PUBLIC_BASE_URL", "HTTP_HOST", "HTTP_PORT", "HTTP_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({}, "http://127.0.0.1:5000"),
        ({"PUBLIC_BASE_URL": ""}, "http://127.0.0.1:5000"),  # as .env.example has it
        ({"HTTP_HOST": "::1", "HTTP_PORT": "8080"}, "http://[::1]:8080"),
        ({"PUBLIC_BASE_URL": " https://stories.example.org/ "}, "https://stories.example.org"),
        ({"PUBLIC_BASE_URL": "https://example.org/storybot"}, "https://example.org/storybot"),
    ],
)
def test_share_links_start_with_the_public_url_or_the_listening_address(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], base: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().share_base_url == base


@pytest.mark.parametrize(
    "value",
    [
        "stories.example.org",
        "ftp://example.org",
        "https://",
        "https://x.org/?a=1",
        "https://x.org/#top",
    ],
)
def test_a_public_url_that_is_no_web_address_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", value)
    with pytest.raises(SettingsError, match=r"^PUBLIC_BASE_URL: must be"):
        load_settings()
