"""The HTTP load benchmark (not a test): `python -m bench.http_load [--requests 100] [--tiny]`.

Starts the real service in this process (`app.runtime.run`: storage, pool,
story service, aiohttp on 127.0.0.1, an ephemeral port) on a model with GPT-2
small's exact shape and random weights (`--tiny`: the tiny test model, for a
smoke run; `--model-dir`: any model folder), then:

1. sends one warm-up request and a few lone requests, one at a time: the
   baseline latency;
2. fires `--requests` POST / at once from one aiohttp client and counts the
   answers: 200 (a story), 503 with Retry-After (the queue is full, as the
   contract says), anything else (a failure: reported loudly, exit status 1);
3. measures the 200s' p50/p95/max latency, the burst's wall time and, with a
   task that sleeps 10 ms in a loop, how late the event loop wakes it: the
   server runs in this loop, so that is the server's loop lag.

Prints a Markdown table; `--write` puts it in bench/RESULTS.md as the section
"## HTTP load (N at once)", replacing an earlier one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.__main__ import bench_model, progress
from bench.results import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## HTTP load"  # + " (N at once)"
PROMPTS = [
    "The detective opened the door and",
    "Once upon a time, in a city by the sea,",
    "The captain looked at the storm and",
    "Nobody expected the letter to arrive on a Sunday, but",
]


class Captured(logging.Handler):
    """Keeps the server's warnings and errors (with tracebacks) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [self.format(record) for record in self.records]


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    seconds: float
    retry_after: str | None = None
    code: str | None = None  # the error body's code
    tokens: int | None = None
    server_s: float | None = None  # the 200 body's "seconds": queued + generating
    problem: str | None = None  # why this answer is wrong


@dataclass
class Lag:
    """How late a 10 ms sleep in this event loop wakes up: (when, ms late) samples."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            late = 1000 * (loop.time() - before - 0.01)
            self.samples.append((time.perf_counter(), late))

    def window(self, start: float, end: float) -> dict[str, float]:
        """p50/p99/max over samples taken in [start, end] (perf_counter), and how many
        seconds after `start` the worst one woke."""
        taken = [(t, late) for t, late in list(self.samples) if start <= t <= end]
        values = sorted(late for _, late in taken)
        if not values:
            nan = float("nan")
            return {"p50": nan, "p99": nan, "max": nan, "max_at_s": nan, "n": 0}
        worst_t, worst = max(taken, key=lambda sample: sample[1])
        return {
            "p50": statistics.median(values),
            "p99": values[int(0.99 * (len(values) - 1))],
            "max": worst,
            "max_at_s": worst_t - worst / 1000 - start,  # when the late sleep was due
            "n": len(values),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n q), at least 1
    return ordered[int(rank) - 1]


async def post(session: Any, url: str, seed: int, tokens: int) -> Answer:
    import aiohttp

    body = {"input": PROMPTS[seed % len(PROMPTS)], "max_new_tokens": tokens, "seed": seed}
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            raw = await response.read()
            seconds = time.perf_counter() - started
            answer = Answer(response.status, seconds, response.headers.get("Retry-After"))
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if response.content_type != "application/json" or not isinstance(data, dict):
                answer.problem = f"not a JSON object: {raw[:200]!r}"
                return answer
            if response.status == 200:
                if not isinstance(data.get("output"), str) or "story_id" not in data:
                    answer.problem = f"200 without output/story_id: {raw[:200]!r}"
                answer.tokens = data.get("tokens")
                answer.server_s = data.get("seconds")
            else:
                error = data.get("error")
                answer.code = error.get("code") if isinstance(error, dict) else None
                if response.status == 503 and not answer.retry_after:
                    answer.problem = "503 without Retry-After"
                elif response.status != 503:
                    answer.problem = f"{response.status}: {raw[:300]!r}"
            return answer
    except (TimeoutError, aiohttp.ClientError) as error:
        seconds = time.perf_counter() - started
        return Answer(None, seconds, problem=f"{type(error).__name__}: {error}")


async def client(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """A warm-up, 3 lone requests one at a time, then `args.requests` at once."""
    import aiohttp

    out: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # One connection per request, so all of them are in flight at once.
    connector = aiohttp.TCPConnector(limit=args.requests + 1, limit_per_host=0)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, trust_env=False
    ) as session:
        out["warmup"] = await post(session, url, 1000, args.max_new_tokens)
        t0 = time.perf_counter()
        out["lone"] = [await post(session, url, 1001 + i, args.max_new_tokens) for i in range(3)]
        out["lone_window"] = (t0, time.perf_counter())
        progress(
            "lone requests: "
            + ", ".join(f"{a.status} in {a.seconds:.2f} s" for a in [out["warmup"], *out["lone"]])
        )

        done = Counter[str]()
        total = args.requests
        tty = sys.stderr.isatty()

        def show(final: bool = False) -> None:
            if tty or final:
                counts = ", ".join(f"{k}: {v}" for k, v in sorted(done.items()))
                end = "\n" if final else ""
                line = f"\ranswered {done.total()}/{total} ({counts})"
                print(line, end=end, file=sys.stderr, flush=True)

        async def one(index: int) -> Answer:
            answer = await post(session, url, index, args.max_new_tokens)
            done[str(answer.status or "no answer")] += 1
            show()
            return answer

        show()
        t0 = time.perf_counter()
        out["burst"] = await asyncio.gather(*(one(i) for i in range(total)))
        t1 = time.perf_counter()
        out["wall_s"], out["burst_window"] = t1 - t0, (t0, t1)
        show(final=True)
    return out


async def measure(args: argparse.Namespace, model_dir: Path, workdir: Path) -> dict[str, Any]:
    from app.runtime import bound_addresses, run
    from app.settings import load_settings

    settings = load_settings(
        _env_file=None,  # the benchmark's settings only, not a developer's .env
        model_dir=model_dir,
        database_path=workdir / "db.sqlite3",
        genres_path=ROOT / "genres.toml",
        http_host="127.0.0.1",
        http_port=0,
        http_api_key=None,
        http_cors_origins="",
        backend=args.backend,
        precision=args.precision,
        discord_token=None,
        queue_size=args.queue_size,
        max_batch_size=args.max_batch_size,
        user_cooldown_s=0,
        shutdown_grace_s=5.0,
        log_level="INFO",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str] = loop.create_future()

    def started(runner: Any) -> None:
        addresses = bound_addresses(runner)
        if not ready.done():
            ready.set_result(addresses[0] if addresses else "")

    load_started = time.perf_counter()
    server = asyncio.create_task(run(settings, stop, started=started))
    first: list[asyncio.Future[Any]] = [server, ready]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():  # run() ended before serving: raise what it raised
        await server
        raise RuntimeError("the service stopped before it started serving")
    base = ready.result()
    if not base.startswith("http://127.0.0.1:"):
        stop.set()
        await server
        raise RuntimeError(f"the service is not on loopback: {base!r}")
    out: dict[str, Any] = {"load_s": time.perf_counter() - load_started, "url": base}
    progress(f"service on {base} ({out['load_s']:.1f} s to start)")

    lag = Lag()
    ticker = asyncio.create_task(lag.tick())
    try:
        if args.client_thread:  # its own thread and loop: the server's loop serves only
            out.update(await asyncio.to_thread(asyncio.run, client(base + "/", args)))
        else:
            out.update(await client(base + "/", args))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        stop.set()
        stopping = time.perf_counter()
        await server
        out["stop_s"] = time.perf_counter() - stopping
    out["lone_lag"] = lag.window(*out.pop("lone_window"))
    out["burst_lag"] = lag.window(*out.pop("burst_window"))
    progress(f"service stopped in {out['stop_s']:.1f} s")
    return out


def summarise(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    burst: list[Answer] = raw["burst"]
    lone: list[Answer] = raw["lone"]
    ok = [a for a in burst if a.status == 200 and a.problem is None]
    latencies = [a.seconds for a in ok]
    lone_ok = [a.seconds for a in lone if a.status == 200 and a.problem is None]
    lone_s = statistics.median(lone_ok) if lone_ok else float("nan")
    statuses = Counter(str(a.status or "no answer") for a in burst)
    tokens = sum(a.tokens or 0 for a in ok)
    lone_tokens = [a.tokens or 0 for a in lone if a.status == 200]
    s: dict[str, Any] = {
        "requests": len(burst),
        "statuses": dict(sorted(statuses.items())),
        "ok": len(ok),
        "busy": sum(1 for a in burst if a.status == 503),
        "retry_after": dict(
            sorted(Counter(a.retry_after or "-" for a in burst if a.status == 503).items())
        ),
        "busy_codes": dict(Counter(a.code or "-" for a in burst if a.status == 503)),
        "busy_p50_ms": 1000 * percentile([a.seconds for a in burst if a.status == 503], 0.5),
        "busy_max_ms": 1000 * max([a.seconds for a in burst if a.status == 503], default=0.0),
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies, default=float("nan")),
        "server_p50_s": percentile([a.server_s for a in ok if a.server_s is not None], 0.5),
        "server_max_s": max(
            [a.server_s for a in ok if a.server_s is not None], default=float("nan")
        ),
        "min_s": min(latencies, default=float("nan")),
        "wall_s": raw["wall_s"],
        "tokens": tokens,
        "tok_s": tokens / raw["wall_s"] if raw["wall_s"] else float("nan"),
        "lone_s": lone_s,
        "lone_all_s": [a.seconds for a in lone],
        "lone_tokens": lone_tokens,
        "lone_tok_s": statistics.median(lone_tokens) / lone_s if lone_ok else float("nan"),
        "warmup_s": raw["warmup"].seconds,
        "lone_lag": raw["lone_lag"],
        "burst_lag": raw["burst_lag"],
        "load_s": raw["load_s"],
        "stop_s": raw["stop_s"],
    }
    s["p50_ratio"] = s["p50_s"] / lone_s
    s["p95_ratio"] = s["p95_s"] / lone_s
    s["max_ratio"] = s["max_s"] / lone_s
    s["tok_s_ratio"] = s["tok_s"] / s["lone_tok_s"]
    s["failures"] = [
        f"request {i}: {a.problem or a.status}"
        for i, a in enumerate(burst)
        if a.problem is not None or a.status not in (200, 503)
    ] + [
        f"lone request {i}: {a.problem or a.status}"
        for i, a in enumerate([raw["warmup"], *lone])
        if a.problem is not None or a.status != 200
    ]
    return s


def markdown(s: dict[str, Any], meta: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
    retry = ", ".join(f"`{k}` ×{v}" for k, v in s["retry_after"].items()) or "none"
    lone_lag, burst_lag = s["lone_lag"], s["burst_lag"]
    lines = [
        f"{HEADING} ({s['requests']} at once)",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['cores']} cores · model: {meta['model']} · "
        f"backend {meta['backend']} ({meta['precision']}) · QUEUE_SIZE={meta['queue_size']}, "
        f"MAX_BATCH_SIZE={meta['max_batch_size']} · max_new_tokens {meta['max_new_tokens']}.",
        "",
        f"`{meta['command']}`",
        "",
        "The real service (`app.runtime.run`: SQLite storage, the pool, aiohttp) on "
        "127.0.0.1 in this process; one aiohttp client fires every POST / at the same "
        "moment. Lone: the median of 3 requests sent one at a time after a warm-up. "
        "Loop lag: how late a 10 ms sleep in the server's event loop wakes up; "
        + (
            "the client runs in a thread with its own loop, so the server's loop serves only."
            if meta["client_thread"]
            else "the client shares that loop, so its own work counts in the lag too."
        ),
        "",
        "| measure | value |",
        "|---|---|",
        f"| answers | {statuses} |",
        f"| Retry-After on the 503s | {retry} |",
        f"| 503 answered in (p50 / max) | {s['busy_p50_ms']:.0f} / {s['busy_max_ms']:.0f} ms |",
        f"| lone request latency | {s['lone_s']:.2f} s ({s['lone_tok_s']:.0f} tokens/s) |",
        f"| burst 200s latency p50 / p95 / max | {s['p50_s']:.2f} / {s['p95_s']:.2f} / "
        f"{s['max_s']:.2f} s |",
        f"| the same, as the server timed them (queued + generating) | "
        f"{s['server_p50_s']:.2f} / – / {s['server_max_s']:.2f} s |",
        f"| as a ratio to the lone request | {s['p50_ratio']:.1f}× / {s['p95_ratio']:.1f}× / "
        f"{s['max_ratio']:.1f}× |",
        f"| burst wall time | {s['wall_s']:.2f} s |",
        f"| burst throughput | {s['tok_s']:.0f} tokens/s of {s['tokens']} tokens "
        f"({s['tok_s_ratio']:.1f}× the lone request's) |",
        f"| loop lag, lone requests p50 / p99 / max | {lone_lag['p50']:.1f} / "
        f"{lone_lag['p99']:.1f} / {lone_lag['max']:.1f} ms |",
        f"| loop lag, burst p50 / p99 / max | {burst_lag['p50']:.1f} / "
        f"{burst_lag['p99']:.1f} / {burst_lag['max']:.1f} ms "
        f"(the worst {burst_lag['max_at_s']:.2f} s into the burst) |",
        f"| service start / stop | {s['load_s']:.1f} s / {s['stop_s']:.1f} s |",
        f"| server warnings and errors logged | {meta['log_count']} |",
    ]
    if s["failures"]:
        lines += ["", f"**FAILED: {len(s['failures'])} wrong answers**, first ones:", ""]
        lines += [f"- {line}" for line in s["failures"][:10]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=100, help="requests fired at once")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run)")
    parser.add_argument("--train-steps", type=int, default=0, help="with --tiny")
    parser.add_argument("--model-dir", type=Path, help="an existing model folder instead")
    parser.add_argument("--backend", choices=["onnx", "transformers"], default="onnx")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout, seconds")
    parser.add_argument(
        "--client-thread",
        action="store_true",
        help="run the client in a thread with its own event loop, off the server's loop",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args()
    if args.requests < 1 or args.max_new_tokens < 1:
        parser.error("--requests and --max-new-tokens must be at least 1")

    captured = Captured()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(captured)

    workdir = Path(tempfile.mkdtemp(prefix="storybot-http-load-"))
    try:
        model_dir, model_name = bench_model(
            args.model_dir,
            args.tiny,
            workdir,
            backend=args.backend,
            precision=args.precision,
            train_steps=args.train_steps,
        )
        raw = asyncio.run(measure(args, model_dir, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarise(raw, args)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "model": model_name,
        "backend": args.backend,
        "precision": args.precision,
        "queue_size": args.queue_size,
        "max_batch_size": args.max_batch_size,
        "max_new_tokens": args.max_new_tokens,
        "command": shlex.join(["python", "-m", "bench.http_load", *sys.argv[1:]]),
        "client_thread": args.client_thread,
        "log_count": len(captured.records),
    }
    text = markdown(summary, meta)
    print(text)
    if captured.records:
        progress(f"the server logged {len(captured.records)} warnings/errors:")
        for line in captured.lines()[:20]:
            progress("  " + line.replace("\n", "\n  "))
    if args.write:
        write_section(HEADING, text)
        progress(f"wrote the section to {RESULTS}")
    if summary["failures"]:
        progress(f"FAILED: {len(summary['failures'])} answers were not 200 or 503:")
        for line in summary["failures"][:20]:
            progress("  " + line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
