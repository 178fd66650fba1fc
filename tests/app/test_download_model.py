"""download_model.py: the tiny build, the offline failure, the skip when complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from generation.modelfiles import MANIFEST, load_causal_lm
from tests.conftest import REPO


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
