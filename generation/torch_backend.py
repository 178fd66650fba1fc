"""The reference backend: transformers + torch on a local model folder.

It runs GPT-2's forward pass with a KV cache under our own decoding loop
(`generation.decode_loop`) rather than `model.generate`: `generate` applies one set
of sampling parameters and one random stream to a whole batch, which would make
a seed's text depend on who else was in the batch, and it cannot take a new
request into a running batch. Batches are left-padded with explicit position
ids, which gives the same logits as batch 1 (checked by a test).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generation.decode_loop import LocalBackend, Logits, distinct_rows
from generation.errors import ModelLoadError
from generation.job import Job
from generation.modelfiles import load_causal_lm, model_id_of

log = logging.getLogger(__name__)


@dataclass
class _State:
    cache: Any  # a DynamicCache, kept across steps: per layer [batch, heads, time, head_dim]
    mask: torch.Tensor  # [batch, time]; 0 marks left padding
    next_pos: torch.Tensor  # [batch]: position id of each row's next token


def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class TorchStepModel:
    def __init__(self, model: Any, device: torch.device | None = None) -> None:
        self.model = model
        self.device = device or torch.device("cpu")
        self.forward_calls = 0
        self._last: torch.Tensor | None = None  # the last logits, for top_ids

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> Any:
        self.forward_calls += 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._last = out.logits[:, -1, :]
        return out

    def _logits(self) -> Logits:
        assert self._last is not None
        # One copy to the host per step; sampling runs in numpy on the CPU.
        result: Logits = self._last.float().cpu().numpy()
        return result

    def expect_top(self, width: int) -> None:
        """Nothing to prepare: `top_ids` ranks the kept logits when asked."""

    def top_ids(self, width: int) -> Any:
        """Each row's `width` best token ids, for all rows in one call."""
        if self._last is None or width >= self._last.shape[-1]:
            return None
        return torch.topk(self._last, width, dim=-1, sorted=False).indices.cpu().numpy()

    def prefill(self, rows: Sequence[Sequence[int]], after: Any = None) -> tuple[_State, Logits]:
        """Start these prompts; one given more than once (a vote's candidates)
        is computed once and its cache repeated."""
        distinct, index = distinct_rows(rows)
        if len(distinct) == len(rows):
            return self._prefill(rows)
        state, _ = self._prefill(distinct)
        assert self._last is not None
        self._last = self._last[torch.tensor(index, device=self._last.device)]
        return self.select(state, index), self._logits()

    def _prefill(self, rows: Sequence[Sequence[int]]) -> tuple[_State, Logits]:
        from transformers import DynamicCache

        width = max(len(row) for row in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(ids, mask, pos, DynamicCache())
        return _State(out.cache, mask, mask.sum(-1)), self._logits()

    def step(self, state: _State, tokens: Sequence[int]) -> tuple[_State, Logits]:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        mask = torch.cat([state.mask, state.mask.new_ones((len(tokens), 1))], 1)
        # The cache grows in place; it is rebuilt only when rows leave or join.
        out = self._forward(ids, mask, state.next_pos[:, None], state.cache)
        return _State(out.cache, mask, state.next_pos + 1), self._logits()

    def select(self, state: _State, keep: Sequence[int]) -> _State:
        from transformers import DynamicCache

        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = state.mask[index]
        # Drop columns that are padding in every remaining row.
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else 0
        kv = [(k[index, :, first:], v[index, :, first:]) for k, v in _kv(state.cache)]
        return _State(DynamicCache(ddp_cache_data=kv), mask[:, first:], state.next_pos[index])

    def merge(self, first: _State, second: _State) -> _State:
        from transformers import DynamicCache

        width = max(first.mask.shape[1], second.mask.shape[1])
        a_kv, a_mask = _pad_left(first, width)
        b_kv, b_mask = _pad_left(second, width)
        kv = [
            (torch.cat([ka, kb]), torch.cat([va, vb]))
            for (ka, va), (kb, vb) in zip(a_kv, b_kv, strict=True)
        ]
        cache = DynamicCache(ddp_cache_data=kv)
        return _State(
            cache, torch.cat([a_mask, b_mask]), torch.cat([first.next_pos, second.next_pos])
        )


def _pad_left(
    state: _State, width: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    pad = width - state.mask.shape[1]
    kv = _kv(state.cache)
    if pad == 0:
        return kv, state.mask
    padded = []
    for k, v in kv:
        zeros = k.new_zeros((k.shape[0], k.shape[1], pad, k.shape[3]))
        padded.append((torch.cat([zeros, k], 2), torch.cat([zeros, v], 2)))
    mask = torch.cat([state.mask.new_zeros((state.mask.shape[0], pad)), state.mask], 1)
    return padded, mask


class TransformersBackend(LocalBackend):
    """GPT-2 through transformers + torch, owned by one worker thread.

    precision "fp32" is the reference; "int8" (CPU) quantizes every linear layer
    after turning GPT-2's Conv1D into Linear: about 3.5x faster on 2 cores for
    GPT-2 small (bench/RESULTS.md), with top-1 agreement and perplexity held to
    the fp32 model by a test on a trained model.
    """

    steps: TorchStepModel

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch_size: int = 8,
        threads: int | None = None,
        precision: str = "fp32",
        device: str = "cpu",
    ):
        if threads:
            torch.set_num_threads(threads)
        if precision not in ("fp32", "int8"):
            raise ValueError(f"unknown precision {precision!r}")
        self.device = resolve_device(device)
        if precision == "int8" and self.device.type != "cpu":
            # torch's dynamic int8 kernels are CPU ones; a GPU runs GPT-2 fast in fp32.
            log.warning("PRECISION=int8 is for CPUs: running fp32 on %s", self.device)
            precision = "fp32"
        self.model, self.tokenizer = load_causal_lm(model_dir)
        self.precision = precision
        self.name = "transformers" if precision == "fp32" else f"transformers-{precision}"
        if precision == "int8":
            from generation.quantize import quantize_int8

            self.model = quantize_int8(self.model)
            gc.collect()  # let the fp32 weights go
        self.model_id = model_id_of(model_dir)
        config = self.model.config
        self.context_size = int(getattr(config, "n_positions", 1024))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.max_batch_size = max_batch_size
        self.model.to(self.device)
        self.steps = TorchStepModel(self.model, self.device)
        log.info(
            "loaded %s from %s (%d layers, %s, on %s, %d threads)",
            self.model_id,
            model_dir,
            config.n_layer,
            precision,
            self.device,
            torch.get_num_threads(),
        )

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        # inference_mode is thread-local: it must be entered on the worker thread.
        with torch.inference_mode():
            super().generate(jobs, admit)

    def close(self) -> None:
        self.model = None


def resolve_device(choice: str) -> torch.device:
    """ "auto": the first GPU when there is one, else the CPU. A GPU asked for
    but absent is a start-up error, not a silent fall back to a slow CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ModelLoadError(f"DEVICE={choice}: not a device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"DEVICE={choice}: no CUDA GPU is available here")
    return device


__all__ = ["TorchStepModel", "TransformersBackend", "resolve_device"]
