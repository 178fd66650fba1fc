"""Prometheus metrics: one registry, made in the composition root, and the
observer hooks every layer reports to.

The layers below know nothing of Prometheus. They report through small hooks
(the service's `StoryObserver`, the HTTP `HttpObserver`, the bot's
`DiscordObserver`, the decoding loop's `on_step`, the store's `on_write`), or
keep counters that a collector reads at scrape time (queue depth, running
rows, tokens, the remote engine's retries, loaded models). `Metrics`
implements all of them. Tests build their own, with a registry of their own.

Label values are a fixed vocabulary (front-end, outcome, route template,
status, Discord error code, rate-limit scope) or the model's name, which the
operator chose: never text or ids from a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from generation.model_pools import ModelPools
from generation.pool import GenerationPool
from generation.types import GenerationResult
from stories.telemetry import OUTCOMES, Outcome

FRONTENDS = ("discord", "api")

# A `_created` sample per labelled child is a stored series each in Prometheus,
# and nothing here reads them: leave them out (prometheus_client's own switch).
disable_created_metrics()
# Seconds a person waits: for the first words (queue included), for the whole part.
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_STORY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Every storybot metric, in `registry` (a new one unless given)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process: bool = True,
        min_render_interval_s: float = 0.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # A scrape within this long of the last rendering gets that text again:
        # rendering takes about 2 ms of the event loop (and of the GIL the
        # engine's Python code needs), so a scraper far more eager than
        # Prometheus's usual 15 s cannot make it cost more than once per interval.
        self.min_render_interval_s = min_render_interval_s
        self._rendered: dict[str, tuple[float, bytes]] = {}  # content type -> (when, text)
        r = self.registry
        self.info = Info("storybot", "How this storybot runs", registry=r)
        self.requests = Counter(
            "storybot_requests",
            "Requests for a story part, by front-end and how they ended "
            "(story, joined, busy, limited, filtered, invalid, refused, cancelled, "
            "interrupted, timeout, error)",
            ["frontend", "outcome"],
            registry=r,
        )
        for frontend in FRONTENDS:  # every series from the start: rate() needs a zero
            for outcome in OUTCOMES:
                self.requests.labels(frontend, outcome)
        self.first_token = Histogram(
            "storybot_time_to_first_token_seconds",
            "From the request to its first generated token, time in the queue included",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.story_time = Histogram(
            "storybot_story_seconds",
            "From the request to the last token of its part, time in the queue included",
            buckets=_STORY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "storybot_queue_wait_seconds",
            "Time a written part waited in the queue before generation began",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "storybot_batch_rows",
            "Rows (stories) in each decoding step of a local engine: the batch size per step",
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "storybot_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_time = Histogram(
            "storybot_http_request_seconds",
            "Time to answer an HTTP request (a streamed story: until its end), by route",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.discord_errors = Counter(
            "storybot_discord_api_errors",
            "Error answers from Discord's API (429 excluded), by HTTP status and Discord's "
            "error code (0: none)",
            ["status", "code"],
            registry=r,
        )
        self.rate_limits = Counter(
            "storybot_discord_rate_limit_waits",
            "Waits Discord imposed, by scope: 429 answers (user, global, shared, unknown), "
            "each waited out or refused past a long wait, and answers that emptied a "
            "route's bucket (bucket: discord.py holds the next request on it)",
            ["scope"],
            registry=r,
        )
        self.rate_limit_seconds = Counter(
            "storybot_discord_rate_limit_wait_seconds",
            "Seconds those waits lasted at most, by scope (a bucket's: until it resets)",
            ["scope"],
            registry=r,
        )
        self.db_writes = Histogram(
            "storybot_database_write_seconds",
            "Time of each committed database write transaction, BEGIN to COMMIT",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self._pools: Callable[[], Iterable[GenerationPool]] = list
        self._models: ModelPools | None = None
        r.register(_EngineCollector(self))
        if process:  # CPU, memory, open files of this process (Linux /proc)
            ProcessCollector(registry=r)

    # ------------------------------------------------------------ wiring
    def watch(self, pool: GenerationPool, models: ModelPools | None = None) -> None:
        """Report the pools' queues, rows and tokens (the default model's, and
        every genre model's that is loaded when scraped)."""
        self._models = models
        self._pools = (lambda: models.pools) if models is not None else (lambda: [pool])

    def describe(self, **facts: str) -> None:
        """storybot_info: how this storybot runs (backend, precision, version)."""
        self.info.info(facts)

    # ---------------------------------------------------- the layers' hooks
    def request_ended(
        self, frontend: str, outcome: Outcome, result: GenerationResult | None
    ) -> None:
        """StoryObserver (stories.telemetry)."""
        self.requests.labels(frontend if frontend in FRONTENDS else "other", outcome).inc()
        if outcome != "story" or result is None:
            return
        if result.first_token_s is not None:
            self.first_token.observe(result.queued_s + result.first_token_s)
        self.story_time.observe(result.queued_s + result.generation_s)
        self.queue_wait.observe(result.queued_s)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """HttpObserver (api.telemetry)."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_time.labels(route).observe(seconds)

    def discord_error(self, status: int, code: int) -> None:
        """DiscordObserver (bot.telemetry)."""
        self.discord_errors.labels(str(status), str(code)).inc()

    def discord_rate_limited(self, scope: str, seconds: float) -> None:
        """DiscordObserver (bot.telemetry)."""
        self.rate_limits.labels(scope).inc()
        self.rate_limit_seconds.labels(scope).inc(seconds)

    def on_step(self, rows: int) -> None:
        """The decoding loop's hook (generation.decode_loop), on the worker thread."""
        self.batch_rows.observe(rows)

    def on_write(self, seconds: float) -> None:
        """The store's hook (storage.store)."""
        self.db_writes.observe(seconds)

    # ------------------------------------------------------------ serving
    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics as `accept` asks (Prometheus text, or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept)
        now = time.monotonic()
        last = self._rendered.get(content_type)
        if last is not None and now - last[0] < self.min_render_interval_s:
            return last[1], content_type
        body: bytes = encoder(self.registry)
        self._rendered[content_type] = (now, body)
        return body, content_type


class _EngineCollector(Collector):
    """What the pools count for themselves, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        by_model: dict[str, list[GenerationPool]] = {}
        for pool in self._metrics._pools():
            name = pool.backend.model_id if pool.backend is not None else "loading"
            by_model.setdefault(name, []).append(pool)

        def family(kind: Any, name: str, doc: str, value: Callable[[GenerationPool], Any]) -> Any:
            metric = kind(name, doc, labels=["model"])
            for model, pools in sorted(by_model.items()):
                values = [v for v in map(value, pools) if v is not None]
                if values:
                    metric.add_metric([model], sum(values))
            return metric

        def remote(attribute: str) -> Callable[[GenerationPool], int | None]:
            return lambda pool: getattr(pool.backend, attribute, None)

        yield family(
            GaugeMetricFamily,
            "storybot_queue_depth",
            "Requests waiting in the queue",
            lambda pool: pool.queue_depth,
        )
        yield family(
            GaugeMetricFamily,
            "storybot_queue_capacity",
            "Requests the queue holds before answering busy (QUEUE_SIZE)",
            lambda pool: pool.max_queue,
        )
        yield family(
            GaugeMetricFamily,
            "storybot_running_rows",
            "Requests being generated now (rows of the running batch)",
            lambda pool: pool.running,
        )
        yield family(
            CounterMetricFamily,
            "storybot_new_tokens",
            "Tokens generated, counted when each request ends",
            lambda pool: pool.stats.new_tokens,
        )
        yield family(
            GaugeMetricFamily,
            "storybot_engine_tokens_per_second",
            "Tokens the engine wrote per second of generating, over the last minute",
            lambda pool: pool.tokens_per_second(),
        )
        yield family(
            CounterMetricFamily,
            "storybot_remote_retries",
            "Requests to the remote engine sent again after a failure (BACKEND=openai)",
            remote("retried"),
        )
        yield family(
            CounterMetricFamily,
            "storybot_remote_failures",
            "Requests the remote engine failed after any retries (BACKEND=openai)",
            remote("failed"),
        )
        models = self._metrics._models
        yield GaugeMetricFamily(
            "storybot_models_loaded",
            "Models loaded: the default model and each genre model loaded now",
            value=len(models.pools) if models is not None else len(list(self._metrics._pools())),
        )
        memory = GaugeMetricFamily(
            "storybot_model_memory_bytes",
            "Memory the loaded models may hold, as estimated against MODEL_MEMORY_BUDGET_MB "
            "(only with genre models, which share the budget)",
        )
        if models is not None:
            memory.add_metric([], models.used_mb * 1e6)
        yield memory
        yield CounterMetricFamily(
            "storybot_model_evictions",
            "Idle genre models unloaded to stay within MODEL_MEMORY_BUDGET_MB",
            value=models.evictions if models is not None else 0,
        )
