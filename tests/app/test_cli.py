"""The command lines as a user runs them: `--help` of each, what it imports, and a
story written through the configured backend."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

import app.finetune as finetune_cli
import app.generate as generation_cli
import bench.__main__ as bench_cli
import bot.__main__ as bot_cli
from app.settings import BackendName, Precision
from tests.conftest import REPO

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "bot": bot_cli.build_parser,
    "app.generate": generation_cli.build_parser,
    "app.finetune": finetune_cli.build_parser,
    "bench": bench_cli.build_parser,
}

# Runs `python -m <module> <args...>` in this process and writes which of the
# watched libraries it imported to $MODULES_OUT: what a command costs to start.
RUN_AND_LIST_MODULES = """
import json, os, runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
watched = {"torch", "transformers", "onnxruntime", "aiohttp", "aiosqlite", "pydantic", "app",
           "generation", "storage"}
loaded = sorted(name for name in sys.modules if name.split(".")[0] in watched)
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump({"code": code, "modules": loaded}, out)
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No setting from the caller's environment; a folder without a .env."""
    env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
    }
    env.update(
        PYTHONPATH=str(REPO),
        DATABASE_PATH=str(tmp_path / "db" / "storybot.sqlite3"),
        GENRES_PATH=str(REPO / "genres.toml"),
        GENERATION_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def run_cli(
    module: str, *args: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_listing_modules(
    module: str, *args: str, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], int, set[str]]:
    listing = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, module, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path, MODULES_OUT=str(listing), **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listing.exists(), done.stderr
    found = json.loads(listing.read_text())
    return done, found["code"], set(found["modules"])


@pytest.mark.parametrize("module", list(PARSERS))
def test_help_prints_usage_and_exits_0(module: str, tmp_path: Path) -> None:
    done = run_cli(module, "--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} ")
    assert "(default: None)" not in done.stdout
    assert "(default: False)" not in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("module", list(PARSERS))
def test_every_option_is_explained_and_shows_its_default(module: str) -> None:
    parser = PARSERS[module]()
    assert parser.description
    formatter = parser._get_formatter()
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        text = formatter._expand_help(action) if action.help else ""
        assert text.strip(), f"{module} {name} has no help"
        if action.required or not action.option_strings:
            assert "default" not in text, f"{module} {name} is required: no default"
        elif action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text.replace("\n", " "), (
                f"{module} {name} does not show its default {action.default!r}: {text!r}"
            )
        assert "(default: None)" not in text


def test_finetune_shows_the_training_defaults() -> None:
    text = " ".join(finetune_cli.build_parser().format_help().split())
    for shown in (
        "--lr LR peak learning rate (AdamW) (default: 5e-05)",
        "(default: 1.0)",  # --epochs
        "blocks per micro-batch (default: 4)",  # --batch-size
        "--data DATA folder of .txt/.md/.jsonl --out",  # required: no default
    ):
        assert shown in text


def test_bot_help_starts_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    done, code, modules = run_listing_modules(
        "bot", "--help", tmp_path=tmp_path, MODEL_DIR=str(tmp_path / "no-model")
    )
    assert code == 0, done.stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "db").exists()  # the database was not opened
    assert not modules & {"torch", "transformers", "onnxruntime", "aiohttp", "aiosqlite"}
    assert "app.runtime" not in modules
    text = " ".join(done.stdout.split())
    assert "DISCORD_TOKEN" in text
    assert ".env" in text
    assert ".env.example" in text
    assert "README.md" in text


@pytest.mark.parametrize("argument", ["--bogus", "serve"])
def test_bot_refuses_an_unknown_argument_with_usage(argument: str, tmp_path: Path) -> None:
    done = run_cli("bot", argument, tmp_path=tmp_path, MODEL_DIR=str(tmp_path / "no-model"))
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m bot")
    assert argument in done.stderr
    assert not (tmp_path / "db").exists()


def test_generation_help_imports_no_engine(tmp_path: Path) -> None:
    done, code, modules = run_listing_modules("app.generate", "--help", tmp_path=tmp_path)
    assert code == 0, done.stderr
    assert "--backend" in done.stdout
    assert not modules & {"torch", "transformers", "onnxruntime", "pydantic", "app.settings"}


def test_generation_choices_are_the_settings() -> None:
    actions = {a.dest: a for a in generation_cli.build_parser()._actions}
    assert tuple(actions["backend"].choices or ()) == typing.get_args(BackendName)
    assert tuple(actions["precision"].choices or ()) == typing.get_args(Precision)


@pytest.fixture(scope="module")
def converted_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with its ONNX int8 file already made, as the bot
    leaves it: a run on ONNX then needs no conversion."""
    from generation.onnx_backend import convert

    folder = tmp_path_factory.mktemp("cli") / "tiny-gpt2"
    shutil.copytree(tiny_model_dir, folder)
    convert(folder, "int8")
    return folder


def story_args(*extra: str) -> list[str]:
    return ["--max-new-tokens", "8", "--greedy", "--seed", "3", *extra, "The detective"]


def test_generation_uses_the_configured_onnx_backend(converted_model: Path, tmp_path: Path) -> None:
    done, code, modules = run_listing_modules(
        "app.generate",
        *story_args(),
        tmp_path=tmp_path,
        BACKEND="onnx",
        PRECISION="int8",
        MODEL_DIR=str(converted_model),
    )
    assert code == 0, done.stderr
    assert done.stdout.startswith("The detective")
    assert len(done.stdout.strip()) > len("The detective")
    assert "[tiny-gpt2 · onnx-int8 · crime · seed 3] 8 tokens" in done.stderr
    assert "generation.torch_backend" not in modules  # not the torch backend
    assert "onnxruntime" in modules


def test_generation_uses_the_configured_transformers_backend(
    converted_model: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "app.generate",
        *story_args(),
        tmp_path=tmp_path,
        BACKEND="transformers",
        PRECISION="fp32",
        DEVICE="cpu",
        MODEL_DIR=str(converted_model),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("The detective")
    assert "[tiny-gpt2 · transformers · crime · seed 3] 8 tokens" in done.stderr


def test_generation_options_override_the_settings(converted_model: Path, tmp_path: Path) -> None:
    done = run_cli(
        "app.generate",
        *story_args("--backend", "transformers", "--precision", "int8", "--device", "cpu"),
        tmp_path=tmp_path,
        BACKEND="onnx",
        PRECISION="fp32",
        MODEL_DIR=str(converted_model),
    )
    assert done.returncode == 0, done.stderr
    assert "· transformers-int8 · crime" in done.stderr


def test_generation_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    done = run_cli("app.generate", "x", tmp_path=tmp_path, PRECISION="fp16")
    assert done.returncode == 2
    assert done.stderr.startswith("error: configuration: PRECISION")
    assert len(done.stderr.strip().splitlines()) == 1
