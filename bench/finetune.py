"""How long fine-tuning GPT-2 small takes here: `python -m bench.finetune [--steps N]`.

Builds (or reuses) the benchmark's GPT-2-small-shaped model (random weights
cost the same as the real ones), writes a synthetic corpus, and runs
`python -m app.finetune` with its default batch (4 blocks of 1024
tokens, 4 micro-batches a step) for a few steps. Prints one JSON line: seconds
a step, tokens a second, and what 1,000 steps (about 16 M tokens) would take.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from app.finetune import main as finetune
from bench.__main__ import OUT, build_model
from generation.tiny import corpus


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    model, _ = build_model(OUT / "gpt2-small-random")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts"
        data.mkdir()
        for index in range(40):  # ~ 1 M characters: enough blocks for every step
            text = " ".join(corpus(sentences=400, seed=index))
            (data / f"{index:02d}.txt").write_text(text, encoding="utf-8")
        out = Path(tmp) / "out"
        started = time.perf_counter()
        code = finetune(
            [
                *["--data", str(data), "--out", str(out), "--base", str(model)],
                *["--max-steps", str(args.steps), "--no-convert", "--device", args.device],
                *["--checkpoint-every", str(10 * args.steps), "--epochs", "1000"],
            ]
        )
        if code != 0:
            return code
        report = json.loads((out / "finetune.json").read_text())
    per_step = report["train_seconds"] / report["steps"]
    result = {
        "device": report["device"],
        "steps": report["steps"],
        "tokens_per_step": 4 * 4 * report["block_size"],
        "seconds_per_step": round(per_step, 3),
        "tokens_per_s": report["tokens_per_s"],
        "minutes_for_1000_steps": round(1000 * per_step / 60, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
