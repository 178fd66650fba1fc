"""Errors of the story use-cases, each with a short message for the user.

Front-ends map these (and the generation and storage errors) to replies: the
HTTP interface to status codes, the bot to private messages and notices.
"""

from __future__ import annotations

from generation.messages import N_


class StoryError(Exception):
    """Base class: `str(error)` is a short sentence a person can read."""

    code = "story_error"


class InvalidPrompt(StoryError):
    """The person's first line cannot start a story; each front-end shows this
    one message (the HTTP interface with status 422)."""

    code = "invalid_prompt"


class EmptyPrompt(InvalidPrompt):
    code = "empty_input"

    def __init__(self) -> None:
        super().__init__(N_("The prompt is empty: give the story a first line."))


class OverlongPrompt(InvalidPrompt):
    code = "input_too_long"

    def __init__(self, limit: int) -> None:
        super().__init__(N_("The prompt is too long: at most {limit} characters.", limit=limit))


class ControlCharacter(InvalidPrompt):
    code = "control_character"

    def __init__(self, character: str) -> None:
        super().__init__(
            N_(
                "The prompt contains an invisible control character ({code}); "
                "remove it and try again.",
                code=f"U+{ord(character):04X}",
            )
        )


class InvalidNotes(InvalidPrompt):
    """A story's memory or author's note is too long or holds control characters."""

    code = "invalid_notes"


class ContentFiltered(InvalidPrompt):
    """The content filter refused a prompt. The message never says which word."""

    code = "content_filtered"

    def __init__(self, message: str = N_("The content filter refused this prompt.")) -> None:
        super().__init__(message)


class NotAllowed(StoryError):
    code = "forbidden"


class ChannelClosed(NotAllowed):
    """The server's admins keep stories out of this channel."""

    code = "channel_closed"


class GenreDisabled(NotAllowed):
    code = "genre_disabled"


class SharingOff(NotAllowed):
    """The server's admins turned share links off."""

    code = "sharing_disabled"

    def __init__(
        self, message: str = N_("This server's admins have turned sharing stories off.")
    ) -> None:
        super().__init__(message)


class InvalidSetting(StoryError):
    """An admin's setting out of its bounds; the message says which bounds."""

    code = "invalid_setting"


class AgeRestricted(StoryError):
    code = "age_restricted"


class UserLimit(StoryError):
    code = "user_limit"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaReached(UserLimit):
    """The server's stories for today are written."""

    code = "daily_quota"


class NothingToContinue(StoryError):
    code = "nothing_to_continue"


class PartHidden(NothingToContinue):
    """The part was hidden after reports; an admin may restore it."""

    code = "part_hidden"

    def __init__(
        self,
        message: str = N_("That part was removed after reports; it cannot be continued."),
    ) -> None:
        super().__init__(message)


class Conflict(StoryError):
    """Someone else's work on the same part is in the way; try again after it."""

    code = "conflict"


class WritingElsewhere(Conflict):
    """Another storybot process (sharing the database) is writing the next part
    of this part already: it shows it; this one cannot join it."""

    code = "writing_elsewhere"

    def __init__(self) -> None:
        super().__init__(N_("Someone is writing the next part already."))


class StillWriting(Conflict):
    """The part to continue after is still being written."""

    code = "still_writing"


class StoryDeleted(StoryError):
    """The story was deleted while a part of it was being written."""

    code = "story_deleted"

    def __init__(self, message: str = N_("The story was deleted.")) -> None:
        super().__init__(message)
