"""Errors of the story use-cases, each with a short message for the user.

Front-ends map these (and the generation and storage errors) to replies: the
HTTP interface to status codes, the bot to ephemeral messages.
"""

from __future__ import annotations

from generation.errors import GenerationError


class StoryError(GenerationError):
    code = "story_error"


class NotAllowed(StoryError):
    code = "forbidden"


class AgeRestricted(StoryError):
    code = "age_restricted"


class UserLimit(StoryError):
    code = "user_limit"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NothingToContinue(StoryError):
    code = "nothing_to_continue"
