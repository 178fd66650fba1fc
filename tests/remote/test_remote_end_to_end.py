"""BACKEND=openai end to end: the bot and the HTTP interface on a remote engine."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from app.settings import load_settings
from tests.bot.app_runner import running_app
from tests.bot.helpers import button, is_story
from tests.conftest import REPO, free_port
from tests.fakediscord.harness import FakeDiscord
from tests.remote.conftest import Serve, StandIn

# What a slim install leaves out; importing any of them fails the slim run.
HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "safetensors", "huggingface_hub")


async def test_bot_and_http_on_transformers_serve(
    fake: FakeDiscord, transformers_serve: Serve, tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    settings = load_settings(
        discord_token="t0ken",
        discord_dev_guild_id=int(fake.server.guild_id),
        backend="openai",
        openai_base_url=transformers_serve.url,
        model_dir=tiny_model_dir,  # only its tokenizer.json is used, to fit long stories
        database_path=tmp_path / "s.sqlite3",
        http_port=port,
        genres_path=REPO / "genres.toml",
    )
    async with running_app(fake, settings):
        handle = await fake.invoke(
            "story", user=fake.alice, genre="crime", prompt="The remote detective", length="short"
        )
        await handle.deferred()
        story = await fake.wait_for_message(
            lambda m: is_story(m) and "The remote detective" in m["content"]
        )
        assert len(story["content"]) > len("The remote detective") + 20
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/", json={"input": "Over HTTP"}) as reply:
                body = await reply.json()
            assert reply.status == 200 and body["output"].startswith("Over HTTP")
            assert len(body["output"]) > len("Over HTTP")
            async with session.get(f"{base}/readyz") as reply:
                ready = await reply.json()
    assert ready["ready"] and ready["backend"] == "openai"
    assert ready["remote"] == {"url": transformers_serve.url, "reachable": True, "error": None}


async def start_slim(env: dict[str, str]) -> asyncio.subprocess.Process:
    """`python -m bot` with torch and friends made unimportable."""
    code = (
        "import runpy, sys\n"
        f"for name in {HEAVY!r}: sys.modules[name] = None\n"
        "runpy.run_module('bot', run_name='__main__', alter_sys=True)\n"
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


def slim_env(tmp_path: Path, url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HTTP_"))}
    return env | {
        "BACKEND": "openai",
        "OPENAI_BASE_URL": url,
        "MODEL_DIR": str(tmp_path / "no-model-here"),
        "DATABASE_PATH": str(tmp_path / "s.sqlite3"),
        "HTTP_PORT": str(port),
    }


async def wait_ready(port: int, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.returncode is not None:
                assert process.stdout is not None
                raise AssertionError((await process.stdout.read()).decode())
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)  # polling a child process's start-up
    raise AssertionError("the slim bot did not come up")


async def test_the_slim_install_serves_without_torch(stand_in: StandIn, tmp_path: Path) -> None:
    port = free_port()
    process = await start_slim(slim_env(tmp_path, stand_in.url, port))
    try:
        await wait_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/", json={"input": "Slim"}) as reply:
                body = await reply.json()
            assert body["output"] == "Slim word0. word1. word2. word3. word4."
            async with session.get(f"{base}/readyz") as reply:
                assert reply.status == 200
            await stand_in.stop()  # the engine goes away: readiness says so
            async with session.get(f"{base}/readyz") as reply:
                ready = await reply.json()
            assert reply.status == 503 and ready["remote"]["reachable"] is False
            async with session.post(f"{base}/", json={"input": "Again"}) as reply:
                failed = await reply.json()
            assert reply.status == 502 and reply.headers["Retry-After"]
            assert failed["error"]["code"] == "engine_unavailable"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
    assert process.returncode == 0, output
    assert "Traceback" not in output


async def test_an_unreachable_engine_is_one_line_at_start_up(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    process = await start_slim(slim_env(tmp_path, url, free_port()))
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"error: OPENAI_BASE_URL {url} is unreachable: cannot connect")
    assert "Traceback" not in output


async def test_a_story_cut_mid_stream_shows_a_clear_error_and_retry_works(
    fake: FakeDiscord, stand_in: StandIn, tmp_path: Path
) -> None:
    """What a Discord user sees when the engine's stream breaks after some text."""
    stand_in.script = [("cut", 2)]  # the first story breaks; the retry streams whole
    settings = load_settings(
        discord_token="t0ken",
        discord_dev_guild_id=int(fake.server.guild_id),
        backend="openai",
        openai_base_url=stand_in.url,
        model_dir=tmp_path / "no-model",
        database_path=tmp_path / "s.sqlite3",
        http_port=free_port(),
        genres_path=REPO / "genres.toml",
        user_cooldown_s=0,
    )
    async with running_app(fake, settings):
        handle = await fake.invoke(
            "story", user=fake.alice, genre="crime", prompt="Broken wire", length="short"
        )
        await handle.deferred()
        shown = await fake.wait_for_message(lambda m: "stopped in the middle" in m["content"])
        assert shown["content"].startswith("**Broken wire**")
        assert len(stand_in.completions) == 1  # text was shown: no silent retry
        retry = await fake.click(shown, button(shown, "Retry"), user=fake.alice)
        await retry.deferred()
        await fake.wait_until(lambda: is_story(shown))
        assert "word4." in shown["content"] and "stopped in the middle" not in shown["content"]
