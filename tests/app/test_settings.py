from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings

SECRET = "MTIzNDU2Nzg5MDEyMzQ1Njc4.secret-token-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("DISCORD_", "HTTP_", "MODEL_", "DATABASE_", "LOG_", "QUEUE_", "USER_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    settings = load_settings()
    assert settings.http_host == "127.0.0.1" and settings.http_port == 5000
    assert settings.discord_token is None and settings.model_dir == Path("models/gpt2")
    assert settings.backend == "onnx" and settings.precision == "int8"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HTTP_PORT": "abc"}, "HTTP_PORT"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
        ({"DISCORD_DEV_GUILD_ID": "guild"}, "DISCORD_DEV_GUILD_ID"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"BACKEND": "magic"}, "BACKEND"),
        ({"QUEUE_SIZE": "0"}, "QUEUE_SIZE"),
        ({"HTTP_HOST": "0.0.0.0"}, "HTTP_API_KEY"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert name in message and "\n" not in message


def test_dotenv_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("HTTP_PORT=6001\nLOG_LEVEL=debug\nUSER_COOLDOWN_S=3\n")
    monkeypatch.setenv("HTTP_PORT", "6002")
    settings = load_settings()
    assert settings.http_port == 6002 and settings.log_level == "DEBUG"
    assert settings.user_cooldown_s == 3


def test_token_never_shows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    monkeypatch.setenv("HTTP_API_KEY", SECRET + "2")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "3")
    settings = load_settings()
    logging.getLogger("test").warning("settings: %s %r", settings, settings)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in caplog.text
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == SECRET
    monkeypatch.setenv("HTTP_PORT", "nope")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert SECRET not in str(error.value)


def test_public_host_needs_a_long_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("HTTP_API_KEY", "k" * 15)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "HTTP_API_KEY" in message and "16" in message and "\n" not in message
    assert "k" * 15 not in message  # the key itself is never echoed
    monkeypatch.setenv("HTTP_API_KEY", "k" * 16)
    assert load_settings().http_host == "0.0.0.0"
    # On loopback a short key is the operator's choice.
    monkeypatch.setenv("HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HTTP_API_KEY", "k")
    assert load_settings().http_api_key is not None


@pytest.mark.parametrize(
    ("env", "hosts"),
    [
        ({}, ["localhost", "127.0.0.1", "::1"]),
        ({"HTTP_HOST": "0.0.0.0"}, ["localhost", "127.0.0.1", "::1"]),
        ({"HTTP_HOST": "10.1.2.3"}, ["localhost", "127.0.0.1", "::1", "10.1.2.3"]),
        (
            {"HTTP_ALLOWED_HOSTS": " story.example.org , 10.1.2.3 "},
            ["story.example.org", "10.1.2.3"],
        ),
        ({"HTTP_ALLOWED_HOSTS": "*"}, ["*"]),
    ],
)
def test_allowed_hosts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], hosts: list[str]
) -> None:
    monkeypatch.setenv("HTTP_API_KEY", "x" * 32)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().allowed_hosts == hosts


def test_env_example_lists_every_setting() -> None:
    from app.settings import Settings
    from tests.conftest import REPO

    example = (REPO / ".env.example").read_text()
    # Set (KEY=value) or listed with its default commented out (# KEY=value):
    # a copied .env must not override what the image or the script decides.
    keys = {match[1] for match in re.finditer(r"^(?:# )?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE)}
    assert keys == {name.upper() for name in Settings.model_fields}
    for key in ("MODEL_DIR", "HTTP_HOST", "OPENAI_TOKENIZER"):
        assert re.search(rf"^# {key}=", example, re.MULTILINE), key


def test_remote_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND", "openai")
    with pytest.raises(SettingsError, match="BACKEND=openai needs OPENAI_BASE_URL"):
        load_settings()
    monkeypatch.setenv("OPENAI_BASE_URL", "vllm:8000/v1")
    with pytest.raises(SettingsError, match=r"^OPENAI_BASE_URL: must be an http"):
        load_settings()
    monkeypatch.setenv("OPENAI_BASE_URL", " http://vllm:8000/v1/ ")
    settings = load_settings()
    assert settings.openai_base_url == "http://vllm:8000/v1"
    assert settings.openai_model is None and settings.openai_sampling_fields == "auto"
    monkeypatch.setenv("OPENAI_SAMPLING_FIELDS", "sometimes")
    with pytest.raises(SettingsError, match=r"^OPENAI_SAMPLING_FIELDS"):
        load_settings()
