"""download_model.py: the tiny build, the offline failure, the skip when complete,
and real downloads from a fake Hugging Face Hub on loopback (tests/fakehub)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from download_model import is_complete
from generation.modelfiles import MANIFEST, load_causal_lm
from tests.conftest import REPO
from tests.fakehub import FakeHub, Seen


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "download_model.py", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_tiny_builds_offline_and_loads_like_gpt2(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    started = time.monotonic()
    result = run("--tiny", "--out", str(out), "--tiny-steps", "0", HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    assert {"config.json", "model.safetensors", "tokenizer.json", MANIFEST} <= {
        p.name for p in out.iterdir()
    }
    model, tokenizer = load_causal_lm(out)
    assert model.config.model_type == "gpt2" and len(tokenizer) > 256
    assert tokenizer.decode(tokenizer.encode("Héllo 😀")) == "Héllo 😀"


def test_offline_download_fails_fast_with_advice(tmp_path: Path) -> None:
    started = time.monotonic()
    # A closed port on loopback: the Hub is unreachable, as on a machine without network.
    result = run("--out", str(tmp_path / "gpt2"), HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--tiny" in errors[0]
    assert not (tmp_path / "gpt2" / MANIFEST).exists()


def test_complete_download_is_not_fetched_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_model_dir, folder)
    (folder / MANIFEST).write_text(json.dumps({"model_id": "gpt2", "revision": None}))
    result = run("--out", str(folder), HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "already" in result.stdout


# Against a fake Hugging Face Hub on loopback (tests/fakehub) ----------------

ALLOWED = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str  # what a terminal would show, when run in one

    def error_line(self) -> str:
        """The one `error:` line, which must also be the last thing printed."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], self.stderr
        return errors[0]


def hub_env(hub: FakeHub, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {
        **env,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def download(hub: FakeHub, out: Path, *args: str, home: Path | None = None) -> Run:
    home = home or out.parent / "hf-home"
    result = subprocess.run(
        [sys.executable, "download_model.py", "--out", str(out), *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=300,
        env=hub_env(hub, home),
    )
    return Run(result.returncode, result.stdout, result.stderr)


def download_in_terminal(hub: FakeHub, out: Path) -> Run:
    """As `download`, with stderr on a pseudo-terminal, where progress bars show."""
    master, slave = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide, and tqdm draws a bar that wide.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "download_model.py", "--out", str(out)],
        cwd=REPO,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=hub_env(hub, out.parent / "hf-home"),
    )
    os.close(slave)
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=300)
    finally:
        reader.join(timeout=10)
        os.close(master)
    return Run(proc.returncode, stdout, b"".join(shown).decode(errors="replace"))


@pytest.fixture
def hub(tiny_model_dir: Path) -> Iterator[FakeHub]:
    with FakeHub(tiny_model_dir, "gpt2") as fake:
        yield fake


@dataclass
class Downloaded:
    folder: Path
    run: Run
    requests: list[Seen]
    commit: str


@pytest.fixture(scope="module")
def downloaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Downloaded:
    """One complete download from the fake Hub, in a terminal, shared by the module."""
    out = tmp_path_factory.mktemp("download") / "gpt2"
    with FakeHub(tiny_model_dir, "gpt2") as hub:
        run = download_in_terminal(hub, out)
        return Downloaded(out, run, hub.seen(), hub.commit)


def test_download_completes_loads_and_shows_progress(
    downloaded: Downloaded, tiny_model_dir: Path
) -> None:
    run, out = downloaded.run, downloaded.folder
    assert run.returncode == 0, run.stderr
    assert "ok: gpt2 loads" in run.stdout
    assert "Traceback" not in run.stderr
    # In a terminal, the Hub client's byte progress bar shows.
    assert "Download complete" in run.stderr and re.search(r"\d+kB", run.stderr), run.stderr
    names = {p.name for p in out.iterdir() if p.is_file()}
    assert ALLOWED | {MANIFEST} <= names
    assert not names & {"README.md", "pytorch_model.bin", ".gitattributes"}
    for name in ALLOWED:
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["model_id"] == "gpt2" and manifest["commit"] == downloaded.commit
    model, tokenizer = load_causal_lm(out)
    assert model.config.model_type == "gpt2" and len(tokenizer) > 256
    # The routes huggingface_hub calls: the model info, the file tree at that
    # commit, and a HEAD then a GET of /resolve/ for each allowed file, no more.
    commit = downloaded.commit
    routes = {(seen.method, seen.path) for seen in downloaded.requests}
    assert routes == {
        ("GET", "/api/models/gpt2"),
        ("GET", f"/api/models/gpt2/tree/{commit}"),
        *{("HEAD", f"/gpt2/resolve/{commit}/{name}") for name in ALLOWED},
        *{("GET", f"/gpt2/resolve/{commit}/{name}") for name in ALLOWED},
    }
    assert all(seen.status == 200 for seen in downloaded.requests)


def test_second_run_fetches_no_file(downloaded: Downloaded, hub: FakeHub) -> None:
    run = download(hub, downloaded.folder)
    assert run.returncode == 0, run.stderr
    assert "nothing to do" in run.stdout
    assert hub.body_fetches() == []
    assert hub.seen() == []  # not even metadata: the manifest says it is complete


def test_force_fetches_again(downloaded: Downloaded, hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "gpt2"
    shutil.copytree(downloaded.folder, out)
    run = download(hub, out, "--force")
    assert run.returncode == 0, run.stderr
    assert {seen.file for seen in hub.body_fetches()} == ALLOWED


def test_cut_off_download_resumes_with_a_range_request(
    hub: FakeHub, tmp_path: Path, tiny_model_dir: Path
) -> None:
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    cut = hub.cut("model.safetensors", after=len(weights) // 2)
    out = tmp_path / "gpt2"
    run = download(hub, out)
    assert run.returncode == 0, run.stderr
    assert cut.fired == 1
    fetches = [seen for seen in hub.body_fetches() if seen.file == "model.safetensors"]
    assert [seen.status for seen in fetches] == [200, 206]
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", fetches[1].range or "").group(1))  # type: ignore[union-attr]
    assert 0 < resumed_at <= len(weights) // 2  # not from the start: what came is kept
    assert (out / "model.safetensors").read_bytes() == weights
    assert (out / MANIFEST).is_file()


def weights_get(seen: Seen) -> bool:
    return seen.fetches_body and seen.file == "model.safetensors"


@pytest.mark.parametrize(
    ("fault", "model", "expected"),
    [
        ("none", "nosuch/model", "unknown model id 'nosuch/model'"),
        ("gated", "gpt2", "is gated"),
        ("500", "gpt2", "answered HTTP 500"),
        ("500 on the weights", "gpt2", "answered HTTP 500"),
        ("connection drops", "gpt2", "could not reach the Hugging Face Hub"),
    ],
)
def test_hub_errors_give_one_line_and_no_complete_folder(
    hub: FakeHub, tmp_path: Path, fault: str, model: str, expected: str
) -> None:
    if fault == "gated":
        hub.fail(401, error_code="GatedRepo")
    elif fault == "500":
        hub.fail(500)
    elif fault == "500 on the weights":
        hub.fail(500, weights_get)
    elif fault == "connection drops":  # every time, before a whole chunk came
        hub.cut("model.safetensors", after=1000, times=None)
    out = tmp_path / "gpt2"
    run = download(hub, out, "--model", model)
    assert run.returncode == 1
    assert expected in run.error_line()
    assert not is_complete(out, model, None) and not (out / MANIFEST).exists()


def test_half_download_is_finished_not_taken_for_complete(hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "gpt2"
    hub.fail(500, weights_get)
    assert download(hub, out).returncode == 1
    assert (out / "config.json").is_file() and not (out / "model.safetensors").exists()
    # The Hub down now, and a fresh client cache (another machine, a new
    # container): the folder on disk is neither vouched for nor blamed.
    hub.clear()
    hub.fail(500)
    run = download(hub, out, home=tmp_path / "other-hf-home")
    assert run.returncode == 1
    assert "answered HTTP 500" in run.error_line()
    # Back up: only what is missing is fetched.
    hub.clear()
    run = download(hub, out)
    assert run.returncode == 0, run.stderr
    assert [seen.file for seen in hub.body_fetches()] == ["model.safetensors"]
    assert (out / MANIFEST).is_file()
