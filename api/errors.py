"""Every failure becomes JSON `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from generation.errors import (
    Busy,
    Cancelled,
    EngineUnavailable,
    GenerationError,
    InvalidRequest,
    PoolClosed,
    TimedOut,
)
from storage.errors import Claimed, InvalidData, NotFound, StorageError, StorageUnavailable
from stories import telemetry
from stories.errors import (
    AgeRestricted,
    Conflict,
    InvalidPrompt,
    InvalidSetting,
    NotAllowed,
    NothingToContinue,
    StoryDeleted,
    StoryError,
    UserLimit,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,  # the connection cannot be reused (a broken body)
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.close = close


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    error = {"code": code, "message": message}
    if (request_id := telemetry.request_id.get()) is not None:
        error["request_id"] = request_id  # to quote when reporting it; also X-Request-Id
    return {"error": error}


def error_response(error: ApiError) -> web.Response:
    response = web.Response(
        status=error.status,
        text=json.dumps(error_body(error.code, error.message)),
        content_type="application/json",
        headers=error.headers,
    )
    if error.close:
        response.force_close()
    return response


def from_domain(error: BaseException) -> ApiError:
    """Map a domain error to its HTTP status."""
    message = str(error)
    if isinstance(error, Busy):
        return ApiError(503, error.code, message, {"Retry-After": f"{error.retry_after:.0f}"})
    if isinstance(error, UserLimit):
        headers = (
            {"Retry-After": f"{max(1, round(error.retry_after))}"} if error.retry_after else {}
        )
        return ApiError(429, error.code, message, headers)
    if isinstance(error, NotAllowed | AgeRestricted):
        return ApiError(403, error.code, message)
    if isinstance(error, InvalidRequest | InvalidPrompt | InvalidSetting):
        return ApiError(422, error.code, message)
    if isinstance(error, NotFound):
        return ApiError(404, error.code, message)
    if isinstance(error, InvalidData):
        return ApiError(422, error.code, message)
    if isinstance(error, EngineUnavailable):
        return ApiError(502, error.code, message, {"Retry-After": f"{error.retry_after:.0f}"})
    if isinstance(error, StorageUnavailable | PoolClosed):
        return ApiError(503, error.code, message, {"Retry-After": "30"})
    if isinstance(error, TimedOut):
        return ApiError(504, error.code, message)
    if isinstance(error, Cancelled | Conflict | NothingToContinue | Claimed):
        return ApiError(409, error.code, message)
    if isinstance(error, StoryDeleted):
        return ApiError(404, error.code, message)
    if isinstance(error, StoryError):
        return ApiError(400, error.code, message)
    if isinstance(error, GenerationError | StorageError):
        return ApiError(500, error.code, message)
    reference = uuid.uuid4().hex[:8]
    log.error("unexpected error (ref %s)", reference, exc_info=error)
    return ApiError(500, "internal_error", f"Something went wrong (reference {reference}).")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        message = error.reason
        if error.status == 413:
            message = "The request body is too large."
        elif error.status == 404:
            message = f"No route for {request.method} {request.path}."
        return error_response(ApiError(error.status, code, message, _keep_headers(error)))
    except Exception as error:  # domain errors and anything unexpected
        return error_response(from_domain(error))


def _keep_headers(error: web.HTTPException) -> dict[str, str]:
    allow = error.headers.get("Allow")
    return {"Allow": allow} if allow else {}
