"""The generation benchmark (not a test): `python -m bench [--quick] [--write]`.

Builds (or reuses) a model with GPT-2 small's exact shape and random weights
(it costs the same as the real one), then measures each backend in its own
fresh process, alternating the order over at least three rounds, and prints
and writes Markdown and JSON: batch-1 seconds and tokens/s, time to first
token, aggregate tokens/s and p50/p95 latency for 8 and 32 requests arriving
at random times through the real pool, resident memory and load time, each as
a ratio to transformers fp32 `generate` measured in the same run, and the
fraction of the memory-bandwidth ceiling (measured here too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "out"
RESULTS = Path(__file__).parent / "RESULTS.md"
BACKENDS = ["hf-generate", "transformers", "transformers-int8", "onnx-int8", "llama-q8_0"]
REFERENCE = "hf-generate"
LLAMA = "llama-q8_0"  # the engine the default one is compared with, when installed
MEAN_GAP_S = 0.25  # requests arrive as a Poisson process with this mean gap
BYTES_PER_PARAM = {
    "hf-generate": 4.0,
    "transformers": 4.0,
    "transformers-int8": 1.0,
    "onnx": 4.0,
    "onnx-int8": 1.0,
    # 4-bit blocks of 32 with a float scale (0.625 bytes) for the 85 M block
    # weights; the 39 M of the int8 output head: 0.74 bytes a parameter read.
    "onnx-int4": (85 * 0.625 + 39) / 124,
    "remote": 4.0,  # transformers serve, fp32
    "llama-q8_0": 34 / 32,  # blocks of 32 int8 weights and one fp16 scale
    "llama-q4_0": 18 / 32,
}
LOCAL = "onnx-int8"  # the default engine, which the remote row is compared with


def _precision(backend: str) -> str:
    return backend.rsplit("-", 1)[1] if backend.endswith(("-int8", "-int4")) else "fp32"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_model(
    model_dir: Path | None,
    tiny: bool,
    workdir: Path,
    *,
    backend: str,
    precision: str,
    train_steps: int = 0,
) -> tuple[Path, str]:
    """The model a benchmark measures, and how to name it: a folder given, the
    tiny model (a smoke run, built in `workdir`), or GPT-2 small's shape. For
    ONNX it is converted here, before anything is timed."""
    if model_dir is not None:
        folder, name = model_dir.resolve(), str(model_dir)
    elif tiny:
        from generation.tiny import build_tiny_model

        progress("building the tiny model ...")
        folder = build_tiny_model(workdir / "tiny", train_steps=train_steps)
        name = f"tiny GPT-2 (2 layers, 64 wide, {train_steps} training steps)"
    else:
        folder, params = build_model(OUT / "gpt2-small-random")
        name = f"GPT-2 small shape, random weights ({params / 1e6:.0f} M parameters)"
    if backend == "onnx":
        from generation.onnx_backend import convert

        convert(folder, precision, progress=progress)
    return folder, name


def build_model(folder: Path) -> tuple[Path, int]:
    """GPT-2 small's shape, random weights, our locally trained tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config()  # 12 layers, 768 wide, 50257 tokens, 1024 positions
    if not (folder / "model.safetensors").exists():
        import torch

        from generation.tiny import corpus, train_tokenizer

        progress(f"building a GPT-2-small-shaped model in {folder} ...")
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
        tokenizer = train_tokenizer(list(corpus()), 1024)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    return folder, params


def bandwidth_gb_s() -> float:
    """Read+write bandwidth of a large copy: what decoding at batch 1 is bound by."""
    a = np.ones(64 * 1024 * 1024, dtype=np.float64)  # 512 MB
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def run_worker(backend: str, model: Path, tokens: int, concurrency: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.worker",
        "--backend",
        backend,
        "--model",
        str(model),
        "--tokens",
        str(tokens),
        "--concurrency",
        concurrency,
    ]
    busy_before, children_before, started = _cpu_busy_s(), _children_cpu_s(), time.monotonic()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    wall = time.monotonic() - started
    others = (_cpu_busy_s() - busy_before) - (_children_cpu_s() - children_before)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # What other processes took of the machine meanwhile: this machine is shared,
    # and an engine whose threads spin-wait loses most when it is not alone.
    result["others_cpu"] = max(0.0, others) / (wall * len(os.sched_getaffinity(0)))
    return result


def _cpu_busy_s() -> float:
    """Seconds of CPU time all processes have used (/proc/stat), for all cores."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    """The median over runs; NaN where a backend does not measure it (llama.cpp
    has no pool, so no arrivals at random)."""
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return float("nan")
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def prompt_tokens(model: Path) -> int:
    """How many tokens the benchmark's prompt is to the model's tokenizer."""
    from bench.worker import PROMPT
    from generation.modelfiles import load_fast_tokenizer

    return len(load_fast_tokenizer(model).encode(PROMPT))


def samples_of(runs: list[dict[str, Any]], key: str) -> list[float]:
    """Every run's samples under `key`, pooled (NaN: nothing was streamed)."""
    return sorted(value for run in runs for value in run.get(key, []) if value == value)


def summarise(
    runs: dict[str, list[dict[str, Any]]], tokens: int, levels: list[int], gbs: float, params: int
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for backend, results in runs.items():
        row: dict[str, Any] = {
            "batch1_s": median_of(results, "batch1_s"),
            "load_s": median_of(results, "load_s"),
            "rss_mb": median_of(results, "rss_mb"),
            "peak_rss_mb": median_of(results, "peak_rss_mb"),
            "busy_rss_mb": median_of(results, "busy_rss_mb"),
        }
        firsts = samples_of(results, "ttft_samples_s")
        row["ttft_ms"] = 1000 * statistics.median(firsts) if firsts else float("nan")
        # NaN (or no figure): nothing streamed that round.
        after_load = [v for v in (run.get("ttft_first_s", math.nan) for run in results) if v == v]
        row["ttft_first_ms"] = 1000 * statistics.median(after_load) if after_load else float("nan")
        row["ttft_samples"] = len(firsts)
        row["ttft_range_ms"] = (1000 * firsts[0], 1000 * firsts[-1]) if firsts else None
        row["others_cpu"] = median_of(results, "others_cpu")
        row["batch1_tok_s"] = tokens / row["batch1_s"]
        ceiling = gbs * 1e9 / (params * BYTES_PER_PARAM[backend])
        row["ceiling_tok_s"] = ceiling
        row["ceiling_fraction"] = row["batch1_tok_s"] / ceiling
        if "loop_lag_ms" in results[0]:
            row["lag_p99_ms"] = median_of(results, "loop_lag_ms", "p99")
            row["lag_max_ms"] = median_of(results, "loop_lag_ms", "max")
        row["burst8_tok_s"] = median_of(results, "burst8", "aggregate_tok_s")
        row["burst8_p50_s"] = median_of(results, "burst8", "p50_s")
        for n in levels:
            row[f"c{n}_tok_s"] = median_of(results, f"c{n}", "aggregate_tok_s")
            row[f"c{n}_p50_s"] = median_of(results, f"c{n}", "p50_s")
            row[f"c{n}_p95_s"] = median_of(results, f"c{n}", "p95_s")
        summary[backend] = row
    ref = summary[REFERENCE]
    for row in summary.values():
        row["batch1_speedup"] = ref["batch1_s"] / row["batch1_s"]
        row["burst8_ratio"] = row["burst8_tok_s"] / ref["burst8_tok_s"]
        for n in levels:
            row[f"c{n}_throughput_ratio"] = row[f"c{n}_tok_s"] / ref[f"c{n}_tok_s"]
        row["rss_ratio"] = row["rss_mb"] / ref["rss_mb"]
    if LOCAL in summary:
        for row in summary.values():
            for n in levels:
                row[f"c{n}_vs_local"] = row[f"c{n}_tok_s"] / summary[LOCAL][f"c{n}_tok_s"]
    if LLAMA in summary:
        llama = summary[LLAMA]
        for row in summary.values():
            row["batch1_vs_llama"] = llama["batch1_s"] / row["batch1_s"]
            row["burst8_vs_llama"] = row["burst8_tok_s"] / llama["burst8_tok_s"]
    return summary


def markdown(summary: dict[str, Any], meta: dict[str, Any], levels: list[int]) -> str:
    lines = [
        "# Generation benchmark",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['cores']} cores · memory bandwidth "
        f"{meta['bandwidth_gb_s']:.1f} GB/s (copy) · model: GPT-2 small shape, random weights "
        f"({meta['params'] / 1e6:.0f} M parameters) · {meta['tokens']} new tokens · "
        f"{meta['rounds']} round(s), medians, each backend in a fresh process, order alternating.",
        "",
        "Ratios are against `hf-generate`: transformers fp32 `model.generate`, measured in the "
        "same run (for concurrency: one left-padded `generate` batch of all requests)"
        + (f", and against `{LLAMA}` (llama.cpp) where it ran." if LLAMA in summary else "."),
        "",
        "The machine is shared: *others' CPU* is the share of all cores that other "
        "processes used while each backend ran (median of its runs).",
        "",
        "| backend | batch-1 s | tokens/s | speed-up | vs llama.cpp | first token | of ceiling "
        "| load s | RSS MB loaded / busy / peak | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['batch1_s']:.2f} | {row['batch1_tok_s']:.1f} | "
            f"{row['batch1_speedup']:.2f}× | {_ratio(row.get('batch1_vs_llama'))} | "
            f"{_ms(row['ttft_ms'])} | {100 * row['ceiling_fraction']:.0f} % of "
            f"{row['ceiling_tok_s']:.0f} | {row['load_s']:.1f} | {row['rss_mb']:.0f} / "
            f"{row['busy_rss_mb']:.0f} / {row['peak_rss_mb']:.0f} | "
            f"{100 * row['others_cpu']:.0f} % |"
        )
    lines += [
        "",
        "First streamed token, a lone story on an idle engine (the benchmark's prompt, "
        f"{meta.get('prompt_tokens', '?')} tokens here): the median over every round's "
        "lone stories (the first after load, then more, one at a time), the story "
        "right after load (median of the rounds), and the fastest and slowest.",
        "",
        "| backend | median | after load | fastest – slowest | samples |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        low, high = row["ttft_range_ms"] or (float("nan"), float("nan"))
        lines.append(
            f"| {name} | {_ms(row['ttft_ms'])} | {_ms(row['ttft_first_ms'])} | "
            f"{_ms(low)} – {_ms(high)} | {row['ttft_samples']} |"
        )
    for n in levels:
        lines += [
            "",
            f"{n} requests arriving at random times (mean gap {meta['mean_gap_s']} s):",
            "",
            "| backend | aggregate tokens/s | ratio | p50 latency s | p95 latency s |",
            "|---|---|---|---|---|",
        ]
        for name, row in summary.items():
            if row[f"c{n}_tok_s"] != row[f"c{n}_tok_s"]:  # NaN: not measured (llama.cpp)
                continue
            lines.append(
                f"| {name} | {row[f'c{n}_tok_s']:.1f} | {row[f'c{n}_throughput_ratio']:.2f}× | "
                f"{row[f'c{n}_p50_s']:.1f} | {row[f'c{n}_p95_s']:.1f} |"
            )
    lines += [
        "",
        "8 requests at once (a burst, as the reference's single batch gets them):",
        "",
        "| backend | aggregate tokens/s | ratio | vs llama.cpp | p50 latency s |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['burst8_tok_s']:.1f} | {row['burst8_ratio']:.2f}× | "
            f"{_ratio(row.get('burst8_vs_llama'))} | {row['burst8_p50_s']:.1f} |"
        )
    lagged = {name: row for name, row in summary.items() if "lag_p99_ms" in row}
    if lagged:
        lines += [
            "",
            "Event-loop lag while the pool's worker thread generates (a 10 ms timer's "
            "lateness over all the concurrent runs): what running generation in a thread "
            "of the bot's process costs the bot.",
            "",
            "| backend | p99 lag ms | max lag ms |",
            "|---|---|---|",
        ]
        for name, row in lagged.items():
            lines.append(f"| {name} | {row['lag_p99_ms']:.1f} | {row['lag_max_ms']:.1f} |")
    if "remote" in summary and LOCAL in summary:
        remote = summary["remote"]
        lines += [
            "",
            f"The remote backend against `transformers serve --continuous-batching` (fp32 torch) "
            f"on this machine, as a ratio to the local engine ({LOCAL}): "
            + ", ".join(
                f"{n} concurrent {remote[f'c{n}_tok_s']:.1f} tokens/s = "
                f"{remote[f'c{n}_vs_local']:.2f}×"
                for n in levels
            )
            + ". Its RSS adds the server's process to ours.",
        ]
    if meta.get("llama_build"):
        lines += ["", f"llama.cpp as built here: {meta['llama_build']}"]
    if meta.get("llama_note"):
        lines += ["", f"llama.cpp: {meta['llama_note']}"]
    check = meta.get("greedy_check")
    if check:
        verdict = "identical" if check["identical"] else "NOT identical"
        lines += [
            "",
            f"Quality guard: ONNX fp32 greedy tokens vs the transformers reference on this model: "
            f"{verdict} ({check['matching_tokens']}/{check['total_tokens']} tokens, "
            f"{check['rows']} prompts batched together).",
        ]
    return "\n".join(lines) + "\n"


def filter_line() -> str:
    """The content filter's cost, beside the engines' (details: bench.moderation)."""
    from bench import moderation

    rows, _ = moderation.measure(300)
    worst = max(max(matches, mask) for _, _, matches, mask, _ in rows)
    verdict = "met" if worst < moderation.TARGET_US else "missed"
    return (
        f"\nContent filter: at most {worst:.0f} µs per check of a 400-token part "
        f"(built-in list, and with a server's 200 terms; target under "
        f"{moderation.TARGET_US:.0f} µs: {verdict}). Details: `python -m bench.moderation`.\n"
    )


def _ratio(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2f}×"


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f} ms"  # NaN: no text was streamed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 50 tokens, 8 requests, one round (overrides --rounds and --tokens)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over all backends, the order rotating each round; medians are reported "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=200,
        help="new tokens each request generates (default: %(default)s)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"also write bench/{RESULTS.name} (else only bench/out/)",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated backends to measure, from "
        f"{', '.join([*BACKENDS, 'onnx'])}; {REFERENCE} (the reference) is always added "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--remote",
        action="store_true",
        help="add the openai backend against `transformers serve` on loopback",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rounds, tokens, levels = args.rounds, args.tokens, [8, 32]
    if args.quick:
        rounds, tokens, levels = 1, 50, [8]
    backends = args.backends.split(",")
    if args.remote and "remote" not in backends:
        backends.append("remote")
    if REFERENCE not in backends:
        backends.insert(0, REFERENCE)
    llama_note = None
    if any(name.startswith("llama-") for name in backends):
        from bench.llama_cpp import available

        llama_note = available()
        if llama_note is not None:
            progress(f"skipping llama.cpp: {llama_note}")
            backends = [name for name in backends if not name.startswith("llama-")]
    OUT.mkdir(exist_ok=True)
    model, params = build_model(OUT / "gpt2-small-random")
    from generation.onnx_backend import convert

    for name in backends:  # convert once, outside the timed loads
        if name.startswith("onnx"):
            convert(model, _precision(name), progress=progress)
        if name.startswith("llama-"):
            from bench.llama_cpp import quantized_model

            quantized_model(model, name.removeprefix("llama-"))
    gbs = bandwidth_gb_s()
    progress(f"memory bandwidth {gbs:.1f} GB/s; {rounds} round(s) of {', '.join(backends)}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    for round_index in range(rounds):
        order = backends[round_index % len(backends) :] + backends[: round_index % len(backends)]
        for name in order:
            progress(f"round {round_index + 1}/{rounds}: {name} ...")
            started = time.monotonic()
            runs[name].append(run_worker(name, model, tokens, ",".join(map(str, levels))))
            progress(f"  {name} done in {time.monotonic() - started:.0f} s")
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "bandwidth_gb_s": gbs,
        "params": params,
        "tokens": tokens,
        "rounds": rounds,
        "mean_gap_s": MEAN_GAP_S,
        "prompt_tokens": prompt_tokens(model),
        "llama_note": llama_note,
        "llama_build": next(
            (run[0]["build"] for name, run in runs.items() if name.startswith("llama-")), None
        ),
    }
    summary = summarise(runs, tokens, levels, gbs, params)
    if any(name.startswith("onnx") for name in backends):
        progress("checking ONNX fp32 against the reference's greedy tokens ...")
        convert(model, "fp32", progress=progress)
        done = subprocess.run(
            [sys.executable, "-m", "bench.greedy", str(model), "50"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        meta["greedy_check"] = json.loads(done.stdout.strip().splitlines()[-1])
    text = markdown(summary, meta, levels) + filter_line()
    (OUT / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2)
    )
    (OUT / "results.md").write_text(text)
    if args.write:  # other benchmarks' sections (python -m bench.http_load) stay
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
        kept = old[old.index("\n## ") :] if "\n## " in old else ""
        RESULTS.write_text(text + kept)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
