"""What serving /metrics costs (not a test): `python -m bench.metrics [--tiny] [--rounds N]`.

Starts the real service twice in this process (`app.runtime.run`, each on
127.0.0.1 and an ephemeral port, on the same model folder): once with
METRICS_ENABLED=false, once with metrics on. Then, in rounds whose order
rotates (so a machine that gets busier or quieter part-way through weighs on
every configuration alike), each round sends `--stories` stories at once to
one of:

- `off`: the service without metrics (no hooks, no /metrics);
- `on`: the service with metrics, nobody scraping;
- `scraped`: the same service while a scraper in another process (as
  Prometheus would be) GETs /metrics every `--interval-ms` (100 ms).

Each round's throughput is the tokens its stories got over its wall time.
Prints the median tokens per second of each configuration and the median of
its ratio to `on` within each round (scraped / on is the cost of serving
/metrics; on / off the cost of the hooks), and what one scrape costs: its time
as the scraper saw it, its size.
`--write` puts the table in bench/RESULTS.md as the section "## Metrics cost".
The default model has GPT-2 small's shape with random weights (`--tiny`: the
tiny test model, for a smoke run; `--model-dir`: any model folder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.__main__ import bench_model, progress
from bench.results import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Metrics cost"
CONFIGS = ("off", "on", "scraped")
PROMPTS = [
    "The detective opened the door and",
    "Once upon a time, in a city by the sea,",
    "The captain looked at the storm and",
    "Nobody expected the letter to arrive on a Sunday, but",
]
# The scraper, in a process of its own: GET the URL every interval until
# stdin closes, then print how many scrapes, their total seconds, the last size.
SCRAPER = r"""
import sys, threading, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
count, spent, size = 0, 0.0, 0
while not done.is_set():
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        size = len(response.read())
    spent += time.perf_counter() - began
    count += 1
    if count == 1:
        print("ready", flush=True)
    done.wait(max(0.0, interval - (time.perf_counter() - began)))
print(count, spent, size, flush=True)
"""


@contextlib.asynccontextmanager
async def service(model_dir: Path, workdir: Path, metrics: bool, args: Any) -> AsyncIterator[str]:
    """The whole service (app.runtime.run) on loopback; yields its base URL."""
    from app.runtime import bound_addresses, run
    from app.settings import load_settings

    settings = load_settings(
        _env_file=None,  # the benchmark's settings only, not a developer's .env
        model_dir=model_dir,
        database_path=workdir / f"metrics-{metrics}.sqlite3",
        genres_path=ROOT / "genres.toml",
        http_host="127.0.0.1",
        http_port=0,
        http_api_key=None,
        discord_token=None,
        backend=args.backend,
        precision=args.precision,
        max_batch_size=args.stories,
        queue_size=max(32, args.stories),
        generation_threads=args.threads,
        user_cooldown_s=0,
        log_level="WARNING",
        metrics_enabled=metrics,
    )
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def started(runner: Any) -> None:
        if not ready.done():
            ready.set_result(bound_addresses(runner)[0])

    task = asyncio.create_task(run(settings, stop, started=started))
    first: list[asyncio.Future[Any]] = [task, ready]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        await task  # raises what stopped it
        raise RuntimeError("the service stopped before it started serving")
    try:
        yield ready.result()
    finally:
        stop.set()
        await task


async def one_round(session: Any, url: str, args: Any, round_no: int) -> tuple[int, float]:
    """`args.stories` stories at once: (tokens written, wall seconds)."""

    async def story(index: int) -> int:
        body = {
            "input": PROMPTS[index % len(PROMPTS)],
            "max_new_tokens": args.max_new_tokens,
            "seed": 1000 * round_no + index,
        }
        async with session.post(url + "/", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {answer}")
            return int(answer["tokens"])

    began = time.perf_counter()
    tokens = await asyncio.gather(*(story(i) for i in range(args.stories)))
    return sum(tokens), time.perf_counter() - began


def start_scraper(url: str, interval_s: float) -> subprocess.Popen[str]:
    scraper = subprocess.Popen(
        [sys.executable, "-c", SCRAPER, url + "/metrics", str(interval_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert scraper.stdout is not None
    if scraper.stdout.readline().strip() != "ready":
        raise RuntimeError("the scraper could not read /metrics")
    return scraper


def stop_scraper(scraper: subprocess.Popen[str]) -> tuple[int, float, int]:
    output, _ = scraper.communicate(input="", timeout=30)
    count, spent, size = output.split()
    return int(count), float(spent), int(size)


async def measure(model_dir: Path, workdir: Path, args: Any) -> dict[str, Any]:
    import aiohttp

    rates: dict[str, list[float]] = {config: [] for config in CONFIGS}
    scrapes = {"count": 0, "seconds": 0.0, "bytes": 0, "wall": 0.0}
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        service(model_dir, workdir, False, args) as off_url,
        service(model_dir, workdir, True, args) as on_url,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        urls = {"off": off_url, "on": on_url, "scraped": on_url}
        for url in (off_url, on_url):  # warm both engines up
            await one_round(session, url, args, 0)
        for round_no in range(1, args.rounds + 1):
            shift = round_no % len(CONFIGS)
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                # The server runs in this loop: wait for the scraper off it.
                scraper = (
                    await asyncio.to_thread(start_scraper, on_url, args.interval_ms / 1000)
                    if config == "scraped"
                    else None
                )
                try:
                    tokens, seconds = await one_round(session, urls[config], args, round_no)
                finally:
                    if scraper is not None:
                        count, spent, size = await asyncio.to_thread(stop_scraper, scraper)
                        scrapes["count"] += count
                        scrapes["seconds"] += spent
                        scrapes["bytes"] = size
                if config == "scraped":
                    scrapes["wall"] += seconds
                rates[config].append(tokens / seconds)
                progress(f"round {round_no} {config:8} {tokens / seconds:7.1f} tokens/s")
    return {"rates": rates, "scrapes": scrapes}


def paired(raw: dict[str, Any], config: str, baseline: str) -> float:
    """The median over rounds of config / baseline within each round: rounds run
    their configurations back to back, so this cancels a machine that drifts."""
    pairs = zip(raw["rates"][config], raw["rates"][baseline], strict=True)
    return statistics.median(a / b for a, b in pairs)


def markdown(raw: dict[str, Any], meta: dict[str, Any]) -> str:
    median = {config: statistics.median(values) for config, values in raw["rates"].items()}
    scrapes = raw["scrapes"]
    per_scrape_ms = 1000 * scrapes["seconds"] / max(1, scrapes["count"])
    lines = [
        f"{HEADING}",
        "",
        f"`{meta['command']}`, {meta['when']}, {meta['machine']}, {meta['cores']} cores; "
        f"{meta['model']}, backend {meta['backend']} {meta['precision']}; "
        f"{meta['stories']} stories of {meta['max_new_tokens']} tokens at once per round, "
        f"{meta['rounds']} rounds per configuration in rotating order; medians.",
        "",
        "| configuration | tokens/s, median | rounds, lowest to highest | to unscraped, paired |",
        "|---|---|---|---|",
    ]
    labels = {
        "off": "METRICS_ENABLED=false",
        "on": "metrics on, nobody scraping",
        "scraped": f"metrics on, scraped every {meta['interval_ms']:.0f} ms",
    }
    for config in CONFIGS:
        rounds = raw["rates"][config]
        lines.append(
            f"| {labels[config]} | {median[config]:.1f} | {min(rounds):.0f} to {max(rounds):.0f} "
            f"| {paired(raw, config, 'on'):.3f} |"
        )
    lines += [
        "",
        f"Scraped / unscraped: **{paired(raw, 'scraped', 'on'):.3f}**; "
        f"metrics on / off: {paired(raw, 'on', 'off'):.3f} (medians of the ratios within "
        "each round). "
        f"One scrape: {per_scrape_ms:.1f} ms as the scraper saw it (HTTP included), "
        f"{scrapes['bytes'] / 1000:.1f} kB; {scrapes['count']} scrapes in "
        f"{scrapes['wall']:.0f} s of scraped rounds.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run)")
    parser.add_argument("--model-dir", type=Path, help="an existing model folder instead")
    parser.add_argument("--backend", choices=["onnx", "transformers"], default="onnx")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    parser.add_argument("--stories", type=int, default=8, help="stories at once per round")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--interval-ms", type=float, default=100.0, help="between scrapes")
    parser.add_argument("--threads", type=int, default=None, help="GENERATION_THREADS")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args()
    if min(args.rounds, args.stories, args.max_new_tokens) < 1 or args.interval_ms <= 0:
        parser.error("--rounds, --stories, --max-new-tokens and --interval-ms must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    workdir = Path(tempfile.mkdtemp(prefix="storybot-bench-metrics-"))
    try:
        model_dir, model_name = bench_model(
            args.model_dir,
            args.tiny,
            workdir,
            backend=args.backend,
            precision=args.precision,
            train_steps=0,
        )
        raw = asyncio.run(measure(model_dir, workdir, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "model": model_name,
        "backend": args.backend,
        "precision": args.precision,
        "stories": args.stories,
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "interval_ms": args.interval_ms,
        "command": shlex.join(["python", "-m", "bench.metrics", *sys.argv[1:]]),
    }
    text = markdown(raw, meta)
    print(text)
    if args.write:
        write_section(HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
