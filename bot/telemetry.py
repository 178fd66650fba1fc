"""What the bot reports about Discord, and whom its log lines are about.

- Discord API errors and rate-limit waits are seen where every request to
  Discord passes: the client's aiohttp session, through the `http_trace` hook
  discord.py offers. That includes interaction answers and follow-ups, which
  go through webhooks rather than the REST client, and the 429s discord.py
  waits out and retries by itself. Each error is reported with its HTTP status
  and Discord's error code (10062, 50027, ...); each 429 with its scope and how
  long Discord asked to wait, and each answer that empties a route's bucket
  (discord.py then holds the next request on it until it resets, which is how
  a bot streaming edits mostly waits). Never a route, an id or text.
- Log context: an interaction's id is its request id (Discord shows it to
  nobody, and it names the interaction in Discord's own logs); a reaction,
  which has no id of its own, gets a new one. The guild id goes with it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import aiohttp
import discord

from stories import telemetry

log = logging.getLogger(__name__)

RATE_LIMIT_SCOPES = ("user", "global", "shared")
# Also reported: "bucket" (a route's bucket ran out: discord.py waits before the
# next request on it, no 429 involved) and "unknown" (a 429 naming no scope).


class DiscordObserver(Protocol):
    def discord_error(self, status: int, code: int) -> None:
        """Discord answered an error: HTTP `status`, Discord's `code` (0: none)."""

    def discord_rate_limited(self, scope: str, seconds: float) -> None:
        """Discord asked for a wait of `seconds`: a 429 (`scope` user, global,
        shared or unknown), or a bucket that ran out (`scope` bucket)."""


def trace_config(observer: DiscordObserver) -> aiohttp.TraceConfig:
    """An aiohttp trace that reports every error answer Discord sends."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        response = params.response
        if response.status < 400:
            if response.headers.get("X-RateLimit-Remaining") == "0":
                # The route's bucket ran out: discord.py holds the next request on
                # it until the bucket resets, without a 429 ever being sent.
                observer.discord_rate_limited(
                    "bucket", _seconds(response.headers.get("X-RateLimit-Reset-After"))
                )
            return
        try:
            # Read once here; aiohttp keeps the body, so discord.py reads it again.
            body = json.loads(await response.read() or b"null")
        except Exception:  # not JSON (a proxy's error page): only the status counts
            body = None
        data = body if isinstance(body, dict) else {}
        if response.status == 429:
            scope = response.headers.get("X-RateLimit-Scope", "")
            if not scope and (data.get("global") or response.headers.get("X-RateLimit-Global")):
                scope = "global"
            observer.discord_rate_limited(
                scope if scope in RATE_LIMIT_SCOPES else "unknown", _retry_after(response, data)
            )
            return
        code = data.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not 0 < code < 1_000_000:
            code = 0  # none, or not one of Discord's: no label value of its own
        observer.discord_error(response.status, code)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


def _retry_after(response: aiohttp.ClientResponse, data: dict[str, Any]) -> float:
    for value in (data.get("retry_after"), response.headers.get("Retry-After")):
        seconds = _seconds(value)
        if seconds or value in (0, "0"):
            return seconds
    return 0.0


def _seconds(value: object) -> float:
    """A wait Discord names, in seconds (0.0 for anything else)."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return seconds if 0 <= seconds < 86_400 else 0.0


def instrument(client: discord.Client, observer: DiscordObserver) -> None:
    """Report `client`'s Discord errors to `observer`. Call before it logs in
    (the session, and so its trace, is made at login)."""
    client.http.http_trace = trace_config(observer)


def ids_of(event: object) -> dict[str, Any]:
    """The log context of a Discord event: an interaction's id as the request
    id, or a new one; the guild's id where there is one."""
    if isinstance(event, discord.Interaction):
        return {"request_id": str(event.id), "guild_id": event.guild_id}
    guild = getattr(event, "guild_id", None)
    return {
        "request_id": uuid.uuid4().hex[:16],
        "guild_id": guild if isinstance(guild, int) else None,
    }


@contextmanager
def context_of(event: object) -> Iterator[None]:
    """The block's log lines name the event's request and guild (and, once
    the service knows it, its story)."""
    with telemetry.bound(**ids_of(event), story_id=None):
        yield


async def name_interaction(interaction: discord.Interaction) -> bool:
    """A CommandTree.interaction_check that only sets the log context: it runs
    in the task that runs the command, before the command, and lets it run."""
    for name, value in ids_of(interaction).items():
        getattr(telemetry, name).set(value)
    return True
