"""The composition root: settings -> storage, pool, stories -> HTTP and Discord.

`python -m bot` runs `main()`. Nothing heavy happens at import time: the model
is loaded by the pool's worker when `run()` starts, storage is opened in an
`async with`, and everything is closed in reverse order on SIGINT or SIGTERM.
Start-up problems end the process with one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from api.app import create_app
from api.site import LimitedSite, quiet_protocol_errors
from api.telemetry import metrics_app
from app.errors import StartupError
from app.logs import configure_logging
from app.metrics import Metrics
from app.settings import Settings, SettingsError, load_settings
from generation.backend import Backend
from generation.errors import ModelLoadError
from generation.model_pools import ModelPools, model_memory_mb
from generation.modelfiles import check_model_dir
from generation.pool import GenerationPool
from storage.errors import StorageError
from storage.store import Store
from stories.genres import GenreConfigError, GenreRegistry
from stories.message_book import MessageBook
from stories.service import StoryService

if TYPE_CHECKING:
    from bot.client import DiscordApp

log = logging.getLogger("storybot")


def make_pool(
    settings: Settings,
    model_dir: Path | None = None,
    *,
    on_step: Callable[[int], None] | None = None,
) -> GenerationPool:
    """A pool for the configured backend on `model_dir` (default: MODEL_DIR);
    a local engine tells `on_step` the rows of each decoding step."""
    model_dir = model_dir or settings.model_dir

    def backend() -> Backend:
        if settings.backend == "openai":
            return _remote_backend(settings)
        options = {
            "max_batch_size": settings.max_batch_size,
            "threads": settings.generation_threads,
            "precision": settings.precision,
        }
        # Imported only when chosen: the ONNX backend needs no torch at run time,
        # which keeps hundreds of MB out of the process.
        if settings.backend == "onnx":
            from generation.onnx_backend import OnnxBackend

            return OnnxBackend(
                model_dir,
                allow_spinning=settings.onnx_allow_spinning,
                spin_us=settings.onnx_spin_us,
                small_batch_graph=settings.onnx_small_batch_graph,
                **options,  # type: ignore[arg-type]
            )
        from generation.torch_backend import TransformersBackend

        return TransformersBackend(model_dir, device=settings.device, **options)  # type: ignore[arg-type]

    remote = settings.backend == "openai"
    return GenerationPool(
        _reporting_steps(backend, on_step),
        max_queue=settings.queue_size,
        # A remote server batches for itself: the bound is what we keep in flight.
        max_batch=settings.openai_max_concurrency if remote else settings.max_batch_size,
        default_timeout_s=settings.generation_timeout_s,
        max_new_tokens_limit=settings.max_new_tokens_limit,
    )


def _reporting_steps(
    factory: Callable[[], Backend], on_step: Callable[[int], None] | None
) -> Callable[[], Backend]:
    if on_step is None:
        return factory

    def made() -> Backend:
        backend = factory()
        if hasattr(backend, "on_step"):  # a local engine (generation.decode_loop.LocalBackend)
            backend.on_step = on_step
        return backend

    return made


def _remote_backend(settings: Settings) -> Backend:
    from generation.openai_backend import OpenAIBackend

    assert settings.openai_base_url is not None  # settings insist on it
    tokenizer = settings.openai_tokenizer or settings.model_dir / "tokenizer.json"
    key = settings.openai_api_key
    return OpenAIBackend(
        settings.openai_base_url,
        api_key=key.get_secret_value() if key else None,
        model=settings.openai_model,
        max_concurrency=settings.openai_max_concurrency,
        context_size=settings.openai_context_size,
        tokenizer=tokenizer if tokenizer.is_file() else None,
        sampling_fields=settings.openai_sampling_fields,
        connect_timeout_s=settings.openai_connect_timeout_s,
        read_timeout_s=settings.openai_read_timeout_s,
        retries=settings.openai_retries,
    )


def make_model_pools(
    settings: Settings,
    default: GenerationPool,
    genres: GenreRegistry,
    *,
    on_step: Callable[[int], None] | None = None,
) -> ModelPools | None:
    """Pools for genre models (fine-tuned by `python -m app.finetune`), or
    None when no genre has a model of its own."""
    with_models = [genre for genre in genres if genre.model is not None]
    if not with_models:
        return None
    if settings.backend == "openai":
        log.warning(
            "BACKEND=openai: genre models (%s) are served by the remote model",
            ", ".join(genre.key for genre in with_models),
        )
        return None
    for genre in with_models:
        if genre.model is not None and not (genre.model / "config.json").is_file():
            log.warning("genre %s: model folder %s not found yet", genre.key, genre.model)

    def estimate(model_dir: Path) -> float:
        return model_memory_mb(
            model_dir,
            backend=settings.backend,
            precision=settings.precision,
            max_batch=settings.max_batch_size,
            small_batch_graph=settings.onnx_small_batch_graph,
        )

    return ModelPools(
        default,
        lambda model_dir: make_pool(settings, model_dir, on_step=on_step),
        budget_mb=settings.model_memory_budget_mb,
        estimate_mb=estimate,
        default_mb=estimate(settings.model_dir),
    )


async def start_http(
    service: StoryService, settings: Settings, metrics: Metrics | None = None
) -> web.AppRunner:
    """The HTTP interface; with `metrics`, it counts its requests and serves
    GET /metrics (unless METRICS_PORT moves that to a port of its own)."""
    quiet_protocol_errors()
    app = create_app(
        service,
        api_key=settings.http_api_key.get_secret_value() if settings.http_api_key else None,
        max_body_bytes=settings.http_max_body_bytes,
        cors_origins=settings.cors_origins,
        allowed_hosts=settings.allowed_hosts,
        read_timeout_s=settings.http_read_timeout_s,
        public_base_url=settings.share_base_url,
        observer=metrics,
        metrics=metrics if settings.metrics_port is None else None,
        access_log=settings.http_access_log,
    )
    # Every request still open at shutdown has its answer by then (the pool fails
    # what waits): a second is plenty, not aiohttp's default of a minute.
    # keepalive_timeout also closes a connection whose request headers have not
    # all arrived by then (a slowloris client); the app bounds the body itself.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        keepalive_timeout=settings.http_read_timeout_s,
    )
    await runner.setup()
    site = LimitedSite(
        runner,
        settings.http_host,
        settings.http_port,
        max_connections=settings.http_max_connections,
    )
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        if error.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {settings.http_port} on {settings.http_host} is already in use: "
                "stop the other server or set HTTP_PORT"
            ) from None
        raise StartupError(
            f"cannot listen on {settings.http_host}:{settings.http_port}: {error}"
        ) from None
    return runner


async def start_metrics_port(metrics: Metrics, settings: Settings) -> web.AppRunner:
    """GET /metrics alone on 127.0.0.1:METRICS_PORT."""
    runner = web.AppRunner(
        metrics_app(metrics, metrics, access_log=settings.http_access_log),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        keepalive_timeout=settings.http_read_timeout_s,
    )
    await runner.setup()
    site = LimitedSite(runner, "127.0.0.1", settings.metrics_port or 0, max_connections=64)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise StartupError(
            f"cannot serve metrics on 127.0.0.1:{settings.metrics_port}: {error} "
            "(set METRICS_PORT to a free port, or leave it empty)"
        ) from None
    return runner


def bound_addresses(runner: web.AppRunner) -> list[str]:
    return [f"http://{addr[0]}:{addr[1]}" for addr in runner.addresses if isinstance(addr, tuple)]


class Front(Protocol):
    """A front-end that shows runs somewhere (the Discord bot)."""

    async def settle(self, within: float) -> None: ...

    async def close(self) -> None: ...


async def shut_down(
    service: StoryService,
    pools: list[GenerationPool | ModelPools],
    *,
    grace_s: float,
    runner: web.AppRunner | None = None,
    front: Front | None = None,
) -> None:
    """Stop in an order that loses nothing: stop taking work; fail what waits at
    once (HTTP callers get 503 with Retry-After, Discord messages "interrupted"
    with Retry); let running parts finish within `grace_s`; store every outcome;
    post and edit the channel messages while the Discord session is still open;
    only then close the session. Returns within about `grace_s` + 2 seconds;
    what could not be shown is left recorded for the next start to fix."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    if runner is not None:
        for site in list(runner.sites):  # no new connections; open ones get answers
            await site.stop()
    service.stop_accepting()
    await asyncio.gather(*(pool.aclose(grace_s) for pool in pools))
    await service.wait_idle(within=max(0.5, deadline + 0.5 - loop.time()))
    if front is not None:
        await front.settle(within=max(0.5, deadline + 1.0 - loop.time()))
    if runner is not None:
        await runner.cleanup()
    if front is not None:
        await front.close()


async def run(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    started: Callable[[web.AppRunner], None] | None = None,
) -> None:
    """Serve until `stop` is set (or a signal arrives); then shut down cleanly."""
    stop = stop or asyncio.Event()
    genres = GenreRegistry.load(settings.genres_path)
    if settings.backend != "openai":  # a remote engine holds its own model
        check_model_dir(settings.model_dir)
    where = settings.database
    if isinstance(where, Path):
        _check_database_path(where)
    # Not global: a test (or a second storybot in one process) has its own.
    metrics = Metrics(min_render_interval_s=1.0) if settings.metrics_enabled else None
    on_step = metrics.on_step if metrics is not None else None
    async with await Store.open(
        where, instance=settings.instance_id, pool_size=settings.database_pool_size
    ) as store:
        log.info(
            "stories in %s (%s), instance %s",
            store.description,
            store.dialect,
            store.instance,
        )
        if metrics is not None:
            store.on_write = metrics.on_write
        pool = make_pool(settings, on_step=on_step)
        await pool.start()  # loads the model now, not at the first request
        # Genre models load on demand.
        models = make_model_pools(settings, pool, genres, on_step=on_step)
        if metrics is not None:
            metrics.watch(pool, models)
            metrics.describe(backend=settings.backend, precision=settings.precision)
        service = StoryService(
            store,
            pool,
            genres,
            user_max_active=settings.user_max_active,
            user_cooldown_s=settings.user_cooldown_s,
            models=models,
            observer=metrics,
        )
        interrupted = await service.recover_interrupted()
        runner: web.AppRunner | None = None
        metrics_runner: web.AppRunner | None = None
        discord_app = None
        try:
            if settings.http_enabled:
                runner = await start_http(service, settings, metrics)
            if metrics is not None and settings.metrics_port is not None:
                metrics_runner = await start_metrics_port(metrics, settings)
                log.info("metrics on %s/metrics", bound_addresses(metrics_runner)[0])
            log.info(
                "%s (model %s, backend %s)",
                f"HTTP interface on {', '.join(bound_addresses(runner))}"
                if runner is not None
                else "no HTTP interface here (HTTP_ENABLED=false)",
                pool.backend.model_id if pool.backend else "?",
                pool.backend.name if pool.backend else "?",
            )
            if (
                runner is not None
                and settings.public_base_url is None
                and settings.http_host in ("0.0.0.0", "::")
            ):
                log.warning(
                    "share links start with %s, which nobody elsewhere can open: "
                    "set PUBLIC_BASE_URL to where people reach this server",
                    settings.share_base_url,
                )
            if settings.discord_token is None:
                log.info("no DISCORD_TOKEN set: serving the HTTP interface only")
            else:
                discord_app = _discord_app(service, store, settings, metrics)
                discord_app.start().add_done_callback(lambda _: stop.set())
            if interrupted:
                log.info("%d interrupted parts can be retried", len(interrupted))
            if started is not None and runner is not None:
                started(runner)
            await stop.wait()
            log.info("shutting down")
        finally:
            await shut_down(
                service,
                [pool] + ([models] if models is not None else []),
                grace_s=settings.shutdown_grace_s,
                runner=runner,
                front=discord_app,
            )
            if metrics_runner is not None:
                await metrics_runner.cleanup()
    log.info("stopped cleanly")
    if discord_app is not None:
        discord_app.raise_failure()


def _discord_app(
    service: StoryService, store: Store, settings: Settings, metrics: Metrics | None = None
) -> DiscordApp:
    from bot.client import DiscordApp, StoryBot  # discord.py only when there is a token

    assert settings.discord_token is not None
    bot = StoryBot(
        service,
        MessageBook(store),
        dev_guild_id=settings.discord_dev_guild_id,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        notice_window_s=max(10.0, settings.user_cooldown_s),
        public_base_url=settings.share_base_url,
        observer=metrics,
        shard_count=settings.shard_count,
        shard_ids=settings.shards,
        requests_per_s=settings.discord_requests_per_s,
    )
    return DiscordApp(bot, settings.discord_token.get_secret_value())


def _check_database_path(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise StartupError(f"DATABASE_PATH {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK) and not path.exists():
        raise StartupError(f"DATABASE_PATH {path}: folder {probe} is not writable")


async def _serve_until_signal(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> int:
    from bot.client import DiscordLoginError

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, fmt=settings.log_format, secrets=settings.secrets)
    for line in settings.deprecations:
        log.warning("%s", line)
    try:
        asyncio.run(_serve_until_signal(settings))
    except (StartupError, ModelLoadError, StorageError, GenreConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DiscordLoginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0
