"""OpenAPI 3.1 description of the HTTP interface (its schemas are JSON Schema).

A test checks that every route of the app is described here and that real
responses match these schemas, so this cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

_STORY_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"type": "string", "minLength": 1, "description": "the beginning of the story"},
        "genre": {"type": "string", "description": "a genre key (default: the first genre)"},
        "max_new_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "exclusiveMinimum": 0},
        "top_k": {"type": "integer", "minimum": 0},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer", "minimum": 0},
        "stream": {"type": "boolean", "description": "answer as server-sent events"},
    },
}

_CONTINUE_REQUEST = {
    "type": "object",
    "properties": {
        key: value
        for key, value in _STORY_REQUEST["properties"].items()  # type: ignore[attr-defined]
        if key not in ("input", "genre")
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
                "source": {"type": "string", "enum": ["discord", "api", "cli"]},
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
            },
        },
        "text": {"type": "string"},
        "path": {"type": "array", "items": {"type": "integer"}},
        "parts": {"type": "array", "items": {"$ref": "#/components/schemas/Part"}},
    },
}

_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "const": "ok"}},
}

_READY = {
    "type": "object",
    "required": ["ready", "model_loaded", "model", "backend", "database", "queue_depth", "running"],
    "properties": {
        "ready": {"type": "boolean"},
        "model_loaded": {"type": "boolean"},
        "model": {"type": ["string", "null"]},
        "backend": {"type": ["string", "null"]},
        "database": {"type": "boolean"},
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "malformed JSON, or a body that is not an object",
        401: "missing or wrong API key (when one is configured)",
        403: "not allowed",
        404: "no such story",
        409: "a part of this story is still being written: continue once it is done",
        413: "body too large",
        422: "invalid field: missing or empty input, wrong type, unknown genre, out of range",
        429: "per-user limit",
        502: "the remote story engine (BACKEND=openai) failed (see Retry-After)",
        503: "queue full or shutting down (see Retry-After)",
        504: "the story took too long",
    }
    return {str(status): _json("Error", reasons[status]) for status in statuses}


def _generation_responses() -> dict[str, Any]:
    ok = _json("Answer", "the continued story")
    ok["content"]["text/event-stream"] = {
        "schema": {"type": "string"},
        "description": "events `queued` {position}, `text` {text}, then `done` (an Answer) "
        "or `error` (an Error)",
    }
    return {"200": ok, **_errors(400, 401, 413, 422, 502, 503, 504)}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "storybot",
            "version": "1.0.0",
            "description": "Stories continued by GPT-2. The old POST / contract is kept.",
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "StoryRequest": _STORY_REQUEST,
                "ContinueRequest": _CONTINUE_REQUEST,
                "Answer": _ANSWER,
                "Part": _PART,
                "Story": _STORY,
                "Health": _HEALTH,
                "Ready": _READY,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/": {
                "post": {
                    "summary": "Continue a text (the original service's contract)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("StoryRequest")}},
                    },
                    "responses": _generation_responses(),
                }
            },
            "/stories/{id}/continue": {
                "post": {
                    "summary": "Write the next part of a stored story",
                    "parameters": [_id_param()],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("ContinueRequest")}},
                    },
                    "responses": {**_generation_responses(), **_errors(404, 409)},
                }
            },
            "/stories/{id}": {
                "get": {
                    "summary": "A story with its parts and metadata",
                    "parameters": [_id_param()],
                    "responses": {"200": _json("Story", "the story"), **_errors(401, 404)},
                }
            },
            "/stories/{id}.md": {
                "get": {
                    "summary": "A story as Markdown",
                    "parameters": [_id_param()],
                    "responses": {
                        "200": {
                            "description": "the story",
                            "content": {"text/markdown": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 404),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": _json("Health", "the process answers")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: model loaded, database open, queue depth, backend",
                    "responses": {
                        "200": _json("Ready", "ready to serve"),
                        "503": _json("Ready", "not ready"),
                        **_errors(401),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }


def _id_param() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
