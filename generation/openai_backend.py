"""A remote backend: generation on a serving engine over OpenAI's `/v1/completions`.

When one machine is not enough, GPT-2 moves to a real serving engine on GPUs
(vLLM, text-generation-inference, llama.cpp's server, `transformers serve`).
They all speak the legacy Completions API with a raw prompt, the one that fits
GPT-2, which has no chat template.

It sits behind the same pool as the local engines, so queue positions, Busy
answers, cancellation and time limits are the pool's. Here:

- The pool's worker thread runs this backend's own event loop. Every admitted
  job becomes one streaming request (`"stream": true`) on one aiohttp
  connection pool; up to `max_batch_size` are in flight at once and the server
  batches them. A job queued or cancelled while requests run wakes the loop.
- Sampling: temperature, top_p, seed, max_tokens and stop are standard fields.
  top_k, the repetition penalty, the n-gram ban and the minimum length are
  not, and each engine names them its own way (`generation.dialects`). At
  start-up the engine is recognised by a path only it answers (llama.cpp
  `/props`, TGI `/info`, vLLM `/version`), or else by a one-token probe
  (transformers serve takes a `generation_config`); one warning names the
  controls it cannot honour.
- Faults: a refused connection, a timeout, 429 and 5xx are retried with capped
  exponential backoff (honouring Retry-After) while no text has been shown; a
  stream cut after text was shown is not retried, it ends in a clear error.
- Prompts are fitted to the context with the model's tokenizer when a
  `tokenizer.json` is at hand (the `tokenizers` library, no torch); without
  one, with a byte count, a bound that is safe but keeps less of a long story.

Imports nothing heavy: the bot runs on this backend without torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from generation.dialects import DETECTABLE, PROBED, Dialect, SamplingFields, dialect
from generation.errors import (
    EngineRefused,
    EngineStartError,
    EngineUnavailable,
    GenerationError,
)
from generation.job import Job
from generation.messages import N_
from generation.text import ENDOFTEXT, TextStream
from generation.types import FinishReason, GenerationParams

log = logging.getLogger(__name__)

# Statuses worth another try: the server is busy, restarting or overloaded.
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Refused(Exception):
    """A definite answer from the server that another try would not change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


@dataclass
class Health:
    reachable: bool
    error: str | None


class _Tokens:
    """Counts and cuts prompts: the model's tokenizer, or UTF-8 bytes as a bound."""

    def __init__(self, path: Path | None) -> None:
        self.exact = False
        self._tokenizer: Any = None
        if path is not None and path.is_file():
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
            self.exact = True

    def encode(self, text: str) -> list[int]:
        if self._tokenizer is None:
            return list(text.encode("utf-8"))
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        if self._tokenizer is None:
            return bytes(ids).decode("utf-8", errors="ignore")
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        return text


class OpenAIBackend:
    """Generates on a remote OpenAI-compatible server. Built on the worker thread."""

    name = "openai"
    eos_token_id = None  # the server stops at end of text itself

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        max_concurrency: int = 32,
        context_size: int = 1024,
        tokenizer: Path | None = None,
        sampling_fields: SamplingFields = "auto",
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.max_batch_size = max_concurrency
        self.context_size = context_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._connect_timeout_s = connect_timeout_s
        self._tokens = _Tokens(tokenizer)
        if not self._tokens.exact:
            log.warning(
                "no tokenizer.json for the remote model: long stories are cut by bytes, "
                "keeping less of them (set OPENAI_TOKENIZER)"
            )
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self.peak_in_flight = 0
        self.retried = 0  # requests sent again after a failure (for metrics)
        self.failed = 0  # stories the engine failed, after any retries (for metrics)
        # `auto` until start-up has found the engine; then the dialect's key.
        self.sampling_fields: str = sampling_fields
        self._dialect: Dialect = dialect("none" if sampling_fields == "auto" else sampling_fields)
        self.engine = self._dialect.engine
        self._owners: set[str] = set()  # the owned_by of each listed model
        try:
            self._session = self._loop.run_until_complete(self._open())
            self.model_id = self._loop.run_until_complete(self._check_server(model))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ Backend
    def encode(self, text: str) -> list[int]:
        return self._tokens.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokens.decode(ids)

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        self._loop.run_until_complete(self._serve(jobs, admit))

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        session = getattr(self, "_session", None)
        if session is not None:
            self._loop.run_until_complete(session.close())
        self._loop.close()

    # ------------------------------------------------------------------ serving
    async def _open(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return aiohttp.ClientSession(
            headers=headers,
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self.max_batch_size),
        )

    async def _serve(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        tasks: dict[asyncio.Future[Any], Job] = {}

        def launch(batch: list[Job]) -> None:
            for job in batch:
                # In a copy of the asker's context: its log lines carry the ids.
                tasks[asyncio.create_task(self._run(job), context=job.context.copy())] = job

        launch(jobs)
        while tasks:
            self._wakeup.clear()
            room = self.max_batch_size - len(tasks)
            if room > 0:
                launch(admit(room))
            self.peak_in_flight = max(self.peak_in_flight, len(tasks))
            for task, job in tasks.items():
                if job.cancel_requested or job.close_requested:
                    task.cancel()  # closes the stream: the server stops generating
            waker = asyncio.ensure_future(self._wakeup.wait())
            done, _ = await asyncio.wait([*tasks, waker], return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            for task in done:
                tasks.pop(task, None)  # None: the waker

    async def _run(self, job: Job) -> None:
        job.start()
        job.decoder = TextStream()
        remaining = job.deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await self._complete(job)
        except asyncio.CancelledError:
            job.check_stop()  # cancelled by its caller or by shutdown
            if not job.finished:
                raise
        except TimeoutError:
            job.check_stop()  # past the deadline: keeps the text written so far
        except Exception:
            log.exception("remote generation failed")
            self._fail(job, EngineUnavailable())
        if not job.finished:
            self._fail(job, EngineUnavailable())

    def _fail(self, job: Job, error: GenerationError) -> None:
        """End `job` with `error`, counted first: once it fails, its caller (and a
        scrape of the metrics right after) may already see it."""
        self.failed += 1
        job.fail(error)

    async def _complete(self, job: Job) -> None:
        """Stream one completion into `job`, retrying while nothing was shown."""
        body = self._body(job)
        attempt = 0
        while True:
            try:
                await self._stream(job, body)
                return
            except _Refused as refused:
                log.error("the engine refused a request: %s", refused)
                self._fail(job, EngineRefused())
                return
            except ValueError as error:  # an answer that is not the Completions API
                log.error("the engine's answer made no sense: %s", error)
                self._fail(job, EngineRefused())
                return
            except (_Retryable, aiohttp.ClientError, TimeoutError) as error:
                reason = _describe(error)
                if job.new_tokens:
                    log.warning(
                        "the engine's stream broke after %d tokens: %s", job.new_tokens, reason
                    )
                    self._fail(
                        job,
                        EngineUnavailable(
                            N_(
                                "The story engine stopped in the middle of the story; "
                                "please try again."
                            )
                        ),
                    )
                    return
                attempt += 1
                delay = self._backoff(attempt, getattr(error, "retry_after", None))
                if attempt > self.retries or time.monotonic() + delay >= job.deadline:
                    log.warning("the engine failed %d times: %s", attempt, reason)
                    self._fail(job, EngineUnavailable(retry_after=max(delay, 5.0)))
                    return
                log.info("engine: %s; retry %d in %.1f s", reason, attempt, delay)
                self.retried += 1
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)  # jitter: retries do not march together
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap_s))
        return delay

    async def _stream(self, job: Job, body: dict[str, Any]) -> None:
        async with self._session.post(f"{self.base_url}/completions", json=body) as response:
            await _raise_for_status(response)
            if not response.content_type.startswith("text/event-stream"):
                # A server that ignored "stream": the whole answer at once.
                payload = await _read_json(response)
                choice = _first_choice(payload)
                job.accept_text(str(choice.get("text") or ""))
                _count_tokens(job, payload)
                job.end(_finish_reason(choice.get("finish_reason")))
                return
            async for data in _sse_data(response):
                if data == "[DONE]":
                    break
                event = _parse_event(data)
                choice = _first_choice(event)
                text = str(choice.get("text") or "")
                if text:
                    job.accept_text(text)
                if job.finished:
                    return  # length reached, or cancelled: leaving closes the stream
                if choice.get("finish_reason"):
                    _count_tokens(job, event)
                    job.end(_finish_reason(choice["finish_reason"]))
                    return
            if not job.finished:
                raise _Retryable("the stream ended without a finish reason")

    # ---------------------------------------------------------------- requests
    def _body(self, job: Job, *, stream: bool = True) -> dict[str, Any]:
        params = job.params
        body: dict[str, Any] = {
            "prompt": self.decode(job.prompt_ids),
            "max_tokens": params.max_new_tokens,
            "stream": stream,
            "stop": [ENDOFTEXT],
        }
        if self.model_id:
            body["model"] = self.model_id
        body.update(self._sampling(params))
        return body

    def _sampling(self, params: GenerationParams) -> dict[str, Any]:
        return self._dialect.fields(params, self.context_size)

    # ----------------------------------------------------------------- start-up
    async def _check_server(self, wanted: str | None) -> str:
        """One check at start-up: reachable, speaks the API, serves the model,
        and how it takes the sampling fields. Raises `EngineStartError`."""
        where = f"OPENAI_BASE_URL {self.base_url}"
        try:
            models = await self._get_models()
        except _Refused as refused:
            raise EngineStartError(f"{where}: {_start_hint(refused)}") from None
        except (_Retryable, aiohttp.ClientError, TimeoutError) as error:
            raise EngineStartError(f"{where} is unreachable: {_describe(error)}") from None
        except ValueError as error:
            raise EngineStartError(f"{where}: {error}") from None
        if wanted is not None and models and wanted not in models:
            raise EngineStartError(
                f"OPENAI_MODEL={wanted} is not served at {self.base_url}; "
                f"it serves: {', '.join(models)}"
            )
        if wanted is None:
            if len(models) != 1:
                raise EngineStartError(
                    f"{where} serves {len(models)} models ({', '.join(models) or 'none listed'}): "
                    "set OPENAI_MODEL to one of them"
                )
            wanted = models[0]
        self.model_id = wanted
        found_by = ""
        if self.sampling_fields == "auto":
            detected = await self._detect()
            if detected is not None:
                self._dialect, found_by = detected
                modes = [self._dialect.key]
            else:
                modes = PROBED  # an engine not in the table: ask it which way it takes them
        else:
            modes = [self._dialect.key]
        for mode in modes:
            self._dialect = dialect(mode)
            try:
                await self._probe()
            except _Refused as refused:
                if refused.status in (400, 422) and mode != modes[-1]:
                    continue  # this server does not take these fields: try the next way
                if refused.status in (400, 422) and mode != "none":
                    raise EngineStartError(
                        f"{where}: {self._dialect.engine} refused storybot's sampling fields "
                        f"({refused.status}: {refused.detail}); OPENAI_SAMPLING_FIELDS=none "
                        "sends none"
                    ) from None
                raise EngineStartError(f"{where}: {_start_hint(refused)}") from None
            except (_Retryable, aiohttp.ClientError, TimeoutError) as error:
                raise EngineStartError(f"{where} is unreachable: {_describe(error)}") from None
            except ValueError as error:
                raise EngineStartError(f"{where}: {error}") from None
            break
        self.sampling_fields, self.engine = self._dialect.key, self._dialect.engine
        how = f"; {self._dialect.approximated}" if self._dialect.approximated else ""
        log.info(
            "remote engine: %s%s at %s, model %s, sampling fields: %s%s",
            self.engine,
            f" (it answers {found_by})" if found_by else "",
            self.base_url,
            wanted,
            self.sampling_fields,
            how,
        )
        warning = _unhonoured_warning(self._dialect)
        if warning:
            log.warning("%s", warning)
        return wanted

    async def _detect(self) -> tuple[Dialect, str] | None:
        """The engine, by a path only it answers (or its /models owned_by), and how it was
        found; None when it is none of the engines in the table. Sets a context its
        answer reports."""
        root = _server_root(self.base_url)
        hinted = sorted(DETECTABLE, key=lambda d: d.owned_by not in self._owners)
        for candidate in hinted:
            assert candidate.detect_path is not None
            answer = await self._get_json_quietly(root + candidate.detect_path)
            if candidate.recognise(answer):
                context = candidate.context(answer)
                if context:
                    self.context_size = min(self.context_size, context)
                return candidate, candidate.detect_path
            if candidate.owned_by in self._owners:
                return candidate, f'/v1/models with owned_by "{candidate.owned_by}"'
        return None

    async def _get_json_quietly(self, url: str) -> Any:
        """A JSON answer, or None for anything else (404, HTML, silence): for detection."""
        timeout = aiohttp.ClientTimeout(total=min(10.0, self._connect_timeout_s + 5.0))
        try:
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    return None
                return json.loads(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _get_models(self) -> list[str]:
        async with self._session.get(f"{self.base_url}/models") as response:
            await _raise_for_status(response)
            payload = await _read_json(response)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise ValueError(
                "its /models answer has no model list: is this an OpenAI-compatible API?"
            )
        ids = [
            str(entry.get("id")) for entry in data if isinstance(entry, dict) and entry.get("id")
        ]
        owners = [entry.get("owned_by") for entry in data if isinstance(entry, dict)]
        self._owners = {str(owner) for owner in owners if owner}
        lengths = [entry.get("max_model_len") for entry in data if isinstance(entry, dict)]
        known = [n for n in lengths if isinstance(n, int) and n > 0]
        if known:
            self.context_size = min(self.context_size, *known)
        return ids

    async def _probe(self) -> None:
        params = GenerationParams(max_new_tokens=1, seed=0)
        body: dict[str, Any] = {
            "model": self.model_id,
            "prompt": "Once upon a time",
            "max_tokens": 1,
            "stream": False,
        }
        body.update(self._sampling(params))
        async with self._session.post(f"{self.base_url}/completions", json=body) as response:
            await _raise_for_status(response)
            _first_choice(await _read_json(response))

    # ------------------------------------------------------------------- health
    async def health(self) -> Health:
        """Whether the server answers now (for /readyz); call on any event loop."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        timeout = aiohttp.ClientTimeout(total=min(3.0, self._connect_timeout_s + 1))
        error: str | None = None
        try:
            async with (
                aiohttp.ClientSession(headers=headers, timeout=timeout) as session,
                session.get(f"{self.base_url}/models") as response,
            ):
                await _raise_for_status(response)
        except _Refused as refused:
            error = f"HTTP {refused.status}"
        except (_Retryable, aiohttp.ClientError, TimeoutError) as failure:
            error = _describe(failure)
        return Health(error is None, error)


# ------------------------------------------------------------------- protocol
async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status == 200:
        return
    detail = (await response.text())[:300].strip()
    if response.status in RETRYABLE_STATUS:
        raise _Retryable(f"HTTP {response.status}", _retry_after(response))
    raise _Refused(response.status, _error_message(detail))


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date, or nothing: our own backoff decides


def _error_message(detail: str) -> str:
    try:
        payload = json.loads(detail)
    except ValueError:
        return "an HTML page" if "<html" in detail.lower() else detail[:120]
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:200]
    return detail[:120]


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    try:
        return json.loads(text)
    except ValueError:
        kind = "HTML" if "<html" in text[:500].lower() else "something that is not JSON"
        raise ValueError(
            f"it answered with {kind}, not the OpenAI API: "
            "is OPENAI_BASE_URL the API root, like http://host:8000/v1?"
        ) from None


async def _sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream, one per event."""
    lines: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def _parse_event(data: str) -> Any:
    try:
        payload = json.loads(data)
    except ValueError:
        raise _Retryable("a stream event that is not JSON") from None
    if isinstance(payload, dict) and payload.get("error"):
        raise _Retryable(f"the engine reported an error: {_error_message(json.dumps(payload))}")
    return payload


def _first_choice(payload: Any) -> dict[str, Any]:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("its answer has no choices: is this an OpenAI-compatible /completions?")
    choice: dict[str, Any] = choices[0]
    return choice


def _count_tokens(job: Job, payload: Any) -> None:
    """The server's own count, when it sends one: a chunk is not always one token."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    count = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if isinstance(count, int) and count >= 0:
        job.remote_tokens = count


def _finish_reason(reason: object) -> FinishReason:
    return "length" if reason == "length" else "eos"


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or error.os_error})"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the connection was cut"
    return str(error) or type(error).__name__


def _server_root(base_url: str) -> str:
    """Where an engine's own paths (/props, /info, /version) live: the API root
    without its /v1."""
    return base_url.removesuffix("/v1")


def _unhonoured_warning(chosen: Dialect) -> str:
    if chosen.key == "extra":
        return (
            "top_k, repetition_penalty, no_repeat_ngram_size and min_tokens go under these common "
            "names, which an engine that does not know them ignores without a word: for llama.cpp, "
            "vLLM, text-generation-inference or transformers serve set OPENAI_SAMPLING_FIELDS to "
            "llamacpp, vllm, tgi or transformers"
        )
    if chosen.key == "none":
        return (
            f"the engine takes none of {', '.join(chosen.unhonoured)}: "
            "stories use temperature and top_p only"
        )
    if chosen.unhonoured:
        return (
            f"{chosen.engine} has no field for {', '.join(chosen.unhonoured)}: "
            "stories from it are written without them"
        )
    return ""


def _start_hint(refused: _Refused) -> str:
    if refused.status in (401, 403):
        return f"the server refused the key ({refused.status}): check OPENAI_API_KEY"
    if refused.status == 404:
        return (
            f"not found (404: {refused.detail}): is OPENAI_BASE_URL the API root, like "
            "http://host:8000/v1, and OPENAI_MODEL a model it serves?"
        )
    return f"the server refused a test completion ({refused.status}: {refused.detail})"
