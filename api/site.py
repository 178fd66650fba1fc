"""A TCP site with a cap on open connections.

aiohttp accepts every connection it is offered; each one costs a file handle,
so enough idle or slow clients exhaust the process's handles and `/healthz`
stops answering. Past `max_connections`, a new connection gets a short 503 and
is closed at once, so it costs nothing for long. (Slow clients are bounded in
time by the runner's `keepalive_timeout`, which aiohttp also applies to a
connection whose request headers never complete.)
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


def _busy_response() -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "too_many_connections",
                "message": "The server has too many open connections; try again shortly.",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_busy_response())
        transport.close()


class LimitedSite(web.TCPSite):
    """`web.TCPSite` that refuses connections past `max_connections`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int):
        super().__init__(runner, host, port)
        self._max_connections = max_connections
        self.refused = 0

    async def start(self) -> None:
        # TCPSite.start, with the runner's protocol factory wrapped.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            if len(server.connections) >= self._max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning(
                        "HTTP: %d connections open, the most allowed (HTTP_MAX_CONNECTIONS); "
                        "refused %d so far",
                        len(server.connections),
                        self.refused,
                    )
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self._host, self._port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class QuietProtocolErrors(logging.Filter):
    """aiohttp logs every malformed request (bad headers, a body encoding it
    cannot decode, a broken chunk) as an ERROR with a traceback, though the fault
    is the client's and the client got its 400. Make it one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "HTTP: malformed request from %s answered %d: %s"
            record.args = (remote, error.code, (error.message or "").strip()[:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_protocol_errors() -> None:
    """Install `QuietProtocolErrors` on aiohttp's server logger, once."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietProtocolErrors) for f in server_log.filters):
        server_log.addFilter(QuietProtocolErrors())
