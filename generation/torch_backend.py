"""The reference backend: transformers + torch on a local model folder.

It runs GPT-2's forward pass with a KV cache under our own decoding loop
(`generation.decode`) rather than `model.generate`: `generate` applies one set
of sampling parameters and one random stream to a whole batch, which would make
a seed's text depend on who else was in the batch, and it cannot take a new
request into a running batch. Batches are left-padded with explicit position
ids, which gives the same logits as batch 1 (checked by a test).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generation.backend import Job
from generation.decode import Logits, run_decode_loop
from generation.modelfiles import load_causal_lm, model_id_of

log = logging.getLogger(__name__)


@dataclass
class _State:
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [batch, heads, time, head_dim]
    mask: torch.Tensor  # [batch, time]; 0 marks left padding
    next_pos: torch.Tensor  # [batch]: position id of each row's next token


class TorchStepModel:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.forward_calls = 0

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> Any:
        from transformers import DynamicCache

        self.forward_calls += 1
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=cache if cache is not None else DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )

    @staticmethod
    def _kv(out: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in out.cache.layers]

    @staticmethod
    def _logits(out: Any) -> Logits:
        result: Logits = out.logits[:, -1, :].float().numpy()
        return result

    def prefill(self, rows: Sequence[Sequence[int]]) -> tuple[_State, Logits]:
        width = max(len(row) for row in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(ids, mask, pos, None)
        lengths = mask.sum(-1)
        return _State(self._kv(out), mask, lengths), self._logits(out)

    def step(self, state: _State, tokens: Sequence[int]) -> tuple[_State, Logits]:
        from transformers import DynamicCache

        ids = torch.tensor(tokens, dtype=torch.long)[:, None]
        mask = torch.cat([state.mask, torch.ones((len(tokens), 1), dtype=state.mask.dtype)], 1)
        cache = DynamicCache(ddp_cache_data=state.kv)
        out = self._forward(ids, mask, state.next_pos[:, None], cache)
        return _State(self._kv(out), mask, state.next_pos + 1), self._logits(out)

    def select(self, state: _State, keep: Sequence[int]) -> _State:
        index = torch.tensor(keep, dtype=torch.long)
        mask = state.mask[index]
        # Drop columns that are padding in every remaining row.
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else 0
        kv = [(k[index, :, first:], v[index, :, first:]) for k, v in state.kv]
        return _State(kv, mask[:, first:], state.next_pos[index])

    def merge(self, first: _State, second: _State) -> _State:
        width = max(first.mask.shape[1], second.mask.shape[1])
        a, b = _pad_left(first, width), _pad_left(second, width)
        kv = [
            (torch.cat([ka, kb]), torch.cat([va, vb]))
            for (ka, va), (kb, vb) in zip(a.kv, b.kv, strict=True)
        ]
        return _State(kv, torch.cat([a.mask, b.mask]), torch.cat([a.next_pos, b.next_pos]))


def _pad_left(state: _State, width: int) -> _State:
    pad = width - state.mask.shape[1]
    if pad == 0:
        return state
    kv = []
    for k, v in state.kv:
        zeros = k.new_zeros((k.shape[0], k.shape[1], pad, k.shape[3]))
        kv.append((torch.cat([zeros, k], 2), torch.cat([zeros, v], 2)))
    mask = torch.cat([state.mask.new_zeros((state.mask.shape[0], pad)), state.mask], 1)
    return _State(kv, mask, state.next_pos)


class TransformersBackend:
    """GPT-2 through transformers + torch, fp32, owned by one worker thread."""

    name = "transformers"

    def __init__(self, model_dir: Path, *, max_batch_size: int = 8, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer = load_causal_lm(model_dir)
        self.model_id = model_id_of(model_dir)
        config = self.model.config
        self.context_size = int(getattr(config, "n_positions", 1024))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.max_batch_size = max_batch_size
        self.steps = TorchStepModel(self.model)
        log.info(
            "loaded %s from %s (%d layers, %d threads)",
            self.model_id,
            model_dir,
            config.n_layer,
            torch.get_num_threads(),
        )

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    @property
    def forward_calls(self) -> int:
        return self.steps.forward_calls

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        # inference_mode is thread-local: it must be entered on the worker thread.
        with torch.inference_mode():
            run_decode_loop(self.steps, jobs, admit, self.max_batch_size)

    def close(self) -> None:
        self.model = None


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


__all__ = ["TorchStepModel", "TransformersBackend", "default_threads", "np"]
