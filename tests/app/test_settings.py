from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml

from app.settings import BUILTIN_GENRES, SamplingFields, SettingsError, load_settings
from tests.conftest import REPO

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


def test_genres_come_from_the_working_folder_else_from_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GENRES_PATH", raising=False)
    # An installed storybot run in a folder without genres.toml: the built-in genres.
    packaged = load_settings().genres_path
    assert packaged == BUILTIN_GENRES and packaged.is_file()
    assert packaged.read_text() == (REPO / "genres.toml").read_text()
    # The admin's copy in the working folder wins...
    (tmp_path / "genres.toml").write_text("")
    assert load_settings().genres_path == Path("genres.toml")
    # ... and so does any other path, even one that does not exist (start-up then
    # says so, rather than silently serving other genres).
    monkeypatch.setenv("GENRES_PATH", "nowhere/genres.toml")
    assert load_settings().genres_path == Path("nowhere/genres.toml")


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


OLD_NAMES = {"torch_threads"}  # read for compatibility, not listed in .env.example
# The secrets a user may have to set; all else in .env.example is commented out.
SET_IN_EXAMPLE = {"DISCORD_TOKEN", "HTTP_API_KEY"}


def _env_file(text: str) -> dict[str, str]:
    """A .env file read by docker compose's env_file rules (compose-spec): `#`
    lines and blank lines are ignored, VAR=VAL sets VAL (quotes removed, an
    unquoted value ends at " #"), VAR= sets the empty string."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        values[key.strip()] = value
    return values


def _image_environment() -> set[str]:
    """Variables the Dockerfile's ENV instructions and compose.yaml set."""
    from tests.conftest import REPO

    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    names = set()
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for service in compose["services"].values():
        names |= set(service.get("environment", {}))
    return names


def test_env_example_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.settings import Settings
    from tests.conftest import REPO

    example = (REPO / ".env.example").read_text()
    listed = dict(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=(.*)$", example, re.MULTILINE))
    assert set(listed) == {name.upper() for name in Settings.model_fields} - {
        name.upper() for name in OLD_NAMES
    }
    defaults = load_settings().model_dump()
    # Uncommenting any line as it stands changes nothing: each shows the default.
    for key, value in listed.items():
        monkeypatch.setenv(key, value)
        assert load_settings().model_dump() == defaults, f"{key}={value} is not the default"
        monkeypatch.delenv(key)


def test_a_copied_env_example_overrides_nothing(tmp_path: Path) -> None:
    """README step 1 of "Discord" and "Docker": cp .env.example .env. Read as
    compose reads it, it sets only the empty secrets, none of which the image
    or compose.yaml sets (an empty HTTP_HOST or OPENAI_TOKENIZER would undo the
    image's); read as the bot reads it, it gives the defaults."""
    from tests.conftest import REPO

    passed = _env_file((REPO / ".env.example").read_text())
    assert set(passed) <= SET_IN_EXAMPLE and set(passed.values()) == {""}, passed
    assert not set(passed) & _image_environment()
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    assert load_settings().model_dump() == load_settings(_env_file=None).model_dump()


def test_the_old_threads_name_still_works_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_THREADS", "3")
    settings = load_settings()
    assert settings.generation_threads == 3
    assert any("GENERATION_THREADS" in line for line in settings.deprecations)
    monkeypatch.setenv("GENERATION_THREADS", "2")  # the new name wins
    assert load_settings().generation_threads == 2
    monkeypatch.delenv("TORCH_THREADS")
    assert load_settings().deprecations == []


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
    monkeypatch.setenv("OPENAI_SAMPLING_FIELDS", "llamacpp")
    assert load_settings().openai_sampling_fields == "llamacpp"


def test_sampling_fields_are_the_backends_dialects() -> None:
    """Settings name the same dialects the remote backend knows (kept apart so
    settings import nothing from generation)."""
    from generation import dialects

    assert get_args(SamplingFields) == get_args(dialects.SamplingFields)
    assert set(get_args(SamplingFields)) == {"auto", *dialects.DIALECTS, *dialects.ALIASES}


def test_database_is_a_path_by_default_or_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().database == Path("data/storybot.sqlite3")
    monkeypatch.setenv("DATABASE_PATH", "/srv/stories.sqlite3")
    assert load_settings().database == Path("/srv/stories.sqlite3")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///relative/s.sqlite3")
    assert load_settings().database == Path("relative/s.sqlite3")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////absolute/s.sqlite3")
    assert load_settings().database == Path("/absolute/s.sqlite3")
    url = "postgresql://storybot:p%40ss-W0rd@db.internal:5432/storybot"
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings()
    assert settings.database == url  # wins over DATABASE_PATH
    assert "p%40ss-W0rd" in settings.secrets
    assert "p%40ss" not in repr(settings)


@pytest.mark.parametrize(
    "value",
    ["mysql://u@h/db", "sqlite:relative", "sqlite:///", "postgresql:///nohost", "data/s.sqlite3"],
)
def test_a_database_url_that_is_not_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", value)
    with pytest.raises(SettingsError, match=r"^DATABASE_URL: "):
        load_settings()


def test_instance_id_is_a_short_plain_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTANCE_ID", "storybot-1")
    assert load_settings().instance_id == "storybot-1"
    monkeypatch.setenv("INSTANCE_ID", "two words")
    with pytest.raises(SettingsError, match=r"^INSTANCE_ID: "):
        load_settings()


def test_shards_are_all_by_default_or_those_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SHARD_COUNT", "SHARD_IDS"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert settings.shard_count is None and settings.shards is None  # Discord says how many
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SHARD_IDS", " 2, 3 ")
    settings = load_settings()
    assert settings.shard_count == 4 and settings.shards == [2, 3]


@pytest.mark.parametrize(
    ("count", "ids", "message"),
    [
        ("", "0", "SHARD_IDS needs SHARD_COUNT"),
        ("2", "2", "shard 2 does not exist with SHARD_COUNT=2"),
        ("2", "one", "SHARD_IDS must be shard numbers separated by commas"),
        ("4", "1,1", "SHARD_IDS must name each shard once"),
        ("0", "", "SHARD_COUNT: "),
    ],
)
def test_a_wrong_shard_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, count: str, ids: str, message: str
) -> None:
    monkeypatch.setenv("SHARD_COUNT", count)
    monkeypatch.setenv("SHARD_IDS", ids)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


def test_no_http_interface_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_ENABLED", "false")
    with pytest.raises(SettingsError, match="HTTP_ENABLED=false needs DISCORD_TOKEN"):
        load_settings()
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    assert not load_settings().http_enabled
