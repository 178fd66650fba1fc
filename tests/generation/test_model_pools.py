"""Genre models: one pool per loaded model, loaded on demand, within a budget."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from generation.errors import Busy, GenerationError
from generation.model_pools import ModelPools, model_memory_mb
from generation.pool import GenerationPool
from generation.torch_backend import TransformersBackend
from generation.types import GenerationParams, GenerationRequest
from tests.conftest import GatedBackend


@pytest.fixture
def three_models(tiny_model_dir: Path, tmp_path: Path) -> list[Path]:
    copies = []
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        copies.append(tmp_path / name)
    return copies


def pools(default_dir: Path, budget_mb: float, loads: list[Path]) -> ModelPools:
    def make(model_dir: Path) -> GenerationPool:
        loads.append(model_dir)
        return GenerationPool(lambda: GatedBackend(TransformersBackend(model_dir, threads=1)))

    default = GenerationPool(lambda: TransformersBackend(default_dir, threads=1))
    return ModelPools(default, make, budget_mb=budget_mb, estimate_mb=lambda _: 100.0)


async def test_models_load_on_demand_and_idle_ones_make_room(
    tiny_model_dir: Path, three_models: list[Path]
) -> None:
    loads: list[Path] = []
    models = pools(tiny_model_dir, budget_mb=250, loads=loads)  # room for two genre models
    a, b, c = three_models
    assert await models.pool_for(None) is models.default and loads == []
    pool_a = await models.pool_for(a)
    assert await models.pool_for(a) is pool_a and loads == [a]  # loaded once
    await models.pool_for(b)
    await models.pool_for(a)  # a is now the most recently used
    await models.pool_for(c)  # over budget: the idle, least recently used (b) goes
    assert models.loaded == [a, c] and loads == [a, b, c]
    assert models.used_mb == 200
    await models.aclose()


async def test_a_busy_model_is_never_unloaded(
    tiny_model_dir: Path, three_models: list[Path]
) -> None:
    models = pools(tiny_model_dir, budget_mb=150, loads=[])
    a, b, _ = three_models
    pool_a = await models.pool_for(a)
    backend = pool_a.backend
    assert isinstance(backend, GatedBackend)
    backend.hold()
    ticket = pool_a.submit(GenerationRequest("Busy", GenerationParams(max_new_tokens=5)))
    with pytest.raises(Busy, match="model cannot be loaded") as caught:
        await models.pool_for(b)
    assert caught.value.retry_after >= 1
    backend.release()
    await ticket.result()
    assert await models.pool_for(b) and models.loaded == [b]  # a was idle again
    await models.aclose()


async def test_concurrent_first_stories_share_one_load(
    tiny_model_dir: Path, three_models: list[Path]
) -> None:
    loads: list[Path] = []
    models = pools(tiny_model_dir, budget_mb=1000, loads=loads)
    first, second = await asyncio.gather(
        models.pool_for(three_models[0]), models.pool_for(three_models[0])
    )
    assert first is second and loads == [three_models[0]]
    await models.aclose()


async def test_a_broken_genre_model_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    models = pools(tiny_model_dir, budget_mb=1000, loads=[])
    with pytest.raises(GenerationError, match="model could not be loaded"):
        await models.pool_for(broken)
    assert models.loaded == []
    await models.aclose()


def test_memory_estimate_counts_weights_and_a_full_batch_of_cache(tiny_model_dir: Path) -> None:
    fp32 = model_memory_mb(tiny_model_dir, backend="transformers", precision="fp32", max_batch=8)
    int8 = model_memory_mb(tiny_model_dir, backend="transformers", precision="int8", max_batch=8)
    weights = (tiny_model_dir / "model.safetensors").stat().st_size / 1e6
    kv = 8 * 1024 * 2 * 2 * 64 * 4 / 1e6  # batch x context x (k, v) x layers x width x fp32
    assert fp32 == pytest.approx(weights + kv + 50)
    assert int8 == pytest.approx(weights / 4 + kv + 50)


def test_memory_estimate_counts_both_int8_graphs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """ONNX int8 loads its small-batch graph too, unless that is turned off;
    its KV cache holds int8 values (fp32 on ONNX fp32), and a prompt's keys
    and values (up to a context's worth) come back from the graph before they
    are copied into it."""
    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    (folder / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    (folder / "onnx" / "model-int8.onnx").write_bytes(b"x" * 3_000_000)
    (folder / "onnx" / "model-int8-small.onnx").write_bytes(b"x" * 2_000_000)
    kv = (8 + 1) * 1024 * 2 * 2 * 64 / 1e6  # (batch + a prompt) x context x (k, v) x layers
    # x width, a byte each
    assert model_memory_mb(folder) == pytest.approx(5 + kv + 50)
    assert model_memory_mb(folder, small_batch_graph=False) == pytest.approx(3 + kv + 50)
    (folder / "onnx" / "model-fp32.onnx").write_bytes(b"x" * 4_000_000)
    assert model_memory_mb(folder, precision="fp32") == pytest.approx(4 + 4 * kv + 50)


async def test_the_service_serves_a_genre_from_its_own_model_folder(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Through the composition root: genres.toml names a model; HTTP asks for it."""
    import json

    import aiohttp

    from app.runtime import run
    from app.settings import load_settings
    from tests.conftest import REPO, free_port

    genre_model = tmp_path / "models" / "noir-gpt2"
    shutil.copytree(tiny_model_dir, genre_model)
    (genre_model / "storybot.json").write_text(json.dumps({"model_id": "noir-gpt2"}))
    genres = tmp_path / "genres.toml"
    genres.write_text(
        (REPO / "genres.toml").read_text()
        + '\n[genres.noir]\ntitle = "Noir"\ndescription = "Rain."\nmodel = "models/noir-gpt2"\n'
        + '\n[genres.gone]\ntitle = "Gone"\ndescription = "x"\nmodel = "models/not-yet"\n'
    )
    port = free_port()
    settings = load_settings(
        model_dir=tiny_model_dir,
        backend="transformers",
        database_path=tmp_path / "s.sqlite3",
        http_port=port,
        genres_path=genres,
        generation_threads=1,
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, started=lambda _: ready.set()))
    await asyncio.wait(
        {task, asyncio.ensure_future(ready.wait())}, timeout=60, return_when=asyncio.FIRST_COMPLETED
    )
    assert ready.is_set(), task
    models = {}
    async with aiohttp.ClientSession() as session:
        for genre in ("noir", "crime", "gone"):
            body = {"input": "Sam walked", "genre": genre, "max_new_tokens": 10}
            async with session.post(f"http://127.0.0.1:{port}/", json=body) as reply:
                models[genre] = (await reply.json())["model"]
    stop.set()
    await asyncio.wait_for(task, 30)
    # A genre whose folder does not exist (yet) is served by the default model.
    assert models == {"noir": "noir-gpt2", "crime": "tiny-gpt2", "gone": "tiny-gpt2"}
