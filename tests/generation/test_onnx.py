"""The ONNX Runtime backend: the reference's tokens in fp32, quality in int8."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.decode import greedy_tokens
from generation.modelfiles import load_causal_lm
from generation.onnx_backend import OnnxBackend, convert, onnx_path
from generation.pool import GenerationPool
from generation.tiny import corpus
from generation.torch_backend import TransformersBackend
from generation.types import GenerationParams, GenerationRequest


@pytest.fixture(scope="module")
def model_copy(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy, so conversion caching is observed from a clean start."""
    folder = tmp_path_factory.mktemp("onnx") / "tiny-gpt2"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_fp32_gives_the_references_greedy_tokens(model_copy: Path) -> None:
    reference = TransformersBackend(model_copy, threads=1)
    fast = OnnxBackend(model_copy, precision="fp32", threads=1)
    rows = [
        reference.encode(p)
        for p in ("The detective walked into", "Ada", "A red door near the castle.")
    ]
    with torch.inference_mode():
        expected = greedy_tokens(reference.steps, rows, 25)
    assert greedy_tokens(fast.steps, rows, 25) == expected  # batched, left-padded
    for row, tokens in zip(rows, expected, strict=True):
        assert greedy_tokens(fast.steps, [row], 25) == [tokens]  # alone


def test_conversion_is_cached(model_copy: Path) -> None:
    path = convert(model_copy, "int8")
    made = path.stat().st_mtime_ns
    assert convert(model_copy, "int8") == path == onnx_path(model_copy, "int8")
    assert path.stat().st_mtime_ns == made


def test_int8_keeps_quality_on_a_trained_model(model_copy: Path) -> None:
    import onnxruntime as ort

    model, tokenizer = load_causal_lm(model_copy)
    session = ort.InferenceSession(
        str(convert(model_copy, "int8")), providers=["CPUExecutionProvider"]
    )
    held_out = " ".join(corpus(sentences=300, seed=1234))
    ids = tokenizer.encode(held_out)[:600]
    config = model.config
    heads, dim = config.n_head, config.n_embd // config.n_head
    empty = np.zeros((1, heads, 0, dim), dtype=np.float32)
    agree, nll_fp32, nll_int8 = 0, 0.0, 0.0
    with torch.inference_mode():
        reference = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1).numpy()
    count = min(len(ids) - 1, 128)
    for t in range(count):  # teacher-forced: each prefix scored by the int8 graph
        window = ids[: t + 1]
        feed = {
            "input_ids": np.array([window]),
            "attention_mask": np.ones((1, len(window)), np.int64),
            "position_ids": np.arange(len(window))[None],
            **{f"past_{i}": empty for i in range(2 * config.n_layer)},
        }
        logits = session.run(None, feed)[0][0]
        logprobs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        agree += int(np.argmax(logits) == np.argmax(reference[t]))
        nll_int8 -= logprobs[ids[t + 1]]
        nll_fp32 -= reference[t][ids[t + 1]]
    ppl_fp32, ppl_int8 = math.exp(nll_fp32 / count), math.exp(nll_int8 / count)
    assert agree / count >= 0.97, agree / count
    assert abs(ppl_int8 / ppl_fp32 - 1) <= 0.02, (ppl_fp32, ppl_int8)


async def test_int8_serves_stories_through_the_pool(model_copy: Path) -> None:
    async with GenerationPool(lambda: OnnxBackend(model_copy, threads=1)) as pool:
        assert pool.backend is not None and pool.backend.name == "onnx-int8"
        tickets = [
            pool.submit(
                GenerationRequest(f"Story {i}", GenerationParams(max_new_tokens=20, seed=i))
            )
            for i in range(4)
        ]
        again = pool.submit(
            GenerationRequest("Story 0", GenerationParams(max_new_tokens=20, seed=0))
        )
        results = [await t.result() for t in (*tickets, again)]
        assert (
            all(r.new_tokens >= 1 for r in results) and results[0].raw_text == results[4].raw_text
        )
        streamed = pool.submit(
            GenerationRequest("Ada", GenerationParams(max_new_tokens=15, seed=9))
        )
        text = "".join([d async for d in streamed.stream()])
        assert text == (await streamed.result()).raw_text
