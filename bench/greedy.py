"""Quality guard on GPT-2 small's shape: ONNX fp32 must give the reference's
greedy tokens. Run in its own process by `python -m bench`; prints JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from generation.decode_loop import greedy_tokens
from generation.onnx_backend import OnnxBackend
from generation.torch_backend import TransformersBackend

PROMPTS = ["The detective reached the crime scene at dawn.", "Once upon a time", "Mara"]


def main() -> None:
    model = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    reference = TransformersBackend(model)
    fast = OnnxBackend(model, precision="fp32")
    rows = [reference.encode(prompt) for prompt in PROMPTS]
    with torch.inference_mode():
        expected = greedy_tokens(reference.steps, rows, count)
    got = greedy_tokens(fast.steps, rows, count)
    same = sum(
        a == b for e, g in zip(expected, got, strict=True) for a, b in zip(e, g, strict=True)
    )
    print(
        json.dumps(
            {
                "rows": len(rows),
                "tokens": count,
                "identical": expected == got,
                "matching_tokens": same,
                "total_tokens": len(rows) * count,
            }
        )
    )


if __name__ == "__main__":
    main()
