"""The fast path: exact in fp32, and int8 only where quality holds."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from generation.modelfiles import load_causal_lm
from generation.pool import GenerationPool
from generation.quantize import conv1d_to_linear, quantize_int8
from generation.tiny import corpus
from generation.torch_backend import TransformersBackend
from generation.types import GenerationParams, GenerationRequest


def greedy(backend: TransformersBackend, prompt: str, steps: int = 30) -> list[int]:
    ids = backend.encode(prompt)
    with torch.inference_mode():
        state, logits = backend.steps.prefill([ids])
        out = [int(np.argmax(logits[0]))]
        for _ in range(steps - 1):
            state, logits = backend.steps.step(state, [out[-1]])
            out.append(int(np.argmax(logits[0])))
    return out


def test_linear_conversion_is_exactly_the_reference(tiny_model_dir: Path) -> None:
    reference = TransformersBackend(tiny_model_dir, threads=1)
    converted = TransformersBackend(tiny_model_dir, threads=1)
    assert conv1d_to_linear(converted.model) == 4 * converted.model.config.n_layer
    for prompt in ("The detective walked into", "Ada", "A red door near the castle."):
        assert greedy(converted, prompt) == greedy(reference, prompt)


def test_int8_keeps_quality_on_a_trained_model(tiny_model_dir: Path) -> None:
    """Teacher-forced top-1 agreement >= 97 % and perplexity within 2 % of fp32,
    on held-out text (the tiny model is trained on the same kind of text)."""
    model, tokenizer = load_causal_lm(tiny_model_dir)
    quantized = quantize_int8(copy.deepcopy(model))
    held_out = " ".join(corpus(sentences=300, seed=1234))
    ids = torch.tensor([tokenizer.encode(held_out)[:1000]])
    with torch.inference_mode():
        fp32 = model(input_ids=ids).logits[0, :-1]
        int8 = quantized(input_ids=ids).logits[0, :-1]
    target = ids[0, 1:]
    agreement = (fp32.argmax(-1) == int8.argmax(-1)).float().mean().item()
    ppl_fp32 = math.exp(torch.nn.functional.cross_entropy(fp32, target).item())
    ppl_int8 = math.exp(torch.nn.functional.cross_entropy(int8, target).item())
    assert ppl_fp32 < 20, "the tiny model should have learned its corpus"
    assert agreement >= 0.97, agreement
    assert abs(ppl_int8 / ppl_fp32 - 1) <= 0.02, (ppl_fp32, ppl_int8)


async def test_int8_backend_serves_through_the_pool(tiny_model_dir: Path) -> None:
    pool = GenerationPool(lambda: TransformersBackend(tiny_model_dir, threads=1, precision="int8"))
    async with pool:
        assert pool.backend is not None and pool.backend.name == "transformers-int8"
        tickets = [
            pool.submit(
                GenerationRequest(f"Story {i}", GenerationParams(max_new_tokens=20, seed=i))
            )
            for i in range(3)
        ]
        again = pool.submit(
            GenerationRequest("Story 0", GenerationParams(max_new_tokens=20, seed=0))
        )
        results = [await t.result() for t in (*tickets, again)]
        assert all(r.new_tokens >= 1 for r in results)
        assert results[0].raw_text == results[3].raw_text  # seeds still reproduce
