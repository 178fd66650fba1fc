"""The transformers backend's step model: batching must not change the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from generation.torch_backend import TransformersBackend


def _greedy(backend: TransformersBackend, rows: list[list[int]], steps: int) -> list[list[int]]:
    with torch.inference_mode():
        state, logits = backend.steps.prefill(rows)
        out = [[int(np.argmax(row))] for row in logits]
        for _ in range(steps - 1):
            state, logits = backend.steps.step(state, [tokens[-1] for tokens in out])
            for tokens, row in zip(out, logits, strict=True):
                tokens.append(int(np.argmax(row)))
    return out


def test_left_padded_batch_matches_each_row_alone(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(tiny_model_dir, threads=1)
    rows = [
        backend.encode("The detective walked into the harbour"),
        backend.encode("Mara"),
        backend.encode("A red door near the castle and nobody spoke. Why"),
    ]
    with torch.inference_mode():
        _, batched = backend.steps.prefill(rows)
        for index, row in enumerate(rows):
            _, alone = backend.steps.prefill([row])
            np.testing.assert_allclose(batched[index], alone[0], atol=1e-4)
    together = _greedy(backend, rows, 12)
    assert together == [_greedy(backend, [row], 12)[0] for row in rows]


def test_select_and_merge_keep_each_rows_continuation(tiny_model_dir: Path) -> None:
    """Dropping a row mid-batch and admitting a new one (continuous batching)
    gives every row the tokens it gets alone."""
    backend = TransformersBackend(tiny_model_dir, threads=1)
    a, b, c = (backend.encode(t) for t in ("Tom ran from", "The captain looked at the", "Ada"))
    alone = {name: _greedy(backend, [ids], 10)[0] for name, ids in (("a", a), ("b", b), ("c", c))}
    with torch.inference_mode():
        steps = backend.steps
        state, logits = steps.prefill([a, b])
        seqs = {"a": [int(np.argmax(logits[0]))], "b": [int(np.argmax(logits[1]))]}
        for _ in range(3):
            state, logits = steps.step(state, [seqs["a"][-1], seqs["b"][-1]])
            seqs["a"].append(int(np.argmax(logits[0])))
            seqs["b"].append(int(np.argmax(logits[1])))
        state = steps.select(state, [1])  # a leaves
        new_state, logits_c = steps.prefill([c])  # c arrives
        seqs["c"] = [int(np.argmax(logits_c[0]))]
        state = steps.merge(state, new_state)
        for _ in range(9):
            state, logits = steps.step(state, [seqs["b"][-1], seqs["c"][-1]])
            seqs["b"].append(int(np.argmax(logits[0])))
            seqs["c"].append(int(np.argmax(logits[1])))
    assert seqs["a"] == alone["a"][:4]
    assert seqs["b"][:10] == alone["b"]
    assert seqs["c"][:10] == alone["c"]
