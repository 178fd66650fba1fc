"""The README's first command on a fresh checkout, done literally: copy
`.env.example` to `.env`, run `scripts/run.sh`, and get a story from `POST /`.

Once with the Hub reachable (the fake Hub of tests/fakehub, through
`HF_ENDPOINT`): GPT-2 is downloaded into models/gpt2 and served. Once offline:
the download fails fast and the tiny model is built and served, loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.fakehub import FakeHub

PROMPT = "The detective reached the crime scene"


def fresh_checkout(target: Path) -> Path:
    """The files a clone of this repository has (tracked, or new and not
    ignored), without .env, models/ or data/; the test tools' .venv linked in,
    which scripts/setup.sh finds up to date, as it would after scripts/test.sh."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(REPO / ".venv")
    assert not (target / ".env").exists() and not (target / "models").exists()
    return target


class Service:
    """`scripts/run.sh` in its own process group, its output in a file."""

    def __init__(self, checkout: Path, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = checkout / "run.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                ["scripts/run.sh"],
                cwd=checkout,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"scripts/run.sh exited {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)  # polling a condition: the service is starting
        pytest.fail(f"not serving after {timeout} s:\n{self.output()}")

    def post(self, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            self.url + "/",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    yield fresh_checkout(tmp_path / "storybot")


def environment(home: Path, hub_url: str, port: int) -> dict[str, str]:
    """A user's shell: no storybot setting but the port (so tests can run side
    by side), and where the Hub is."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    env.update(
        HOME=str(home),
        HF_HOME=str(home / "hf"),
        HF_ENDPOINT=hub_url,
        HF_HUB_DISABLE_TELEMETRY="1",
        HTTP_PORT=str(port),
        GENERATION_THREADS="1",
    )
    return env


def serve_and_write_a_story(checkout: Path, env: dict[str, str], port: int) -> str:
    shutil.copy(checkout / ".env.example", checkout / ".env")  # the README's step 1
    service = Service(checkout, env, port)
    try:
        service.wait_until_serving()
        status, body = service.post({"input": PROMPT, "max_new_tokens": 12})
        assert status == 200, body
        assert isinstance(body["output"], str) and body["output"].startswith(PROMPT)
        assert body["genre"] == "general" and body["story_id"] == 1
        status, body = service.post({"input": "   "})
        assert status == 422 and body["error"]["code"] == "empty_input"  # type: ignore[index]
    finally:
        code = service.stop()
    output = service.output()
    assert code == 0, output
    assert "stopped cleanly" in output and "Traceback" not in output
    assert (checkout / "data" / "storybot.sqlite3").is_file()
    return output


def test_copied_env_example_then_run_downloads_gpt2_and_serves(
    checkout: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    with FakeHub(tiny_model_dir, "gpt2") as hub:
        output = serve_and_write_a_story(
            checkout, environment(tmp_path / "home", hub.url, port), port
        )
        fetched = {seen.file for seen in hub.seen() if seen.fetches_body}
    assert "model.safetensors" in fetched
    manifest = json.loads((checkout / "models" / "gpt2" / "storybot.json").read_text())
    assert manifest["model_id"] == "gpt2" and manifest["commit"] == hub.commit
    assert "TINY" not in output
    assert not (checkout / "models" / "tiny-gpt2").exists()


def test_copied_env_example_then_run_offline_falls_back_to_the_tiny_model(
    checkout: Path, tmp_path: Path
) -> None:
    port = free_port()
    nobody = f"http://127.0.0.1:{free_port()}"  # refuses connections: offline
    output = serve_and_write_a_story(checkout, environment(tmp_path / "home", nobody, port), port)
    assert "running the TINY test model" in output
    assert (checkout / "models" / "tiny-gpt2" / "storybot.json").is_file()
    assert not (checkout / "models" / "gpt2" / "storybot.json").exists()
