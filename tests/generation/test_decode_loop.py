"""The decoding loop's engines: a prompt repeated in one prefill (a vote's
candidates share their story) is computed once, and every row that repeats it
goes on exactly as it would alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generation.decode_loop import LocalBackend, distinct_rows, fill_holes
from generation.onnx_backend import OnnxBackend
from generation.torch_backend import TransformersBackend


def test_distinct_rows_numbers_first_appearances() -> None:
    rows = [[1, 2], [3], [1, 2], [4], [3], [1, 2]]
    distinct, index = distinct_rows(rows)
    assert distinct == [[1, 2], [3], [4]]
    assert index == [0, 1, 0, 2, 1, 0]
    assert all(source <= row for row, source in enumerate(index))
    assert distinct_rows([[5], [6]]) == ([[5], [6]], [0, 1])


def test_finished_rows_are_filled_from_the_end() -> None:
    """Rows stay where they are; the last rows move into finished rows' places."""
    assert fill_holes([0, 2, 3]) == [0, 3, 2]  # row 1 finished: row 3 takes its place
    assert fill_holes([1, 2, 3, 4]) == [4, 1, 2, 3]
    assert fill_holes([0, 1, 5, 7]) == [0, 1, 5, 7]  # rows 2, 3, 4 and 6 finished
    assert fill_holes([3, 4]) == [3, 4]  # nothing stays: both move
    assert fill_holes([0, 1]) == [0, 1] and fill_holes([]) == []
    for keep in ([0, 2, 3], [1, 2, 3, 4], [2, 5, 6, 9]):
        order = fill_holes(keep)
        assert sorted(order) == keep
        # never a row overwritten before it is read, moving in order
        assert all(order.index(t) <= t for t in range(len(order)) if t in order)


def _onnx(model_dir: Path) -> LocalBackend:
    return OnnxBackend(model_dir, precision="fp32", threads=1, max_batch_size=8)


def _torch(model_dir: Path) -> LocalBackend:
    return TransformersBackend(model_dir, threads=1, max_batch_size=8)


def _count_prefilled_rows(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many prompt rows each engine call computes."""
    counted: list[int] = []
    if isinstance(backend, OnnxBackend):
        original: Callable[..., Any] = backend.steps._prefill_group  # type: ignore[attr-defined]

        def onnx_group(start: int, rows: Any) -> Any:
            counted.append(len(rows))
            return original(start, rows)

        monkeypatch.setattr(backend.steps, "_prefill_group", onnx_group)
    else:
        forward: Callable[..., Any] = backend.steps._forward  # type: ignore[attr-defined]

        def torch_forward(ids: torch.Tensor, *args: Any) -> Any:
            if ids.shape[1] > 1:  # a prefill, not a one-token step
                counted.append(int(ids.shape[0]))
            return forward(ids, *args)

        monkeypatch.setattr(backend.steps, "_forward", torch_forward)
    return counted


def _alone(backend: LocalBackend, prompt: list[int], count: int) -> list[Any]:
    """The logits of each of `count` greedy steps of one prompt by itself."""
    state, logits = backend.steps.prefill([prompt])
    seen = [logits[0].copy()]
    for _ in range(count - 1):
        state, logits = backend.steps.step(state, [int(np.argmax(seen[-1]))])
        seen.append(logits[0].copy())
    backend.steps.select(state, [])
    return seen


@pytest.mark.parametrize("make", [_onnx, _torch], ids=["onnx", "transformers"])
@torch.inference_mode()
def test_a_repeated_prompt_is_prefilled_once(
    make: Callable[[Path], LocalBackend], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make(tiny_model_dir)
    steps = backend.steps
    story = backend.encode("The detective reached the old warehouse after midnight, and")
    other = backend.encode("Ada")
    running = backend.encode("Tom ran from the")
    alone = {
        name: _alone(backend, ids, 10) for name, ids in (("s", story), ("o", other), ("r", running))
    }
    counted = _count_prefilled_rows(backend, monkeypatch)

    # A row is running; then three candidates of one story and another prompt join.
    seen: dict[str, list[Any]] = {}

    def take(names: list[str], logits: Any) -> None:
        for row, name in enumerate(names):
            seen.setdefault(name, []).append(logits[row].copy())

    state, logits = steps.prefill([running])
    take(["r"], logits)
    state, logits = steps.step(state, [int(np.argmax(logits[0]))])
    take(["r"], logits)
    names = ["s1", "o", "s2", "s3"]
    steps.expect_top(5)
    new_state, logits = steps.prefill([story, other, story, story], state)
    tops = steps.top_ids(5)
    assert sum(counted) == 1 + 2, "the story is computed once, not three times"
    take(names, logits)
    for row in range(len(names)):
        assert int(np.argmax(logits[row])) in set(tops[row].tolist())
    state = steps.merge(state, new_state)
    order = ["r", *names]
    for _ in range(8):
        state, logits = steps.step(state, [int(np.argmax(seen[name][-1])) for name in order])
        take(order, logits)
    expected = {"s1": "s", "s2": "s", "s3": "s", "o": "o", "r": "r"}
    for name, source in expected.items():
        got = seen[name]
        np.testing.assert_allclose(got, alone[source][: len(got)], rtol=0, atol=1e-4, err_msg=name)
