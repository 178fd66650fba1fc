"""What the story use-cases report, and whom a log line is about.

- Log context: the request id, story id and guild id of the work in hand, in
  context variables. The front-ends set them (the HTTP middleware, the Discord
  handlers), the service sets the story id once it has one, and app/logs.py
  adds them to every line. asyncio copies the context into each task it
  creates, so a run's own task logs with the ids of the request that began it.
  They live here, the lowest layer both front-ends import.
- `StoryObserver`: told how each request for a part ended (a story, or why
  not), once per request; app/metrics.py counts it. Default: nobody.

Outcomes are a fixed set of words, never text or ids from the request, so a
metric labelled with them stays small and says nothing about anyone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, Protocol, TypeVar, get_args

from generation.errors import (
    Busy,
    Cancelled,
    InvalidRequest,
    PoolClosed,
    TimedOut,
)
from generation.types import GenerationResult
from storage.errors import InvalidData, NotFound
from stories.errors import (
    AgeRestricted,
    Conflict,
    ContentFiltered,
    InvalidPrompt,
    InvalidSetting,
    NotAllowed,
    NothingToContinue,
    StoryDeleted,
    UserLimit,
)

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
story_id: ContextVar[int | None] = ContextVar("story_id", default=None)
guild_id: ContextVar[int | None] = ContextVar("guild_id", default=None)
_FIELDS: dict[str, ContextVar[Any]] = {
    "request_id": request_id,
    "story_id": story_id,
    "guild_id": guild_id,
}


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Set log context fields (request_id, story_id, guild_id) for the block and
    put the old values back after it: an HTTP connection serves its requests
    one after another in one context, so nothing may outlive its request."""
    tokens = [(_FIELDS[name], _FIELDS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, Any]:
    """The log context fields that are set now."""
    return {name: value for name, var in _FIELDS.items() if (value := var.get()) is not None}


Outcome = Literal[
    "story",  # a part was written (also cut short by the time limit, with text)
    "joined",  # asked for a part someone else had just asked for: shares their run
    "busy",  # the queue was full
    "limited",  # a person's or a server's limit (cooldown, stories at once, quota)
    "filtered",  # the content filter refused the prompt
    "invalid",  # bad input: empty or long prompt, unknown genre, bad parameter, no such story
    "refused",  # not allowed here or now: permissions, channel, a part being written
    "cancelled",  # cancelled by its person, or its story was deleted meanwhile
    "interrupted",  # shutting down
    "timeout",  # nothing written within the time limit
    "error",  # anything else: a failed engine, a full disk, a bug
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


def outcome_of(error: BaseException) -> Outcome:
    """The outcome a request that ended with `error` counts as."""
    if isinstance(error, Busy):
        return "busy"
    if isinstance(error, UserLimit):
        return "limited"
    if isinstance(error, ContentFiltered):
        return "filtered"
    if isinstance(error, InvalidPrompt | InvalidRequest | InvalidSetting | InvalidData | NotFound):
        return "invalid"
    if isinstance(error, NotAllowed | AgeRestricted | Conflict | NothingToContinue):
        return "refused"
    if isinstance(error, Cancelled | StoryDeleted):
        return "cancelled"
    if isinstance(error, PoolClosed):
        return "interrupted"
    if isinstance(error, TimedOut):
        return "timeout"
    return "error"


class StoryObserver(Protocol):
    def request_ended(
        self, frontend: str, outcome: Outcome, result: GenerationResult | None
    ) -> None:
        """A request for a part ended: `frontend` is the requester's source
        ("discord", "api"); `result` has the timings when text was written."""


class NoObserver:
    def request_ended(
        self, frontend: str, outcome: Outcome, result: GenerationResult | None
    ) -> None:
        pass


_reporting: ContextVar[bool] = ContextVar("_reporting", default=False)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def reports_refusals(method: F) -> F:
    """Decorates a use-case that begins a run (a method of an object with an
    `observer`, taking the requester as `who`): a request it refuses is
    reported with the refusal's outcome, and one that joins another's run as
    "joined". A run it begins is reported by the service when the run ends.
    Use-cases call one another (continue_story calls continue_from): only the
    outermost reports, so each request counts once."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def reporting(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _reporting.get():
            return await method(self, *args, **kwargs)
        token = _reporting.set(True)
        try:
            result = await method(self, *args, **kwargs)
        except Exception as error:
            who = signature.bind(self, *args, **kwargs).arguments.get("who")
            self.observer.request_ended(getattr(who, "source", "unknown"), outcome_of(error), None)
            raise
        finally:
            _reporting.reset(token)
        if getattr(result, "new", True) is False:
            who = signature.bind(self, *args, **kwargs).arguments.get("who")
            self.observer.request_ended(getattr(who, "source", "unknown"), "joined", None)
        return result

    return reporting  # type: ignore[return-value]
