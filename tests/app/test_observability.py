"""The whole application (app.runtime.run) with Discord, HTTP, JSON logs at
DEBUG and every secret set: each log line is one JSON object, the lines of a
request carry its ids, /metrics moves, and no secret reaches a line or a metric."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from app.logs import configure_logging
from app.settings import load_settings
from tests.app.test_metrics import parse, value
from tests.bot.app_runner import running_app
from tests.bot.helpers import is_story
from tests.conftest import REPO, free_port
from tests.fakediscord.harness import FakeDiscord

TOKEN = "discord-token-e2e-0123456789"
KEY = "http-api-key-e2e-0123456789"
OPENAI_KEY = "sk-openai-key-e2e-0123456789"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Taken off first: configure_logging(force=True) closes the handlers it replaces,
    # and pytest's own must keep working after this test.
    root.handlers[:] = []
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_logs_and_metrics_of_the_running_application(
    fake: FakeDiscord,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    port = free_port()
    settings = load_settings(
        discord_token=TOKEN,
        discord_dev_guild_id=int(fake.server.guild_id),
        http_api_key=KEY,
        openai_api_key=OPENAI_KEY,  # not used by the local engine; must still never show
        model_dir=tiny_model_dir,
        database_path=tmp_path / "s.sqlite3",
        http_port=port,
        genres_path=REPO / "genres.toml",
        generation_threads=1,
        backend="transformers",
        log_level="DEBUG",
        log_format="json",
    )
    configure_logging(settings.log_level, fmt=settings.log_format, secrets=settings.secrets)
    auth = {"Authorization": f"Bearer {KEY}"}
    url = f"http://127.0.0.1:{port}"
    async with running_app(fake, settings), aiohttp.ClientSession() as session:
        handle = await fake.invoke(
            "story", user=fake.alice, genre="crime", prompt="Logged in JSON", length="short"
        )
        await fake.wait_for_message(lambda m: is_story(m) and "Logged in JSON" in m["content"])
        body = {"input": "Over HTTP", "max_new_tokens": 8}
        headers = {**auth, "X-Request-Id": "e2e-http"}
        async with session.post(f"{url}/", json=body, headers=headers) as reply:
            story_id = (await reply.json())["story_id"]
        async with session.get(f"{url}/metrics") as refused:
            assert refused.status == 401
        async with session.get(f"{url}/metrics", headers=auth) as scraped:
            exposition = await scraped.text()
    samples = parse(exposition)
    for frontend in ("discord", "api"):
        assert value(samples, "storybot_requests_total", frontend=frontend, outcome="story") == 1
    assert value(samples, "storybot_batch_rows_count") > 0  # the hook reached the engine
    assert value(samples, "storybot_database_write_seconds_count") > 0
    assert value(samples, "storybot_info", backend="transformers", precision="int8") == 1
    assert value(samples, "process_resident_memory_bytes") > 0

    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert {line["level"] for line in lines} >= {"DEBUG", "INFO"}
    http = [line for line in lines if line.get("request_id") == "e2e-http"]
    assert any(line["logger"] == "api.access" for line in http)
    assert any(line.get("story_id") == story_id for line in http)
    discord = [line for line in lines if line.get("request_id") == handle.id]
    assert discord and all(line["guild_id"] == fake.server.guild_id for line in discord)
    for secret in (TOKEN, KEY, OPENAI_KEY):
        assert secret not in output and secret not in exposition


def test_main_sets_up_json_logs_that_hide_the_secrets(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """`python -m bot` (app.runtime.main) configures logging from the settings."""
    import app.runtime

    async def serve(settings: object) -> None:
        for secret in (TOKEN, KEY, OPENAI_KEY):
            logging.getLogger("storybot").info("a careless line: %s", secret)

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setattr(app.runtime, "_serve_until_signal", serve)
    for name, secret in (
        ("DISCORD_TOKEN", TOKEN),
        ("HTTP_API_KEY", KEY),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("LOG_FORMAT", "json"),
    ):
        monkeypatch.setenv(name, secret)
    assert app.runtime.main() == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["a careless line: [redacted]"] * 3
