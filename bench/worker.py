"""One backend, measured in a fresh process; prints one JSON line.

python -m bench.worker --backend transformers-int8 --model bench/out/gpt2-small

`remote` starts `transformers serve --continuous-batching` (fp32 torch) on
loopback with the same model and measures the openai backend against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

PROMPT = (
    "The detective reached the crime scene at dawn. The rain had washed the street, "
    "and the old harbour smelled of salt and diesel. Nobody had seen anything, of course."
)
# Lone stories timed to their first token in each round: the first one after
# load, then more. One sample a round is hostage to the machine: this shared
# machine has spells of a second or more in which the same prefill takes 1.5x
# as long (our own threads' CPU time rises with it, so nothing else took the
# cores), and a single sample landing in one reads as the engine's figure.
FIRST_TOKEN_SAMPLES = 6
# The samples repeat one prompt: no engine measured here reuses a cached
# prefix of it (our pool prefills every story whole; llama.cpp's context is
# cleared before each; `transformers serve` shares only whole 256-token
# blocks, and the prompt is shorter than one). A longer PROMPT would need that
# last one turned off, or each sample's prompt made to differ.


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    """Resident memory now, in MB."""
    return _status("VmRSS")


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM; ru_maxrss would carry the parent's across exec)."""
    return _status("VmHWM")


def first_tokens(seconds: list[float]) -> dict[str, Any]:
    """A round's first-token figures: the story right after load, the median
    of all its lone stories (that one included), and every sample."""
    streamed = [s for s in seconds if s == s]  # NaN: nothing streamed (see pooled)
    return {
        "ttft_first_s": seconds[0],
        "ttft_s": statistics.median(streamed) if streamed else float("nan"),
        "ttft_samples_s": seconds,
    }


def hf_generate(model_dir: Path, tokens: int, concurrency: list[int]) -> dict[str, Any]:
    """The naive reference: transformers fp32 `generate`, one call per request,
    or one left-padded batch for concurrent requests."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"  # GPT-2 has no pad token: pad with end-of-text, on the left
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32").eval()
    load_s = time.perf_counter() - started
    pad = tokenizer.eos_token_id
    out: dict[str, Any] = {"load_s": load_s, "rss_mb": rss_mb()}  # after load
    with torch.inference_mode():
        ids = tokenizer([PROMPT], return_tensors="pt")
        firsts = []
        for _ in range(FIRST_TOKEN_SAMPLES):
            t0 = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, do_sample=False, pad_token_id=pad)
            firsts.append(time.perf_counter() - t0)
        out.update(first_tokens(firsts))
        t0 = time.perf_counter()
        model.generate(
            **ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=pad
        )
        out["batch1_s"] = time.perf_counter() - t0
        for n in concurrency:
            batch = tokenizer(
                [f"{PROMPT} ({i})" for i in range(n)], return_tensors="pt", padding=True
            )
            t0 = time.perf_counter()
            model.generate(
                **batch,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            elapsed = time.perf_counter() - t0
            out[f"c{n}"] = {
                "aggregate_tok_s": n * tokens / elapsed,
                "p50_s": elapsed,
                "p95_s": elapsed,
                "wall_s": elapsed,
                "note": "one padded batch, all finish together",
            }
        out["burst8"] = out.get("c8", out[f"c{concurrency[0]}"])  # the batch is a burst
    out["busy_rss_mb"] = rss_mb()  # after the runs: model + working set (KV caches)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def llama(model_dir: Path, backend: str, tokens: int) -> dict[str, Any]:
    """llama.cpp (bench/llama_cpp.py): one story, then eight at once, in one
    context, each a fresh prompt; its own sampler chain with storybot's settings."""
    from bench.llama_cpp import LlamaCpp, build_info, quantized_model
    from generation.modelfiles import load_fast_tokenizer

    kind = backend.removeprefix("llama-")
    path = quantized_model(model_dir, kind)  # made once, outside the timed load
    prompt = load_fast_tokenizer(model_dir).encode(PROMPT)
    threads = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    engine = LlamaCpp(path, sequences=8, threads=threads)
    out: dict[str, Any] = {"load_s": time.perf_counter() - started, "rss_mb": rss_mb()}
    out["build"] = build_info()
    one = engine.generate([prompt], tokens)
    out["batch1_s"] = one["total_s"]
    # Each call clears the context first: every prompt is prefilled whole.
    firsts = [one["first_s"]]
    firsts += [engine.generate([prompt], 1)["first_s"] for _ in range(FIRST_TOKEN_SAMPLES - 1)]
    out.update(first_tokens(firsts))
    # Eight at once: prompts that differ, as the pool's burst has them.
    eight = engine.generate([[*prompt, int(prompt[-1]) + i] for i in range(8)], tokens)
    out["burst8"] = {
        "aggregate_tok_s": 8 * tokens / eight["total_s"],
        "p50_s": eight["total_s"],
        "p95_s": eight["total_s"],
        "wall_s": eight["total_s"],
    }
    out["busy_rss_mb"] = rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    engine.close()
    return out


class Server:
    """`transformers serve` on loopback with the benchmark's model, for `remote`."""

    def __init__(self, model_dir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            *[sys.executable, "-c", "from transformers.cli.transformers import main; main()"],
            *["serve", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port)],
            # Continuous batching: the plain path runs concurrent requests in
            # threads that do not batch (8 at once: no faster than one by one).
            *["--device", "cpu", "--continuous-batching", "--log-level", "error"],
        ]
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("transformers serve exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("transformers serve did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def pooled(
    model_dir: Path,
    backend: str,
    tokens: int,
    concurrency: list[int],
    mean_gap_s: float,
    server: Server | None = None,
    max_batch: int = 8,
) -> dict[str, Any]:
    from generation.pool import GenerationPool
    from generation.types import GenerationParams, GenerationRequest

    started = time.perf_counter()
    engine: Any
    if server is not None:  # the remote engine: requests in flight at once, it batches
        from generation.openai_backend import OpenAIBackend

        width = max(concurrency)
        url, tokenizer = server.url, model_dir / "tokenizer.json"

        def engine() -> Any:
            # The paged path drops the repetition penalty and stalls on a
            # generation_config: plain fields only (temperature, top_p, seed).
            return OpenAIBackend(
                url,
                max_concurrency=width,
                tokenizer=tokenizer,
                read_timeout_s=600,
                sampling_fields="none",
            )
    else:
        precision = backend.rsplit("-", 1)[1] if backend.endswith(("-int8", "-int4")) else "fp32"
        kind: Any
        if backend.startswith("onnx"):  # imported alone: torch is no part of its footprint
            from generation.onnx_backend import OnnxBackend as kind
        else:
            from generation.torch_backend import TransformersBackend as kind
        width = max_batch

        def engine() -> Any:
            return kind(model_dir, precision=precision, max_batch_size=max_batch)

    pool = GenerationPool(engine, max_batch=width, max_queue=1000, max_new_tokens_limit=1000)
    await pool.start()
    out: dict[str, Any] = {"load_s": time.perf_counter() - started, "rss_mb": rss_mb()}
    if server is not None:  # the whole deployment: our process and the server's
        out["rss_mb"] += server.rss_mb()

    def request(seed: int) -> GenerationRequest:
        params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens, seed=seed)
        return GenerationRequest(PROMPT, params)

    ticket = pool.submit(request(0))
    async for _ in ticket.stream():  # read as a client reads it
        pass
    result = await ticket.result()
    out["batch1_s"] = result.generation_s

    def first_token(result: Any) -> float:
        # The engine's own clock, from the story's start to its first token:
        # a random model's stream may show no text for a while (a two-token
        # story often none). None: a remote server streamed no text.
        return result.first_token_s if result.first_token_s is not None else float("nan")

    firsts = [first_token(result)]
    for seed in range(1, FIRST_TOKEN_SAMPLES):  # lone stories, one after another
        lone = GenerationParams(max_new_tokens=2, min_new_tokens=2, seed=seed)
        firsts.append(first_token(await pool.submit(GenerationRequest(PROMPT, lone)).result()))
    out.update(first_tokens(firsts))
    rng = random.Random(0)

    async def load(n: int, delays: list[float]) -> dict[str, float]:
        latencies: list[float] = []

        async def one(seed: int, delay: float) -> None:
            await asyncio.sleep(delay)  # the request's arrival time, not a wait for a condition
            start = time.perf_counter()
            await pool.submit(request(seed)).result()
            latencies.append(time.perf_counter() - start)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, d) for i, d in enumerate(delays)))
        wall = time.perf_counter() - t0
        latencies.sort()
        return {
            "aggregate_tok_s": n * tokens / wall,
            "p50_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "wall_s": wall,
        }

    # The event loop's lag while the worker thread generates: how late a 10 ms
    # timer fires. This is what the thread (rather than a process) costs the bot.
    lags: list[float] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)

    ticking = asyncio.create_task(ticker())
    for n in concurrency:
        delays, at = [], 0.0
        for _ in range(n):  # arrivals at random times (a Poisson process)
            delays.append(at)
            at += rng.expovariate(1 / mean_gap_s)
        out[f"c{n}"] = await load(n, delays)
    # All 8 at once, as the reference's single padded batch gets them.
    out["burst8"] = await load(8, [0.0] * 8)
    ticking.cancel()
    lags.sort()
    out["loop_lag_ms"] = {
        "p50": 1000 * statistics.median(lags),
        "p99": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "max": 1000 * lags[-1],
    }
    # After the runs, before closing: model + working set. Closing frees the
    # backend's graphs, so a figure taken after it would undercount the model.
    out["busy_rss_mb"] = rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    await pool.aclose()
    if server is not None:
        out["busy_rss_mb"] += server.rss_mb()
        out["peak_rss_mb"] = out["busy_rss_mb"]  # the server's own peak is not visible here
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--backend",
        required=True,
        choices=[
            *["hf-generate", "transformers", "transformers-int8", "remote"],
            *["onnx", "onnx-int8", "onnx-int4"],
            *["llama-q8_0", "llama-q4_0"],
        ],
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--mean-gap", type=float, default=0.25)
    parser.add_argument(
        "--max-batch", type=int, default=None, help="rows a batch may grow to (MAX_BATCH_SIZE)"
    )
    args = parser.parse_args()
    if args.max_batch is None:  # what a deployment gets by default
        from app.settings import Settings

        args.max_batch = int(Settings.model_fields["max_batch_size"].default)
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if args.backend == "hf-generate":
        result = hf_generate(args.model, args.tokens, concurrency)
    elif args.backend.startswith("llama-"):
        result = llama(args.model, args.backend, args.tokens)
    elif args.backend == "remote":
        server = Server(args.model)
        try:
            result = asyncio.run(
                pooled(args.model, args.backend, args.tokens, concurrency, args.mean_gap, server)
            )
        finally:
            server.stop()
    else:
        result = asyncio.run(
            pooled(
                args.model,
                args.backend,
                args.tokens,
                concurrency,
                args.mean_gap,
                max_batch=args.max_batch,
            )
        )
        result["max_batch"] = args.max_batch
    print(json.dumps({"backend": args.backend, **result}))


if __name__ == "__main__":
    main()
