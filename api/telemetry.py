"""Request ids, the access log and GET /metrics for the HTTP interface.

- Every request gets a request id: the client's `X-Request-Id` when it is a
  short token of safe characters, else a new one (a header that could carry a
  line break, a secret or a page of text into the logs is replaced, not
  cleaned). It is in every log line of the request (stories.telemetry), in
  the `X-Request-Id` response header and in the JSON body of an error.
- One access log line per request at INFO, without bodies or query strings:
  method, path (percent-encoded, so one line stays one line), status, time.
- The observer counts requests by route template and status; `/metrics` is
  served from what the composition root hands in (app/metrics.py), so this
  layer needs no metrics library.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from stories import telemetry

log = logging.getLogger("api.access")

HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# What a client may choose as its request id: what fits a log line and a URL.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499  # the client closed the connection before the answer (nginx's code)


def request_id_from(header: str | None) -> str:
    """The client's request id if it is a short token of safe characters, else a new one."""
    if header is not None and _SAFE_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex[:16]


class HttpObserver(Protocol):
    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered: `route` is the route's template (never the
        path a client sent), `method` one of the methods HTTP defines or "other"."""


class MetricsSource(Protocol):
    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for: (body, content type)."""


def route_of(request: web.Request) -> str:
    """The template of the route that matched ("/stories/{id}"), or "unmatched"."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def middleware(observer: HttpObserver | None, *, access_log: bool = True) -> Middleware:
    """The outermost middleware: sets the request's log context, then logs and
    counts the answer."""

    @web.middleware
    async def request_context(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        rid = request_id_from(request.headers.get(HEADER))
        request[REQUEST_ID] = rid
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler becomes aiohttp's 500
        with telemetry.bound(request_id=rid, story_id=None, guild_id=None):
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            except asyncio.CancelledError:
                status = CLIENT_GONE
                raise
            finally:
                seconds = time.perf_counter() - started
                method = request.method if request.method in _METHODS else "other"
                if observer is not None:
                    observer.http_request(method, route_of(request), status, seconds)
                if access_log:
                    log.info(
                        "%s %s %d %.1f ms",
                        method,
                        request.rel_url.raw_path[:200],
                        status,
                        seconds * 1000,
                    )

    return request_context


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names its request, streamed ones too."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid


def metrics_handler(source: MetricsSource) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(request: web.Request) -> web.Response:
        body, content_type = source.exposition(request.headers.get("Accept", ""))
        # The content type carries parameters (version, charset): set it whole.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


def metrics_app(
    source: MetricsSource,
    observer: HttpObserver | None = None,
    *,
    access_log: bool = True,
    allowed_hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
) -> web.Application:
    """An application that serves only GET /metrics (METRICS_PORT, on loopback:
    no key, but only loopback host names, so a web page that rebinds its own
    name to 127.0.0.1 cannot read it)."""
    from api.app import host_name  # api.app imports this module
    from api.errors import ApiError, json_errors

    hosts = frozenset(host_name(host) for host in allowed_hosts)

    @web.middleware
    async def loopback_names(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", ""))
        if name not in hosts:
            raise ApiError(
                421, "misdirected_request", f"This server does not answer to {name[:60]!r}."
            )
        return await handler(request)

    app = web.Application(
        middlewares=[middleware(observer, access_log=access_log), json_errors, loopback_names]
    )
    app.on_response_prepare.append(add_request_id)
    app.router.add_get("/metrics", metrics_handler(source))
    return app
