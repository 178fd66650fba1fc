"""python -m app.finetune on the tiny model: train, Ctrl-C, resume, and a
/story in the new genre written by the fine-tuned model."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.finetune import main
from generation.model_pools import ModelPools
from generation.modelfiles import check_model_dir
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import Requester, StoryOptions, StoryService
from tests.conftest import REPO

WORDS = ["neon", "rain", "cigarette", "alley", "saxophone", "trench coat", "dame", "precinct"]


def write_corpus(folder: Path, sentences: int = 900) -> Path:
    """A small noir corpus over three files, one of each kind the tool reads."""
    rng = random.Random(7)
    lines = [
        f"Sam saw the {rng.choice(WORDS)} by the {rng.choice(WORDS)} and said nothing."
        for _ in range(sentences)
    ]
    folder.mkdir(parents=True)
    third = sentences // 3
    (folder / "one.txt").write_text(" ".join(lines[:third]), encoding="utf-8")
    (folder / "two.md").write_text("# Notes\n\n" + " ".join(lines[third : 2 * third]))
    with (folder / "three.jsonl").open("w", encoding="utf-8") as out:
        for start in range(2 * third, sentences, 30):
            out.write(json.dumps({"text": " ".join(lines[start : start + 30])}) + "\n")
    (folder / "cover.png").write_bytes(b"\x89PNG\r\n")  # not a text suffix: ignored
    return folder


def command(
    data: Path, out: Path, base: Path, genres: Path, *extra: str, convert: bool = False
) -> list[str]:
    return [
        *[sys.executable, "-m", "app.finetune", "--data", str(data), "--out", str(out)],
        *["--base", str(base), "--genre", "noir", "--genres", str(genres)],
        *["--block-size", "64", "--batch-size", "8", "--grad-accum", "2", "--lr", "3e-3"],
        *["--max-steps", "150", "--epochs", "20", "--checkpoint-every", "10"],
        *([] if convert else ["--no-convert"]),
        *extra,
    ]


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Interrupted with Ctrl-C after its first checkpoint, then resumed to the end."""
    root = tmp_path_factory.mktemp("finetune")
    data = write_corpus(root / "noir-texts")
    genres = root / "genres.toml"
    shutil.copy(REPO / "genres.toml", genres)
    out = root / "models" / "noir-gpt2"
    process = subprocess.Popen(
        command(data, out, tiny_model_dir, genres),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-0000010").is_dir():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.02)  # polling another process's files
    process.send_signal(signal.SIGINT)
    interrupted_code, interrupted_log = finish(process)
    leftover = sorted(p.name for p in (out / "checkpoints").iterdir())
    was_model = (out / "config.json").exists()

    resumed = subprocess.run(
        command(data, out, tiny_model_dir, genres, "--resume", convert=True),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {
        "data": data,
        "out": out,
        "genres": genres,
        "interrupted": (interrupted_code, interrupted_log, leftover, was_model),
        "resumed": resumed,
    }


def test_ctrl_c_saves_a_checkpoint_and_leaves_no_model(finetuned: dict[str, object]) -> None:
    code, log, checkpoints, was_model = finetuned["interrupted"]  # type: ignore[misc]
    assert code == 130, log
    assert "--resume" in log and "Traceback" not in log
    assert "about" in log and "s a step measured" in log  # the estimate came first
    assert checkpoints and all(name.startswith("step-") for name in checkpoints)
    assert not any(name.endswith(".tmp") for name in checkpoints)
    assert not was_model, "an interrupted run must not look like a model"


def test_resume_finishes_with_validation_loss_falling(finetuned: dict[str, object]) -> None:
    resumed = finetuned["resumed"]
    assert isinstance(resumed, subprocess.CompletedProcess)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step-" in resumed.stderr
    out = Path(str(finetuned["out"]))
    check_model_dir(out)  # a normal model folder
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    assert (out / "onnx" / "model-int8.onnx").is_file()  # converted for the default backend
    report = json.loads((out / "finetune.json").read_text())
    assert report["steps"] == 150 and report["files"] == 3
    assert report["validation_loss_after"] < report["validation_loss_before"] - 0.5
    assert report["perplexity_after"] < report["perplexity_before"]
    genres = GenreRegistry.load(Path(str(finetuned["genres"])))
    noir = genres.get("noir")
    assert noir.model is not None and noir.model.resolve() == out.resolve()
    assert genres.get("crime").model is None  # the built-in genres are untouched


def test_a_resumed_run_learns_what_an_uninterrupted_one_does(
    finetuned: dict[str, object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    genres = tmp_path / "genres.toml"
    shutil.copy(REPO / "genres.toml", genres)
    straight = subprocess.run(
        command(Path(str(finetuned["data"])), tmp_path / "straight", tiny_model_dir, genres),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    first = json.loads((Path(str(finetuned["out"])) / "finetune.json").read_text())
    second = json.loads((tmp_path / "straight" / "finetune.json").read_text())
    assert second["validation_loss_after"] == pytest.approx(
        first["validation_loss_after"], abs=1e-3
    )


async def test_a_story_in_the_new_genre_is_written_by_the_finetuned_model(
    finetuned: dict[str, object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    genres = GenreRegistry.load(Path(str(finetuned["genres"])))

    def pool_on(model_dir: Path) -> GenerationPool:
        return GenerationPool(lambda: TransformersBackend(model_dir, threads=1))

    default = pool_on(tiny_model_dir)
    await default.start()
    models = ModelPools(default, pool_on, budget_mb=10_000, estimate_mb=lambda _: 100.0)
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        service = StoryService(store, default, genres, models=models)
        who = Requester(user_id=1, source="discord")
        options = StoryOptions(genre="noir", max_new_tokens=30, seed=1)
        noir = await (await service.start("Sam walked into the", options, who)).done
        crime = await (
            await service.start("The detective", StoryOptions(genre="crime", seed=1), who)
        ).done
        more = await (await service.continue_story(noir.story.id, who)).done
        await service.wait_idle()
    assert models.loaded == [genres.get("noir").model]  # loaded at its first story
    await models.aclose()
    await default.aclose()
    assert noir.result.model_id == "noir-gpt2" and more.result.model_id == "noir-gpt2"
    assert crime.result.model_id == "tiny-gpt2"
    assert any(word in noir.result.text + more.result.text for word in WORDS)


# ------------------------------------------------------------------ bad input
def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def args(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    genres = tmp_path / "genres.toml"
    shutil.copy(REPO / "genres.toml", genres)
    return ["--base", str(tiny_model_dir), "--genres", str(genres), "--block-size", "64"]


def test_bad_data_folders_are_one_line_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no .txt, .md or .jsonl files" in run_main(
        capsys, "--data", str(empty), "--out", str(out), *args
    )
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "a.txt").write_bytes(b"text\x00\x01\x02")
    assert "not a text file" in run_main(capsys, "--data", str(binary), "--out", str(out), *args)
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "a.txt").write_bytes("café noir".encode("latin-1"))
    line = run_main(capsys, "--data", str(latin), "--out", str(out), *args)
    assert "a.txt is not UTF-8 (byte 0xe9 at offset 3)" in line
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "a.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    assert "a.jsonl, line 2" in run_main(capsys, "--data", str(bad_json), "--out", str(out), *args)
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("Too short to learn from.")
    assert "less than two blocks of 64" in run_main(
        capsys, "--data", str(small), "--out", str(out), *args
    )
    assert not out.exists(), "a refused run leaves nothing behind"


def test_bad_destinations_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], tiny_model_dir: Path
) -> None:
    data = write_corpus(tmp_path / "data", sentences=60)
    taken = tmp_path / "taken"
    shutil.copytree(tiny_model_dir, taken)
    before = sorted(p.name for p in taken.iterdir())
    line = run_main(capsys, "--data", str(data), "--out", str(taken), *args)
    assert "already holds a model (tiny-gpt2)" in line and "--overwrite" in line
    assert sorted(p.name for p in taken.iterdir()) == before
    new = str(tmp_path / "new")
    line = run_main(capsys, "--data", str(data), "--out", new, *args, "--genre", "crime")
    assert "'crime' is a built-in genre" in line
    line = run_main(capsys, "--data", str(data), "--out", new, *args, "--genre", "Film Noir")
    assert "lowercase letters" in line
    assert "nothing to resume" in run_main(
        capsys, "--data", str(data), "--out", new, *args, "--resume"
    )
    args[1] = str(tmp_path / "no-such-model")
    line = run_main(capsys, "--data", str(data), "--out", new, *args)
    assert line.startswith("error: --base:") and "does not exist" in line
    assert not Path(new).exists()
