"""OpenAPI 3.1 description of the HTTP interface (its schemas are JSON Schema).

Tests keep it true: every route of the app is described here, the document is
valid OpenAPI (openapi-spec-validator), and schemathesis sends a real server
generated requests and checks that each answer's status, headers and body are
the ones described (tests/api/test_openapi.py).

`spec()` with no arguments describes any deployment: a key may be configured,
any genre key may exist, max_new_tokens may be allowed up to 1000. Given the
deployment's facts (`api_key`, `genres`, `max_new_tokens`) it describes that
server exactly: then every request the schemas allow is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stories.service import MAX_MEMORY_CHARS, MAX_NOTE_CHARS, MAX_PROMPT_CHARS

# What `GenerationParams.validate` and `StoryService` accept (generation/types.py,
# stories/service.py).
MAX_NEW_TOKENS = 1000  # the largest limit a deployment can set (MAX_NEW_TOKENS_LIMIT)
MAX_INPUT_CHARS = MAX_PROMPT_CHARS
MAX_SEED = 2**63 - 1
MAX_STORY_ID = 10**18 - 1  # ids are at most 18 ASCII digits

# Control characters other than tab and line breaks are refused (422).
_NO_CONTROL = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
# A prompt of only white space (as Python's str.strip sees it) and invisible
# characters is empty (422): at least one character must be neither.
_VISIBLE = (
    "[^\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u00ad\\u1680\\u180e"
    "\\u2000-\\u200d\\u2028\\u2029\\u202f\\u205f\\u2060\\u3000\\ufeff]"
)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, for programs"},
                "message": {"type": "string", "description": "for people"},
                "request_id": {
                    "type": "string",
                    "description": "the request's id, as in the X-Request-Id header: "
                    "quote it when reporting a problem",
                },
            },
        }
    },
}

_ANSWER = {
    "type": "object",
    "required": ["output", "story_id", "part_id", "genre", "seed", "tokens", "seconds"],
    "properties": {
        "output": {"type": "string", "description": "the input followed by the continuation"},
        "story_id": {"type": "integer"},
        "part_id": {"type": "integer"},
        "genre": {"type": "string"},
        "seed": {"type": "integer"},
        "tokens": {"type": "integer"},
        "seconds": {"type": "number"},
        "finish_reason": {"type": "string", "enum": ["length", "eos", "timeout"]},
        "model": {
            "type": "string",
            "description": "the model that wrote it (a genre may have its own)",
        },
    },
}

_PART = {
    "type": "object",
    "required": ["id", "parent_id", "kind", "text", "seed", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "parent_id": {"type": ["integer", "null"]},
        "kind": {"type": "string", "enum": ["prompt", "generated"]},
        "text": {"type": "string"},
        "requested_by": {"type": ["string", "null"]},
        "params": {"type": ["object", "null"]},
        "seed": {"type": ["integer", "null"]},
        "model_id": {"type": ["string", "null"]},
        "prompt_tokens": {"type": ["integer", "null"]},
        "new_tokens": {"type": ["integer", "null"]},
        "queued_s": {"type": ["number", "null"]},
        "generation_s": {"type": ["number", "null"]},
        "finish_reason": {"type": ["string", "null"]},
        "created_at": {"type": "number"},
        "masked": {"type": "boolean", "description": "the content filter masked words in it"},
        "memory": {"type": ["string", "null"], "description": "the notes it was written with"},
        "authors_note": {"type": ["string", "null"]},
    },
}

_STORY = {
    "type": "object",
    "required": ["story", "text", "path", "parts"],
    "properties": {
        "story": {
            "type": "object",
            "required": ["id", "source", "genre", "title", "status", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "integer"},
                "author_id": {"type": ["string", "null"]},
                "source": {"type": "string", "enum": ["discord", "api"]},
                "guild_id": {"type": ["string", "null"]},
                "channel_id": {"type": ["string", "null"]},
                "genre": {"type": "string"},
                "title": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": ["queued", "generating", "done", "failed", "cancelled", "interrupted"],
                },
                "created_at": {"type": "number"},
                "updated_at": {"type": "number"},
                "memory": {"type": "string"},
                "authors_note": {"type": "string"},
            },
        },
        "text": {"type": "string"},
        "path": {"type": "array", "items": {"type": "integer"}},
        "parts": {"type": "array", "items": {"$ref": "#/components/schemas/Part"}},
    },
}

_SHARE = {
    "type": "object",
    "required": ["token", "url", "story_id", "created_at", "new"],
    "properties": {
        "token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
        "url": {
            "type": "string",
            "description": "the page, for anyone with the link: PUBLIC_BASE_URL/s/{token}",
        },
        "story_id": {"type": "integer"},
        "created_at": {"type": "number"},
        "new": {
            "type": "boolean",
            "description": "false: the story's live link, made before (status 200)",
        },
    },
}

_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "const": "ok"}},
}

_READY = {
    "type": "object",
    "required": [
        "ready",
        "model_loaded",
        "model",
        "backend",
        "database",
        "database_writable",
        "queue_depth",
        "running",
    ],
    "properties": {
        "ready": {"type": "boolean"},
        "model_loaded": {"type": "boolean"},
        "model": {"type": ["string", "null"]},
        "backend": {"type": ["string", "null"]},
        "database": {"description": "the database answers a read", "type": "boolean"},
        "database_writable": {
            "description": "the database takes a write now (a full disk or a read-only "
            "file makes it false, and the server not ready)",
            "type": "boolean",
        },
        "database_error": {
            "description": "only when the database does not answer or take writes: why",
            "type": "string",
        },
        "queue_depth": {"type": "integer", "minimum": 0},
        "running": {"type": "integer", "minimum": 0},
        "queue_capacity": {"type": "integer"},
        "remote": {
            "description": "BACKEND=openai only: whether the remote engine answers",
            "type": "object",
            "required": ["url", "reachable", "error"],
            "properties": {
                "url": {"type": "string"},
                "reachable": {"type": "boolean"},
                "error": {"type": ["string", "null"]},
            },
        },
    },
}


def _event(name: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    """One server-sent event: its name, and its data, a JSON document."""
    return {
        "description": description,
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": "application/json", "contentSchema": data},
        },
    }


_STORY_EVENT = {
    "type": "object",
    "required": ["story_id", "part"],
    "properties": {
        "story_id": {"type": "integer"},
        "part": {"type": "integer", "description": "the number of the part being written"},
    },
}
_QUEUED_EVENT = {
    "type": "object",
    "required": ["position", "story_id"],
    "properties": {
        "position": {"type": "integer", "minimum": 1, "description": "1: next in line"},
        "story_id": {"type": "integer"},
    },
}
_TEXT_EVENT = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "description": "the next piece of the part"}},
}

_STREAM_DESCRIPTION = (
    "The part as it is written, as server-sent events: first `story` {story_id, part}; "
    "`queued` {position, story_id} while it waits its turn; `text` {text} for each new "
    "piece; and last either `done`, the same object as the JSON answer (its output is "
    "the text trimmed to its last full sentence), or `error`, an Error (the story "
    "failed after the stream began, so the status stays 200). Each event's data is one "
    "line of JSON."
)

# Open API 3.1 leaves streams to the schema: as schemathesis reads it, the schema
# of a text/event-stream describes each event ({event, data}).
_SSE_EVENT = {
    "description": _STREAM_DESCRIPTION,
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "oneOf": [
        _event("story", _STORY_EVENT, "first: the story and the part being written"),
        _event("queued", _QUEUED_EVENT, "while the part waits for the model"),
        _event("text", _TEXT_EVENT, "a new piece of the part"),
        _event("done", {"$ref": "#/components/schemas/Answer"}, "last: the part is stored"),
        _event("error", {"$ref": "#/components/schemas/Error"}, "last: the part failed"),
    ],
}


def _maybe_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: null is the same as leaving it out."""
    return {**schema, "type": [schema["type"], "null"]}


def _generation_fields(max_new_tokens: int) -> dict[str, Any]:
    return {
        "max_new_tokens": _maybe_null(
            {
                "type": "integer",
                "minimum": 1,
                "maximum": max_new_tokens,
                "description": "at most the server's MAX_NEW_TOKENS_LIMIT, and what fits the "
                "model's context after the genre's primer (default: the genre's length)",
            }
        ),
        "temperature": _maybe_null({"type": "number", "exclusiveMinimum": 0, "maximum": 5}),
        "top_k": _maybe_null({"type": "integer", "minimum": 0, "maximum": 1000}),
        "top_p": _maybe_null({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        "seed": _maybe_null({"type": "integer", "minimum": 0, "maximum": MAX_SEED}),
        "memory": _maybe_null(
            {
                "type": "string",
                "maxLength": MAX_MEMORY_CHARS,
                "pattern": _NO_CONTROL,
                "description": "the story's memory (who and where), kept at the top of the "
                "model's context from now on; on /continue it replaces the story's",
            }
        ),
        "authors_note": _maybe_null(
            {
                "type": "string",
                "maxLength": MAX_NOTE_CHARS,
                "pattern": _NO_CONTROL,
                "description": "the story's author's note (tone, what should happen next), "
                "set a few sentences before the end of the context",
            }
        ),
        "stream": {
            "type": "boolean",
            "description": "answer as server-sent events (as Accept: text/event-stream does)",
        },
    }


def _story_request(genres: Sequence[str] | None, max_new_tokens: int) -> dict[str, Any]:
    genre: dict[str, Any] = {
        "type": ["string", "null"],
        "description": "a genre key, in any case (default: the first genre; unknown: 422)",
    }
    if genres is not None:
        genre["enum"] = [*genres, "", None]
    return {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {
                "type": "string",
                "description": "the beginning of the story: not only white space, "
                "no control characters but tab and line breaks",
                "minLength": 1,
                "maxLength": MAX_INPUT_CHARS,
                "allOf": [{"pattern": _NO_CONTROL}, {"pattern": _VISIBLE}],
            },
            "genre": genre,
            **_generation_fields(max_new_tokens),
        },
    }


def _continue_request(max_new_tokens: int) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "no body, or {}: the length of the part before, the genre's defaults",
        "properties": {
            "genre": {"type": "null", "description": "a story keeps its genre"},
            **_generation_fields(max_new_tokens),
        },
    }


def _token_param() -> dict[str, Any]:
    return {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "the link's token (URL-safe ASCII)",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": _ref(schema) if isinstance(schema, str) else schema}
        },
    }


_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 0},
}

_REASONS = {
    400: "`malformed_json`: the body is not JSON, or is empty where one is needed; "
    "`not_an_object`: the JSON is not an object; `bad_body`: the body cannot be read "
    "(a Content-Encoding it does not have, a broken chunk)",
    401: "`unauthorized`: missing or wrong API key",
    403: "`cross_origin`: a POST from a web origin the server does not allow (HTTP_CORS_ORIGINS)",
    404: "`not_found`, `story_deleted`: no such story",
    408: "`request_timeout`: the body arrived too slowly",
    409: "`still_writing`, `conflict`, `nothing_to_continue`, `cancelled`: a part of "
    "this story is being written, or was cancelled: continue once it is done; "
    "`part_hidden`: the part was removed after reports",
    413: "`body_too_large`: the body is larger than HTTP_MAX_BODY_BYTES",
    415: "`unsupported_media_type`: a body that is not Content-Type: application/json",
    421: "`misdirected_request`: a Host the server does not answer to (HTTP_ALLOWED_HOSTS)",
    422: "`missing_input`, `empty_input`, `input_too_long`, `control_character`, "
    "`wrong_type`, `wrong_field`, `unknown_genre`, `invalid_request`, `prompt_too_long`, "
    "`invalid_data`: a field is missing, empty, of the wrong type or out of range; "
    "`content_filtered`: the content filter refused the input",
    502: "`engine_unavailable`: the remote story engine (BACKEND=openai) failed",
    503: "`busy`: the queue is full; `shutting_down`; `storage_unavailable`; "
    "`too_many_connections`: past HTTP_MAX_CONNECTIONS",
    504: "`timeout`: the story took too long",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        }
    },
    502: {"Retry-After": {**_RETRY_AFTER, "required": True}},
    503: {"Retry-After": {**_RETRY_AFTER, "required": True}},
}


def _error(status: int, reason: str | None = None) -> dict[str, Any]:
    response = _json("Error", reason or _REASONS[status])
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _error(status) for status in statuses}


_TOO_MANY = "`too_many_connections`: past HTTP_MAX_CONNECTIONS"


class _Builder:
    def __init__(self, api_key: bool) -> None:
        self.api_key = api_key

    def protected(self, operation: dict[str, Any], *statuses: int) -> dict[str, Any]:
        """An operation that needs the key when one is configured."""
        codes = (*statuses, 401) if self.api_key else statuses
        operation["responses"].update(_errors(*sorted(codes)))
        if self.api_key:
            operation["security"] = [{"bearer": []}]
        return operation

    def public(self, operation: dict[str, Any], *statuses: int) -> dict[str, Any]:
        operation["responses"].update(_errors(*statuses))
        operation["security"] = []
        return operation


# Where an answer's story_id leads (for clients and schemathesis's stateful tests).
_STORY_ID = "$response.body#/story_id"
_LINKS = {
    "GetStory": {"operationId": "getStory", "parameters": {"id": _STORY_ID}},
    "GetStoryMarkdown": {"operationId": "getStoryMarkdown", "parameters": {"id": _STORY_ID}},
    "ContinueStory": {"operationId": "continueStory", "parameters": {"id": _STORY_ID}},
    "ShareStory": {"operationId": "shareStory", "parameters": {"id": _STORY_ID}},
}
_TOKEN = "$response.body#/token"
_SHARE_LINKS = {
    "GetSharePage": {"operationId": "getSharePage", "parameters": {"token": _TOKEN}},
    "RevokeShare": {"operationId": "revokeShare", "parameters": {"token": _TOKEN}},
}


def _generation_responses() -> dict[str, Any]:
    ok = _json("Answer", "the continued story, as JSON or (stream) as server-sent events")
    ok["content"]["text/event-stream"] = {"schema": _SSE_EVENT}
    ok["links"] = _LINKS
    return {"200": ok}


def _json_body(schema: str, *, required: bool) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


# What both POSTs can answer besides 200: the middleware (421, 403, 401), reading
# the body (400, 408, 413, 415), checking it (422), and generating (502, 503, 504;
# once a stream has begun, a failure is its `error` event instead). No 429: the
# per-person limits are the bot's, and API callers are nobody in particular.
_POST = (400, 403, 408, 413, 415, 421, 422, 502, 503, 504)


def spec(
    *,
    api_key: bool = True,
    genres: Sequence[str] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    metrics: bool = False,
) -> dict[str, Any]:
    """The description. `api_key`: whether routes other than /healthz and
    /openapi.json need the bearer key; `genres`: the genre keys there are (None:
    any string is described, unknown ones get 422); `max_new_tokens`: the
    server's limit; `metrics`: whether GET /metrics is served here."""
    build = _Builder(api_key)
    paths = {
        "/": {
            "post": build.protected(
                {
                    "operationId": "postRoot",
                    "summary": "Continue a text (the original service's contract)",
                    "description": "Streams (text/event-stream) when `stream` is true or "
                    "the request sends Accept: text/event-stream.",
                    "requestBody": _json_body("StoryRequest", required=True),
                    "responses": _generation_responses(),
                },
                *_POST,
            )
        },
        "/stories/{id}/continue": {
            "post": build.protected(
                {
                    "operationId": "continueStory",
                    "summary": "Write the next part of a stored story",
                    "parameters": [_id_param()],
                    "requestBody": _json_body("ContinueRequest", required=False),
                    "responses": _generation_responses(),
                },
                *_POST,
                404,
                409,
            )
        },
        "/stories/{id}": {
            "get": build.protected(
                {
                    "operationId": "getStory",
                    "summary": "A story with its parts and metadata",
                    "parameters": [_id_param()],
                    "responses": {"200": _json("Story", "the story")},
                },
                404,
                421,
                503,
            )
        },
        "/stories/{id}.md": {
            "get": build.protected(
                {
                    "operationId": "getStoryMarkdown",
                    "summary": "A story as Markdown",
                    "parameters": [_id_param()],
                    "responses": {
                        "200": {
                            "description": "the story",
                            "content": {"text/markdown": {"schema": {"type": "string"}}},
                        },
                    },
                },
                404,
                421,
                503,
            )
        },
        "/stories/{id}/share": {
            "post": build.protected(
                {
                    "operationId": "shareStory",
                    "summary": "A share link: a read-only web page of the story",
                    "description": "The story's live link, or a new one (201). Anyone with "
                    "the link can read the page, without the API key. In a server whose "
                    "admins turned sharing off: 403 `sharing_disabled`.",
                    "parameters": [_id_param()],
                    "requestBody": _json_body("ShareRequest", required=False),
                    "responses": {
                        "200": {**_json("Share", "the story's live link"), "links": _SHARE_LINKS},
                        "201": {**_json("Share", "a new link"), "links": _SHARE_LINKS},
                    },
                },
                400,
                404,
                408,
                413,
                415,
                421,
                503,
            )
        },
        "/s/{token}": {
            "get": build.public(
                {
                    "operationId": "getSharePage",
                    "summary": "A shared story as a web page (needs no key; answers whatever "
                    "the Host)",
                    "parameters": [_token_param()],
                    "responses": {
                        "200": _html("the story: HTML, no script"),
                        "404": {
                            "description": "no live link with this token (revoked, the story "
                            "deleted, sharing turned off in its server): a page saying so; a "
                            "path that is no token at all: an Error",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "application/json": {"schema": _ref("Error")},
                            },
                        },
                    },
                },
            ),
            "delete": build.protected(
                {
                    "operationId": "revokeShare",
                    "summary": "Revoke a share link: its page answers 404 from now on",
                    "parameters": [_token_param()],
                    "responses": {"204": {"description": "revoked"}},
                },
                404,
                421,
                503,
            ),
        },
        "/healthz": {
            "get": build.public(
                {
                    "operationId": "healthz",
                    "summary": "Liveness (answers whatever the Host)",
                    "responses": {"200": _json("Health", "the process answers")},
                },
            )
        },
        "/readyz": {
            "get": build.protected(
                {
                    "operationId": "readyz",
                    "summary": "Readiness: model loaded, database open, queue depth, backend "
                    "(answers whatever the Host)",
                    "responses": {"200": _json("Ready", "ready to serve")},
                },
            )
        },
        "/openapi.json": {
            "get": build.public(
                {
                    "operationId": "openapi",
                    "summary": "This description",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                },
                421,
            )
        },
    }
    # Any route answers 503 past the connection cap, before reading the request.
    paths["/healthz"]["get"]["responses"]["503"] = _error(503, _TOO_MANY)
    paths["/openapi.json"]["get"]["responses"]["503"] = _error(503, _TOO_MANY)
    paths["/s/{token}"]["get"]["responses"]["503"] = _error(503, _TOO_MANY)
    paths["/stories/{id}/share"]["post"]["responses"]["403"] = _error(
        403, _REASONS[403] + "; `sharing_disabled`: the story's server turned sharing off"
    )
    revoke = paths["/s/{token}"]["delete"]["responses"]
    revoke["403"] = _error(403, "`cross_origin`: from a web origin the server does not allow")
    revoke["404"] = _error(404, "`not_found`: no live link with this token")
    ready_503 = _json(
        {"oneOf": [_ref("Ready"), _ref("Error")]},
        "not ready (a Ready object), or " + _TOO_MANY + " (an Error, with Retry-After)",
    )
    ready_503["headers"] = {"Retry-After": _RETRY_AFTER}
    paths["/readyz"]["get"]["responses"]["503"] = ready_503
    if metrics:
        paths["/metrics"] = {
            "get": build.protected(
                {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (answers whatever the Host)",
                    "responses": {
                        "200": {
                            "description": "the Prometheus text format (OpenMetrics when "
                            "the Accept header asks for it)",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/openmetrics-text": {"schema": {"type": "string"}},
                            },
                        }
                    },
                },
            )
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "storybot",
            "version": "1.0.0",
            "description": "Stories continued by GPT-2. The old POST / contract is kept. "
            "Every error is JSON {error: {code, message}}, but for a share page's 404, which is a "
            "page. A method a path does not have "
            "answers 405 (with Allow); a path there is not, 404. Request bodies are JSON "
            "(Content-Type: application/json). Every answer carries an X-Request-Id header: the "
            "client's own X-Request-Id when it is 1 to 64 letters, digits or . _ : -, else a new "
            "one; it is in the server's log lines for the request and in an error's body.",
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "StoryRequest": _story_request(genres, max_new_tokens),
                "ContinueRequest": _continue_request(max_new_tokens),
                "Answer": _ANSWER,
                "Part": _PART,
                "Story": _STORY,
                "ShareRequest": {"type": "object", "description": "no body, or {}"},
                "Share": _SHARE,
                "Health": _HEALTH,
                "Ready": _READY,
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <HTTP_API_KEY>, needed only when "
                    "the server is started with an API key (by default it has none)",
                }
            },
        },
        "paths": paths,
    }


def _id_param() -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_STORY_ID},
    }
