"""One pool per loaded model: the default model always, genre models on demand.

A genre with a model folder of its own (a fine-tuned genre model) is served by
that model. Its pool (one worker, one loaded model) starts at the genre's first
story, not at start-up, and pools left idle are closed, least recently used
first, when loading another would pass the memory budget. A model that cannot
fit even then gets a Busy answer with a retry hint, never an out-of-memory kill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generation.errors import Busy, GenerationError, ModelLoadError
from generation.messages import N_
from generation.onnx_backend import PREFILL_TOKENS, onnx_path, small_path
from generation.onnx_graph import int8_kv_cache
from generation.pool import GenerationPool

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    pool: GenerationPool
    memory_mb: float
    last_used: float


def model_memory_mb(
    model_dir: Path,
    *,
    backend: str = "onnx",
    precision: str = "int8",
    max_batch: int = 8,
    small_batch_graph: bool = True,
) -> float:
    """What a loaded model may hold: its weights as the backend loads them (on
    ONNX int8, both graphs unless `small_batch_graph` is off), plus the KV cache
    of a full batch at full context (int8 values on ONNX int8 and int4, else
    fp32: GPT-2 small, ONNX int8, batch 8: 251 + 151 MB), plus, on ONNX, a
    longest prompt's keys and values on their way into the cache (19 MB), plus
    its share of runtime buffers."""
    weights = 0.0
    graph = onnx_path(model_dir, precision)
    if backend == "onnx" and graph.is_file():
        small = small_path(model_dir, precision) if small_batch_graph else None
        weights = sum(g.stat().st_size for g in (graph, small) if g and g.is_file()) / 1e6
    elif (model_dir / "model.safetensors").is_file():
        weights = (model_dir / "model.safetensors").stat().st_size / 1e6
        weights /= 4 if precision == "int8" else 1
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        value_bytes = 1 if backend == "onnx" and int8_kv_cache(precision) else 4
        per_token = 2 * int(config["n_layer"]) * int(config["n_embd"]) * value_bytes
        rows = max_batch * int(config["n_positions"])
        if backend == "onnx":  # a prompt group's keys and values, returned by the graph
            rows += max(int(config["n_positions"]), PREFILL_TOKENS)
        kv = rows * per_token / 1e6
    except (OSError, ValueError, KeyError, TypeError):
        kv = 0.0
    return weights + kv + 50.0


class ModelPools:
    def __init__(
        self,
        default: GenerationPool,
        make_pool: Callable[[Path], GenerationPool],
        *,
        budget_mb: float,
        estimate_mb: Callable[[Path], float],
        default_mb: float = 0.0,
    ) -> None:
        self.default = default
        self._make_pool = make_pool
        self.budget_mb = budget_mb
        self._estimate_mb = estimate_mb
        self._default_mb = default_mb
        self._loaded: dict[Path, _Loaded] = {}
        self._loading: dict[Path, asyncio.Future[GenerationPool]] = {}
        self._lock = asyncio.Lock()
        self.evictions = 0  # idle models unloaded to stay within the budget (for metrics)

    @property
    def loaded(self) -> list[Path]:
        return list(self._loaded)

    @property
    def pools(self) -> list[GenerationPool]:
        """Every pool: the default model's, then each loaded genre model's."""
        return [self.default, *(entry.pool for entry in self._loaded.values())]

    @property
    def used_mb(self) -> float:
        return self._default_mb + sum(entry.memory_mb for entry in self._loaded.values())

    async def pool_for(self, model_dir: Path | None) -> GenerationPool:
        """The pool serving `model_dir` (None: the default model), loading it if needed."""
        if model_dir is None:
            return self.default
        key = model_dir
        entry = self._loaded.get(key)
        if entry is not None and entry.pool.ready:
            entry.last_used = time.monotonic()
            return entry.pool
        loading = self._loading.get(key)
        if loading is not None:  # another story asked first: share its load
            return await asyncio.shield(loading)
        future: asyncio.Future[GenerationPool] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            pool = await self._load(key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a lone caller gets it below
            raise
        finally:
            del self._loading[key]
        future.set_result(pool)
        return pool

    async def _load(self, key: Path) -> GenerationPool:
        need = self._estimate_mb(key)
        async with self._lock:
            await self._make_room(need)
            log.info("loading genre model %s (about %.0f MB)", key, need)
            pool = self._make_pool(key)
            try:
                await pool.start()
            except ModelLoadError as error:
                log.error("genre model %s could not be loaded: %s", key, error)
                raise GenerationError(
                    N_("This genre's model could not be loaded; the operator has been told.")
                ) from None
            self._loaded[key] = _Loaded(pool, need, time.monotonic())
            return pool

    async def _make_room(self, need: float) -> None:
        while self.used_mb + need > self.budget_mb:
            idle = [
                (entry.last_used, key)
                for key, entry in self._loaded.items()
                if entry.pool.queue_depth == 0 and entry.pool.running == 0
            ]
            if not idle:
                raise Busy(30, "this genre's model cannot be loaded until other stories finish")
            _, oldest = min(idle)
            entry = self._loaded.pop(oldest)
            self.evictions += 1
            log.info("unloading idle genre model %s to stay within the memory budget", oldest)
            await entry.pool.aclose()

    async def aclose(self, grace_s: float = 10.0) -> None:
        pools = [entry.pool for entry in self._loaded.values()]
        self._loaded.clear()
        await asyncio.gather(*(pool.aclose(grace_s) for pool in pools))
