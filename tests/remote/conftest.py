"""Remote engines for the openai backend's tests.

- `transformers serve`: a real OpenAI-compatible server (FastAPI, uvicorn) on
  127.0.0.1 with the tiny model, in its own process.
- `StandIn`: a small aiohttp server for what a real one will not do on cue:
  429 and 5xx with Retry-After, a stream cut in the middle, HTML, JSON without
  choices, a refused key, silence. It records every request. Given an
  `Engine`, it answers that engine's own paths like it, and notes which fields
  of each completion request that engine would ignore.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from generation.openai_backend import OpenAIBackend
from generation.pool import GenerationPool
from tests.conftest import free_port


class Serve:
    """`transformers serve MODEL` on loopback, stopped when the test is done."""

    def __init__(self, model_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
        command = [
            *[sys.executable, "-c", "from transformers.cli.transformers import main; main()"],
            *["serve", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port)],
            # Without --continuous-batching: its paged path drops the repetition
            # penalty (it says so) and stalls on a generation_config on CPU; the
            # plain path runs concurrent requests side by side and honours them all.
            *["--device", "cpu", "--log-level", "error"],
        ]
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"transformers serve exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)  # polling a child process's start-up
        raise AssertionError(f"transformers serve did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def transformers_serve(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    server = Serve(tiny_model_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_transformers_serve(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Serve]:
    """A server of the test's own, for tests that stop it."""
    server = Serve(tiny_model_dir, tmp_path / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


# ---------------------------------------------------------------- engines
# The fields each engine's /v1/completions reads, and what it does with others,
# from each engine's own documents and sources (written down here, separately
# from generation/dialects.py, so a wrong name there fails these tests).


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# OpenAI's legacy Completions API (platform.openai.com/docs/api-reference/completions).
OPENAI_FIELDS = _names(
    "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n "
    "presence_penalty seed stop stream stream_options suffix temperature top_p user"
)
# llama.cpp tools/server/README.md, "POST /completion" options (which
# /v1/completions reads too: "llama.cpp /completion-specific features such as
# mirostat are supported"), and server-task.cpp params_from_json_cmpl, which
# reads each with a default: any other field is ignored.
LLAMACPP_FIELDS = OPENAI_FIELDS | _names(
    "n_predict top_k min_p typical_p dynatemp_range dynatemp_exponent repeat_penalty "
    "repeat_last_n dry_multiplier dry_base dry_allowed_length dry_penalty_last_n "
    "dry_sequence_breakers xtc_probability xtc_threshold mirostat mirostat_tau mirostat_eta "
    "n_keep n_probs min_keep ignore_eos cache_prompt samplers grammar json_schema"
)
# vLLM vllm/entrypoints/openai/protocol.py CompletionRequest, its sampling and
# extra parameters; OpenAIBaseModel allows other fields and only logs them.
VLLM_FIELDS = OPENAI_FIELDS | _names(
    "use_beam_search top_k min_p repetition_penalty length_penalty stop_token_ids "
    "include_stop_str_in_output ignore_eos min_tokens skip_special_tokens "
    "spaces_between_special_tokens truncate_prompt_tokens allowed_token_ids prompt_logprobs "
    "add_special_tokens response_format"
)
# text-generation-inference router/src/lib.rs CompletionRequest (serde, which
# ignores unknown fields unless told otherwise; it is not).
TGI_FIELDS = _names(
    "model prompt max_tokens temperature top_p stream seed suffix repetition_penalty "
    "frequency_penalty stop"
)


def _llamacpp_refuses(body: dict[str, Any]) -> str | None:
    """Newer llama-server (tools/server/server-schema.cpp, set_hard_limits) refuses
    these below 0, where older ones took -1 for the whole context."""
    for name in ("repeat_last_n", "dry_penalty_last_n", "dry_allowed_length", "min_keep"):
        if name in body and body[name] < 0:
            return f"Field '{name}': Value must be between 0 <= value <= 2147483647"
    if "dry_sequence_breakers" in body and not body["dry_sequence_breakers"]:
        return "Error: dry_sequence_breakers must be a non-empty array of strings"
    return None


def _tgi_refuses(body: dict[str, Any]) -> str | None:
    """router/src/validation.rs: `top_p` must be > 0.0 and < 1.0."""
    if "top_p" in body and not 0.0 < body["top_p"] < 1.0:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    return None


@dataclass(frozen=True)
class Engine:
    name: str
    fields: frozenset[str]
    path: str | None = None  # the GET at the server root only this engine answers
    answer: dict[str, Any] = field(default_factory=dict)
    owned_by: str = "storybot-tests"
    refuses_unknown: bool = False  # 422 for a field it does not know, instead of ignoring it
    refuses: Callable[[dict[str, Any]], str | None] = lambda body: None  # a value it refuses


ENGINES = {
    # tools/server/README.md "GET /props" (trimmed); /v1/models owned_by "llamacpp".
    "llamacpp": Engine(
        "llama.cpp",
        LLAMACPP_FIELDS,
        "/props",
        {
            "default_generation_settings": {"id": 0, "n_ctx": 512, "params": {"top_k": 40}},
            "total_slots": 2,
            "model_path": "models/gpt2.gguf",
            "build_info": "b1-0000000",
        },
        owned_by="llamacpp",
        refuses=_llamacpp_refuses,
    ),
    # vllm/entrypoints/openai/api_server.py show_version; ModelCard owned_by "vllm".
    "vllm": Engine("vLLM", VLLM_FIELDS, "/version", {"version": "0.11.0"}, owned_by="vllm"),
    # router/src/lib.rs Info (trimmed); /v1/models owned_by is the model id.
    "tgi": Engine(
        "text-generation-inference",
        TGI_FIELDS,
        "/info",
        {
            "model_id": "gpt2",
            "max_input_tokens": 767,
            "max_total_tokens": 768,
            "router": "text-generation-router",
            "version": "3.3.6",
        },
        owned_by="gpt2",
        refuses=_tgi_refuses,
    ),
    # transformers cli/serving: refuses unknown fields with 422 ("Unexpected
    # fields in the request") and takes a JSON generation_config.
    "transformers": Engine(
        "transformers serve",
        OPENAI_FIELDS | {"generation_config"},
        refuses_unknown=True,
        owned_by="",
    ),
}


@dataclass
class Seen:
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    ignored: set[str] = field(default_factory=set)  # fields the engine would not read


@dataclass
class StandIn:
    """Answers /v1/models and /v1/completions from a script of behaviours.

    `script` is consumed one entry per completion request (after start-up's
    probe, which `probe` answers); when it runs out, `default` is used:
      ("ok", n)            stream n chunks then finish
      ("status", code, retry_after | None)
      ("cut", n)           stream n chunks, then drop the connection
      ("silent",)          accept, then never answer
      ("slow",)            one chunk, then nothing (a stream to cancel)
      ("held", n)          nothing until `release()`, then stream n chunks
      ("raw", status, content_type, text)
    """

    models: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "gpt2"}])
    engine: Engine | None = None
    probe: tuple[Any, ...] = ("json",)
    script: list[tuple[Any, ...]] = field(default_factory=list)
    default: tuple[Any, ...] = ("ok", 5)
    models_answer: tuple[Any, ...] | None = None
    reject_fields: set[str] = field(default_factory=set)
    api_key: str | None = None
    seen: list[Seen] = field(default_factory=list)
    disconnected: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let every "held", "slow" and "silent" request go on."""
        self._release.set()

    @property
    def completions(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/completions") and s.body.get("stream")]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._complete)
        if self.engine is not None:
            for entry in self.models:
                entry.setdefault("owned_by", self.engine.owned_by)
            if self.engine.path is not None:
                app.router.add_get(self.engine.path, self._engine_answer)
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _refused_key(self, request: web.Request) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Invalid API key"}}, status=401)
        return None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen("GET", request.path, {}, dict(request.headers), time.monotonic()))
        refused = self._refused_key(request)
        if refused is not None:
            return refused
        if self.models_answer is not None:
            return await self._answer(request, self.models_answer)
        return web.json_response({"object": "list", "data": self.models})

    async def _engine_answer(self, request: web.Request) -> web.StreamResponse:
        assert self.engine is not None
        self.seen.append(Seen("GET", request.path, {}, dict(request.headers), time.monotonic()))
        return web.json_response(self.engine.answer)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ignored = set(body) - self.engine.fields if self.engine is not None else set()
        seen = Seen("POST", request.path, body, dict(request.headers), time.monotonic(), ignored)
        self.seen.append(seen)
        refused = self._refused_key(request)
        if refused is not None:
            return refused
        unexpected = set(body) & self.reject_fields
        if self.engine is not None and self.engine.refuses_unknown:
            unexpected |= ignored
        if unexpected:
            return web.json_response({"detail": f"Unexpected fields: {unexpected}"}, status=422)
        invalid = self.engine.refuses(body) if self.engine is not None else None
        if invalid:
            return web.json_response({"error": {"message": invalid}}, status=400)
        if body.get("model") not in {m["id"] for m in self.models}:
            return web.json_response({"error": {"message": "model not found"}}, status=404)
        if not body.get("stream"):
            return await self._answer(request, self.probe)
        step = self.script.pop(0) if self.script else self.default
        return await self._answer(request, step)

    async def _answer(self, request: web.Request, step: tuple[Any, ...]) -> web.StreamResponse:
        kind = step[0]
        if kind == "json":
            return web.json_response(
                {"choices": [{"text": " Once", "index": 0, "finish_reason": "length"}]}
            )
        if kind == "status":
            headers = {"Retry-After": str(step[2])} if step[2] is not None else {}
            return web.json_response(
                {"error": {"message": "busy"}}, status=step[1], headers=headers
            )
        if kind == "raw":
            return web.Response(status=step[1], content_type=step[2], text=step[3])
        if kind == "silent":
            await self._release.wait()
            return web.Response(status=503)
        if kind == "held":  # wait for the test's word, then answer as "ok"
            await self._release.wait()
            step = ("ok", step[1])
        if kind == "slow":  # one chunk, then nothing until released or closed
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(_chunk(" Slowly."))
            try:
                await self._release.wait()
            except asyncio.CancelledError:
                self.disconnected += 1
                raise
            return response
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(step[1]):
                await response.write(_chunk(f" word{i}."))
                await asyncio.sleep(0)  # let the client read as it would from a real server
            if kind == "cut":
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(_chunk("", "length", usage=step[1] + 1))
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected += 1
            raise
        return response


def _chunk(text: str, finish: str | None = None, usage: int | None = None) -> bytes:
    choice = {"text": text, "index": 0, "finish_reason": finish}
    event: dict[str, Any] = {"choices": [choice]}
    if usage is not None:  # the server's own token count; a chunk is not always one token
        event["usage"] = {"completion_tokens": usage}
    return f"data: {json.dumps(event)}\n\n".encode()


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    yield server
    await server.stop()


def remote_pool(url: str, **options: Any) -> GenerationPool:
    """A pool over the openai backend at `url`, with short retries and timeouts."""
    settings: dict[str, Any] = {
        "retries": 2,
        "backoff_s": 0.01,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 10.0,
    } | options

    def backend() -> OpenAIBackend:
        return OpenAIBackend(url, **settings)

    return GenerationPool(backend, max_batch=settings.get("max_concurrency", 32))
