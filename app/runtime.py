"""The composition root: settings -> storage, pool, stories -> HTTP and Discord.

`python -m bot` runs `main()`. Nothing heavy happens at import time: the model
is loaded by the pool's worker when `run()` starts, storage is opened in an
`async with`, and everything is closed in reverse order on SIGINT or SIGTERM.
Start-up problems end the process with one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from api.app import create_app
from app.errors import StartupError
from app.settings import Settings, SettingsError, load_settings
from generation.backend import Backend
from generation.engines import ModelPools, model_memory_mb
from generation.errors import ModelLoadError
from generation.modelfiles import check_model_dir
from generation.pool import GenerationPool
from storage.errors import StorageError
from storage.store import Store
from stories.genres import GenreConfigError, GenreRegistry
from stories.service import StoryService

log = logging.getLogger("storybot")

SHUTDOWN_GRACE_S = 8.0  # Docker waits 10 s after SIGTERM before SIGKILL


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # discord.py logs the gateway URL and session at INFO: fine; tokens never.
    logging.getLogger("discord.http").setLevel(max(logging.INFO, logging.getLevelName(level)))


def make_pool(settings: Settings, model_dir: Path | None = None) -> GenerationPool:
    """A pool for the configured backend on `model_dir` (default: MODEL_DIR)."""
    model_dir = model_dir or settings.model_dir

    def backend() -> Backend:
        if settings.backend == "openai":
            return _remote_backend(settings)
        options = {
            "max_batch_size": settings.max_batch_size,
            "threads": settings.torch_threads,
            "precision": settings.precision,
        }
        # Imported only when chosen: the ONNX backend needs no torch at run time,
        # which keeps hundreds of MB out of the process.
        if settings.backend == "onnx":
            from generation.onnx_backend import OnnxBackend

            return OnnxBackend(
                model_dir,
                allow_spinning=settings.onnx_allow_spinning,
                **options,  # type: ignore[arg-type]
            )
        from generation.torch_backend import TransformersBackend

        return TransformersBackend(model_dir, device=settings.device, **options)  # type: ignore[arg-type]

    remote = settings.backend == "openai"
    return GenerationPool(
        backend,
        max_queue=settings.queue_size,
        # A remote server batches for itself: the bound is what we keep in flight.
        max_batch=settings.openai_max_concurrency if remote else settings.max_batch_size,
        default_timeout_s=settings.generation_timeout_s,
        max_new_tokens_limit=settings.max_new_tokens_limit,
    )


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
    settings: Settings, default: GenerationPool, genres: GenreRegistry
) -> ModelPools | None:
    """Pools for genre models (fine-tuned by `python -m generation.finetune`), or
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
        )

    return ModelPools(
        default,
        lambda model_dir: make_pool(settings, model_dir),
        budget_mb=settings.model_memory_budget_mb,
        estimate_mb=estimate,
        default_mb=estimate(settings.model_dir),
    )


async def start_http(service: StoryService, settings: Settings) -> web.AppRunner:
    app = create_app(
        service,
        api_key=settings.http_api_key.get_secret_value() if settings.http_api_key else None,
        max_body_bytes=settings.http_max_body_bytes,
        cors_origins=settings.cors_origins,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
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


def bound_addresses(runner: web.AppRunner) -> list[str]:
    return [f"http://{addr[0]}:{addr[1]}" for addr in runner.addresses if isinstance(addr, tuple)]


DiscordStarter = Callable[[StoryService, Settings, asyncio.Event], Awaitable[None]]


async def run(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    started: Callable[[web.AppRunner], None] | None = None,
    discord: DiscordStarter | None = None,
) -> None:
    """Serve until `stop` is set (or a signal arrives); then shut down cleanly."""
    stop = stop or asyncio.Event()
    genres = GenreRegistry.load(settings.genres_path)
    if settings.backend != "openai":  # a remote engine holds its own model
        check_model_dir(settings.model_dir)
    _check_database_path(settings.database_path)
    async with await Store.open(settings.database_path) as store:
        pool = make_pool(settings)
        await pool.start()  # loads the model now, not at the first request
        models = make_model_pools(settings, pool, genres)  # genre models load on demand
        service = StoryService(
            store,
            pool,
            genres,
            user_max_active=settings.user_max_active,
            user_cooldown_s=settings.user_cooldown_s,
            models=models,
        )
        interrupted = await service.recover_interrupted()
        runner: web.AppRunner | None = None
        discord_task: asyncio.Task[None] | None = None
        try:
            runner = await start_http(service, settings)
            log.info(
                "HTTP interface on %s (model %s, backend %s)",
                ", ".join(bound_addresses(runner)),
                pool.backend.model_id if pool.backend else "?",
                pool.backend.name if pool.backend else "?",
            )
            if settings.discord_token is None:
                log.info("no DISCORD_TOKEN set: serving the HTTP interface only")
            else:
                starter = discord or _default_discord
                discord_task = asyncio.create_task(starter(service, settings, stop), name="discord")
                discord_task.add_done_callback(lambda _: stop.set())
            if interrupted:
                log.info("%d interrupted stories can be retried", len(interrupted))
            if started is not None:
                started(runner)
            await stop.wait()
            log.info("shutting down")
        finally:
            if runner is not None:
                await runner.cleanup()  # stop taking new HTTP requests first
            if discord_task is not None:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(discord_task, SHUTDOWN_GRACE_S)
            # Finish or fail what is in flight, on every loaded model at once.
            closing = [pool.aclose(drain_timeout=SHUTDOWN_GRACE_S)]
            if models is not None:
                closing.append(models.aclose(drain_timeout=SHUTDOWN_GRACE_S))
            await asyncio.gather(*closing)
            await service.wait_idle()  # every outcome stored (done or interrupted)
    log.info("stopped cleanly")
    if discord_task is not None and discord_task.done() and not discord_task.cancelled():
        error = discord_task.exception()
        if error is not None:
            raise error


async def _default_discord(service: StoryService, settings: Settings, stop: asyncio.Event) -> None:
    from bot.client import run_bot

    await run_bot(service, settings, stop)


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
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve_until_signal(settings))
    except (StartupError, ModelLoadError, StorageError, GenreConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0
