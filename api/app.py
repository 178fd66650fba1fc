"""The HTTP interface: the old Flask service's `POST /` contract, and a small API.

    POST /                      {"input": "..."} -> {"output": input + continuation, ...}
                                "stream": true (or Accept: text/event-stream) -> SSE
    POST /stories/{id}/continue continue a stored story
    GET  /stories/{id}          the story as JSON;  GET /stories/{id}.md as Markdown
    POST /stories/{id}/share    a share link: a read-only web page of the story
    GET  /s/{token}             that page (HTML; needs no key, answers any Host)
    DELETE /s/{token}           revoke the link
    GET  /healthz  /readyz      liveness; readiness (model, database, queue)
    GET  /openapi.json          this description, kept true by a test
    GET  /metrics               Prometheus metrics, when the composition root serves them here

It runs in the bot's event loop on the same pool and storage. Stories made here
have no Discord author and the source `api`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from api import share_page, telemetry
from api.errors import ApiError, error_body, from_domain, json_errors
from api.openapi import spec
from stories import export
from stories.service import PartOutcome, Requester, Run, StoryOptions, StoryService
from stories.sharing import Sharing, share_url

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", StoryService)
API_KEY = web.AppKey("api_key", str)
CORS_KEY = web.AppKey("cors", list)
HOSTS_KEY = web.AppKey("allowed_hosts", frozenset)
READ_TIMEOUT_KEY = web.AppKey("read_timeout_s", float)
SHARING_KEY = web.AppKey("sharing", Sharing)
PUBLIC_URL_KEY = web.AppKey("public_base_url", str)
METRICS_KEY = web.AppKey("metrics", bool)  # whether GET /metrics is served here

# Host names a loopback server answers to by default: a page elsewhere that
# rebinds its own name to 127.0.0.1 sends its own name, and is refused (421).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

_API = Requester(user_id=None, source="api", age_restricted_ok=True)
_OPTIONAL = {
    "genre": (str,),
    "max_new_tokens": (int,),
    "temperature": (int, float),
    "top_k": (int,),
    "top_p": (int, float),
    "seed": (int,),
    "memory": (str,),
    "authors_note": (str,),
}
_PUBLIC = {"/healthz", "/openapi.json"}
# Probes (Docker, Kubernetes) send the address they dial as Host.
_ANY_HOST = {"/healthz", "/readyz"}
# A scraper dials an address too; but with no key, the Host check is what keeps
# a page that rebinds its name to 127.0.0.1 from reading the metrics.
_ANY_HOST_WITH_KEY = {"/metrics"}
# Share pages are for anyone with the link, wherever it is opened from: no key,
# any Host. Revoking one (DELETE) needs both; other methods get their 405.
_SHARE_PAGES = "/s/"


def _share_page(method: str, path: str) -> bool:
    return path.startswith(_SHARE_PAGES) and method != "DELETE"


def is_public(method: str, path: str) -> bool:
    """Whether a request needs no API key."""
    return path in _PUBLIC or _share_page(method, path)


def _any_host(method: str, path: str, keyed: bool) -> bool:
    return path in _ANY_HOST or (keyed and path in _ANY_HOST_WITH_KEY) or _share_page(method, path)


_JSON_TYPES = ("application/json",)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


async def _read_body(request: web.Request) -> bytes:
    """The whole body, within the read time limit; 400 for a body that cannot be
    decoded (a Content-Encoding that does not match), 408 when it is too slow."""
    try:
        async with asyncio.timeout(request.app[READ_TIMEOUT_KEY]):
            return await request.read()  # raises 413 past client_max_size
    except TimeoutError:
        # Not done reading: without this aiohttp would linger, reading the rest
        # of the body for up to 10 s before it closes the connection.
        request.content.feed_eof()
        raise ApiError(
            408, "request_timeout", "The request body arrived too slowly.", close=True
        ) from None
    except RequestPayloadError as error:
        request.content.feed_eof()  # nothing more will be read from this connection
        reason = str(error).partition("message:")[2].strip() or "the body is malformed"
        raise ApiError(400, "bad_body", f"The body cannot be read: {reason}.", close=True) from None


def _check_media_type(request: web.Request, raw: bytes) -> None:
    """POST bodies are JSON only: a page on another site can send a form or
    text/plain without asking first (CORS), but never application/json."""
    if not raw.strip():
        return  # no body (a bare continue); the Origin check guards browsers
    if request.content_type not in _JSON_TYPES and not request.content_type.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Send the body as JSON with Content-Type: application/json "
            f"(got {request.content_type[:60]}).",
        )


async def _read_object(request: web.Request, required: bool = True) -> dict[str, Any]:
    raw = await _read_body(request)
    _check_media_type(request, raw)
    if not raw.strip():
        if required:
            raise ApiError(
                400, "malformed_json", 'The body must be a JSON object like {"input": "..."}.'
            )
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {error}.") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise ApiError(
            400, "not_an_object", 'The body must be a JSON object like {"input": "..."}.'
        )
    return body


def _options(body: dict[str, Any]) -> StoryOptions:
    values: dict[str, Any] = {}
    for name, types in _OPTIONAL.items():
        value = body.get(name)
        if value is None:
            continue
        if types == (int,) and isinstance(value, float) and value.is_integer():
            # JSON has one number type: 3.0 is the whole number 3 (as JSON Schema,
            # and so the OpenAPI document, count it).
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, types):
            kind = (
                "a string"
                if types == (str,)
                else "a whole number"
                if types == (int,)
                else "a number"
            )
            raise ApiError(422, "wrong_type", f"{name} must be {kind}.")
        values[name] = value
    return StoryOptions(**values)


def _wants_stream(request: web.Request, body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "wrong_type", "stream must be true or false.")
    return stream or "text/event-stream" in request.headers.get("Accept", "")


def _story_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    # ASCII digits only: "²", "１" or "١" are digits to str.isdigit (and int() reads
    # some of them), but they are not story ids and must not alias one.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(404, "not_found", f"There is no story {raw[:40]!r}.")
    return int(raw)


def _answer(outcome: PartOutcome, output: str) -> dict[str, Any]:
    result = outcome.result
    return {
        "output": output,
        "story_id": outcome.story.id,
        "part_id": outcome.part.id,
        "genre": outcome.story.genre,
        "seed": result.seed,
        "tokens": result.new_tokens,
        "seconds": round(result.queued_s + result.generation_s, 3),
        "finish_reason": result.finish_reason,
        "model": result.model_id,
    }


async def _respond(request: web.Request, run: Run, stream: bool) -> web.StreamResponse:
    """Wait for the run (or stream it as server-sent events) and answer. The
    output is the story's text as stored: what was there before, then the part."""
    prefix = run.previous_text
    if not stream:
        outcome = await run.outcome()
        return _json(_answer(outcome, prefix + outcome.part.text))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        payload = json.dumps(data, ensure_ascii=False)
        await response.write(f"event: {event}\ndata: {payload}\n\n".encode())

    # The run belongs to the service: if this client goes away, the story is still
    # finished and stored.
    try:
        await send("story", {"story_id": run.story.id, "part": run.number})
        async for position in run.positions():
            if position > 0:
                await send("queued", {"position": position, "story_id": run.story.id})
        async for delta in run.stream():
            await send("text", {"text": delta})
        try:
            outcome = await run.outcome()
        except Exception as error:
            api_error = from_domain(error)
            await send("error", error_body(api_error.code, api_error.message))
        else:
            await send("done", _answer(outcome, prefix + outcome.part.text))
        await response.write_eof()
    except ConnectionError:  # the client left; the story is finished and stored anyway
        log.info("client left story %d's stream before the end", run.story.id)
    return response


async def post_root(request: web.Request) -> web.StreamResponse:
    """The old contract: POST {"input": "..."} -> {"output": input + continuation}."""
    body = await _read_object(request)
    text = body.get("input")
    if text is None:
        raise ApiError(422, "missing_input", 'The body needs an "input" string.')
    if not isinstance(text, str):
        raise ApiError(422, "wrong_type", "input must be a string.")
    stream = _wants_stream(request, body)
    run = await request.app[SERVICE_KEY].start(text, _options(body), _API)
    # The old service answered input + continuation; the stored prompt is the input
    # without surrounding white space, and the answer is what is stored.
    return await _respond(request, run, stream)


async def continue_story(request: web.Request) -> web.StreamResponse:
    story_id = _story_id(request)
    body = await _read_object(request, required=False)
    options = _options(body)
    if options.genre is not None:
        raise ApiError(422, "wrong_field", "A story keeps its genre; genre cannot be changed.")
    stream = _wants_stream(request, body)
    service = request.app[SERVICE_KEY]
    run = await service.continue_story(
        story_id, _API, options if options != StoryOptions() else None
    )
    return await _respond(request, run, stream)


async def get_story(request: web.Request) -> web.Response:
    story, parts, path = await request.app[SERVICE_KEY].story(_story_id(request))
    return _json(export.to_json(story, parts, path))


async def get_story_markdown(request: web.Request) -> web.Response:
    text = await request.app[SERVICE_KEY].export(_story_id(request), "md")
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


async def share_story(request: web.Request) -> web.Response:
    """A share link for the story: its live one, or a new one (201)."""
    story_id = _story_id(request)
    await _read_object(request, required=False)  # no fields; a body must still be JSON
    shared = await request.app[SHARING_KEY].share(story_id, _API)
    url = share_url(request.app[PUBLIC_URL_KEY], shared.token)
    body = {
        "token": shared.token,
        "url": url,
        "story_id": shared.story_id,
        "created_at": shared.created_at,
        "new": shared.new,
    }
    return _json(body, status=201 if shared.new else 200)


async def revoke_share(request: web.Request) -> web.Response:
    await request.app[SHARING_KEY].revoke(request.match_info["token"], _API)
    return web.Response(status=204)


async def get_share_page(request: web.Request) -> web.Response:
    """The story as a web page; 404 (a page too) when the link is not live."""
    token = request.match_info["token"]
    page = await request.app[SHARING_KEY].page(token)
    if page is None:
        return web.Response(
            status=404,
            text=share_page.not_found(),
            content_type="text/html",
            charset="utf-8",
            headers={**share_page.HEADERS, "Cache-Control": "no-store"},
        )
    url = share_url(request.app[PUBLIC_URL_KEY], token)
    text = share_page.render(page, url)
    # Revalidated on every view (no-cache), so a revoked link is gone at once;
    # an unchanged page costs a 304.
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    headers = {**share_page.HEADERS, "Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    pool = service.pool
    database, problem = True, None
    try:
        await service.store.schema_version()
        problem = await service.store.write_problem()
    except Exception as error:
        database, problem = False, str(error) or type(error).__name__
    writable = database and problem is None
    backend = pool.backend
    ready = pool.ready and writable
    remote: dict[str, Any] | None = None
    health = getattr(backend, "health", None)
    if health is not None:  # a remote engine: is it answering now?
        state = await health()
        remote = {"url": backend.base_url, "reachable": state.reachable, "error": state.error}  # type: ignore[union-attr]
        ready = ready and state.reachable
    body: dict[str, Any] = {
        "ready": ready,
        "model_loaded": backend is not None,
        "model": backend.model_id if backend else None,
        "backend": backend.name if backend else None,
        "database": database,
        "database_writable": writable,
        "queue_depth": pool.queue_depth,
        "running": pool.running,
        "queue_capacity": pool.max_queue,
    }
    if problem is not None:
        body["database_error"] = problem
    if remote is not None:
        body["remote"] = remote
    return _json(body, status=200 if ready else 503)


async def openapi(request: web.Request) -> web.Response:
    """The description of this server: its genres, its length limit, whether it
    asks for a key (so a generated client offers what the server takes)."""
    service = request.app[SERVICE_KEY]
    return _json(
        spec(
            api_key=bool(request.app[API_KEY]),
            genres=[genre.key for genre in service.genres],
            max_new_tokens=service.pool.max_new_tokens_limit,
            metrics=request.app[METRICS_KEY],
        )
    )


@web.middleware
async def api_key_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    key = request.app[API_KEY]
    if key and not is_public(request.method, request.path) and request.method != "OPTIONS":
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogates: compare them as the
        # bytes they were. Constant-time comparison: timing must not leak the key.
        sent = given.encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, key.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "A valid API key is required: Authorization: Bearer <key>.",
                {"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)


def host_name(header: str) -> str:
    """The name in a Host header, without port, brackets or a final dot."""
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:5000
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, colon, port = host.rpartition(":")
    if colon and name and ":" not in name and port.isdigit():
        host = name
    return host.rstrip(".")


@web.middleware
async def allowed_host(request: web.Request, handler: Any) -> web.StreamResponse:
    hosts: frozenset[str] = request.app[HOSTS_KEY]
    keyed = bool(request.app[API_KEY])
    if "*" not in hosts and not _any_host(request.method, request.path, keyed):
        name = host_name(request.headers.get("Host", ""))
        if name not in hosts:
            raise ApiError(
                421,
                "misdirected_request",
                f"This server does not answer to the host name {name[:60]!r}; "
                "add it to HTTP_ALLOWED_HOSTS.",
            )
    if request.method in ("POST", "DELETE") and not _origin_allowed(request):
        # A page on another site may send a POST without asking first; only the
        # origins CORS allows may write (or revoke).
        raise ApiError(403, "cross_origin", "Requests from this web origin are not allowed.")
    return await handler(request)


def _origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request
    origins: list[str] = request.app[CORS_KEY]
    # "null" is the origin of sandboxed frames and local files: never trusted by "*".
    return origin in origins or ("*" in origins and origin != "null")


@web.middleware
async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    allowed = origin is not None and _origin_allowed(request)
    if request.method == "OPTIONS" and allowed:
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if allowed and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Vary"] = "Origin"
    return response


def create_app(
    service: StoryService,
    *,
    api_key: str | None = None,
    max_body_bytes: int = 64 * 1024,
    cors_origins: list[str] | None = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    read_timeout_s: float = 20.0,
    public_base_url: str = "http://127.0.0.1:5000",
    observer: telemetry.HttpObserver | None = None,
    metrics: telemetry.MetricsSource | None = None,
    access_log: bool = True,
) -> web.Application:
    """The HTTP application. `allowed_hosts` are the names it answers to ("*":
    any); a request body must arrive within `read_timeout_s`; share links
    start with `public_base_url` (where people reach this server). `observer` counts
    requests; `metrics`, if given, is served at GET /metrics; `access_log`: one
    INFO line per request."""
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            telemetry.middleware(observer, access_log=access_log),  # first: ids in every line
            cors,
            json_errors,
            allowed_host,
            api_key_auth,
        ],
    )
    app.on_response_prepare.append(telemetry.add_request_id)
    app[SERVICE_KEY] = service
    app[API_KEY] = api_key or ""
    app[CORS_KEY] = cors_origins or []
    app[HOSTS_KEY] = frozenset(host_name(host) if host != "*" else host for host in allowed_hosts)
    app[READ_TIMEOUT_KEY] = read_timeout_s
    app[SHARING_KEY] = Sharing(service)
    app[PUBLIC_URL_KEY] = public_base_url
    app[METRICS_KEY] = metrics is not None
    app.router.add_post("/", post_root)
    app.router.add_post("/stories/{id}/continue", continue_story)
    app.router.add_get(r"/stories/{id:[^/]+}.md", get_story_markdown)
    app.router.add_get("/stories/{id}", get_story)
    app.router.add_post("/stories/{id}/share", share_story)
    app.router.add_get("/s/{token}", get_share_page)
    app.router.add_delete("/s/{token}", revoke_share)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    if metrics is not None:
        app.router.add_get("/metrics", telemetry.metrics_handler(metrics))
    return app
