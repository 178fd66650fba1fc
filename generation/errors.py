"""Typed errors of the generation layer. Each carries a message fit for a user."""

from __future__ import annotations

import math

from generation.messages import N_


class GenerationError(Exception):
    """Base class: `str(error)` is a short sentence a person can read."""

    code = "generation_error"


class InvalidRequest(GenerationError):
    """Bad input, refused before anything is queued."""

    code = "invalid_request"


class PromptTooLong(InvalidRequest):
    """The prompt cannot fit GPT-2's context together with any continuation."""

    code = "prompt_too_long"


class Busy(GenerationError):
    """The queue is full; try again in about `retry_after` seconds."""

    code = "busy"

    def __init__(self, retry_after: float, reason: str = "the queue is full") -> None:
        self.retry_after = float(max(1, math.ceil(retry_after)))  # never too early
        super().__init__(f"Busy: {reason}, try again in about {self.retry_after:.0f} s.")


class Cancelled(GenerationError):
    code = "cancelled"

    def __init__(self, message: str = N_("The story was cancelled.")) -> None:
        super().__init__(message)


class TimedOut(GenerationError):
    code = "timeout"

    def __init__(self, message: str = N_("The story took too long and was stopped.")) -> None:
        super().__init__(message)


class PoolClosed(GenerationError):
    code = "shutting_down"

    def __init__(self, message: str = N_("storybot is shutting down; try again shortly.")) -> None:
        super().__init__(message)


class ModelLoadError(GenerationError):
    """A model folder is missing, partial or corrupt. Raised at start-up."""

    code = "model_load_error"


class EngineUnavailable(GenerationError):
    """A remote engine could not be reached, or stopped mid-story, after retries."""

    code = "engine_unavailable"

    def __init__(
        self,
        message: str = N_(
            "The story engine is not answering right now; please try again in a minute."
        ),
        retry_after: float = 30.0,
    ) -> None:
        self.retry_after = max(1.0, round(retry_after))
        super().__init__(message)


class EngineRefused(GenerationError):
    """A remote engine refused a request (a bad key, an unknown model, bad fields)."""

    code = "engine_refused"

    def __init__(
        self,
        message: str = N_("The story engine refused the request; the operator has been told."),
    ) -> None:
        super().__init__(message)


class EngineStartError(ModelLoadError):
    """The remote engine is unusable at start-up: one line saying why."""

    code = "engine_start_error"
