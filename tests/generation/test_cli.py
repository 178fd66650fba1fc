"""`python -m app.generate` streams a story to the terminal and reports its speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.generate", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=120,
    )


def story_args(model: Path) -> tuple[str, ...]:
    return (
        "--model-dir",
        str(model),
        "--genre",
        "crime",
        "--seed",
        "3",
        "--max-new-tokens",
        "30",
        "The detective reached the crime scene",
    )


def test_cli_streams_the_story_and_prints_timing(tiny_model_dir: Path) -> None:
    result = run(*story_args(tiny_model_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The detective reached the crime scene")
    assert len(result.stdout.strip()) > len("The detective reached the crime scene")
    assert (
        "tokens/s" in result.stderr and "seed 3" in result.stderr and "first token" in result.stderr
    )
    again = run(*story_args(tiny_model_dir))
    assert again.stdout == result.stdout  # same seed, same story


def test_cli_bad_input_is_one_line(tiny_model_dir: Path) -> None:
    for args, message in (
        (("--genre", "cooking", "x"), "Unknown genre"),
        (("--temperature", "0", "x"), "temperature"),
        (("   ",), "empty"),
    ):
        result = run("--model-dir", str(tiny_model_dir), *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr
