"""The transformers backend on a GPU: `python -m bench.gpu` (needs CUDA).

1. Correctness: greedy stories from the tiny model through the real pool, alone
   and four at once, are the same text on the GPU as on the CPU.
2. Speed, on a GPT-2-small-shaped model (random weights): batch-1 seconds for
   200 tokens and aggregate tokens/s for 8 and 32 stories at once through the
   pool, against transformers `generate` on the same GPU.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import OUT, build_model
from bench.worker import PROMPT
from generation.pool import GenerationPool
from generation.tiny import build_tiny_model
from generation.torch_backend import TransformersBackend
from generation.types import GenerationParams, GenerationRequest

TOKENS = 200


async def greedy_texts(model_dir: Path, device: str) -> list[str]:
    pool = GenerationPool(lambda: TransformersBackend(model_dir, device=device))
    async with pool:
        params = GenerationParams(max_new_tokens=40, do_sample=False)
        alone = await pool.submit(GenerationRequest("The detective", params)).result()
        prompts = ["The detective", "Mara walked into", "The ship", "Once upon a time"]
        together = await asyncio.gather(
            *(pool.submit(GenerationRequest(p, params)).result() for p in prompts)
        )
    return [alone.raw_text, *(r.raw_text for r in together)]


async def pool_speed(model_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pool = GenerationPool(
        lambda: TransformersBackend(model_dir, device="cuda", max_batch_size=32),
        max_batch=32,
        max_queue=100,
    )
    async with pool:

        def request(seed: int) -> GenerationRequest:
            params = GenerationParams(max_new_tokens=TOKENS, min_new_tokens=TOKENS, seed=seed)
            return GenerationRequest(PROMPT, params)

        await pool.submit(request(99)).result()  # warm-up: CUDA kernels, allocator
        result = await pool.submit(request(0)).result()
        out["batch1_s"] = round(result.generation_s, 3)
        out["first_token_ms"] = round(1000 * (result.first_token_s or 0), 1)
        for n in (8, 32):
            started = time.perf_counter()
            await asyncio.gather(*(pool.submit(request(i)).result() for i in range(n)))
            out[f"c{n}_tok_s"] = round(n * TOKENS / (time.perf_counter() - started), 1)
    return out


def generate_speed(model_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    # Any: transformers' decorators hide `.cuda()`'s signature from mypy.
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    model = model.cuda().eval()
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for n in (1, 1, 8, 32):  # the first batch-1 run warms up
            batch = tokenizer([PROMPT] * n, return_tensors="pt", padding=True).to("cuda")
            torch.cuda.synchronize()
            started = time.perf_counter()
            model.generate(
                **batch,
                max_new_tokens=TOKENS,
                min_new_tokens=TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            if n == 1:
                out["batch1_s"] = round(elapsed, 3)
            else:
                out[f"c{n}_tok_s"] = round(n * TOKENS / elapsed, 1)
    return out


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("python -m bench.gpu needs a CUDA GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model(Path(tmp) / "tiny", train_steps=50)
        cpu = asyncio.run(greedy_texts(tiny, "cpu"))
        gpu = asyncio.run(greedy_texts(tiny, "cuda"))
    OUT.mkdir(exist_ok=True)
    model, _ = build_model(OUT / "gpt2-small-random")
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "greedy_identical_cpu_gpu": cpu == gpu,
        "greedy_rows": len(cpu),
        "pool_cuda": asyncio.run(pool_speed(model)),
        "generate_cuda": generate_speed(model),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
