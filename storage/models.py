"""Rows as frozen dataclasses: what crosses the storage boundary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

# The state of a run (one generation); a story's status is derived from its runs.
Status = Literal["queued", "generating", "done", "failed", "cancelled", "interrupted"]
STATUSES: tuple[Status, ...] = (
    "queued",
    "generating",
    "done",
    "failed",
    "cancelled",
    "interrupted",
)
UNFINISHED: tuple[Status, ...] = ("queued", "generating")
Source = Literal["discord", "api"]
PartKind = Literal["prompt", "generated"]
RunKind = Literal["start", "continue", "reroll"]


@dataclass(frozen=True)
class Story:
    id: int
    author_id: int | None
    source: Source
    guild_id: int | None
    channel_id: int | None
    genre: str
    title: str
    status: Status
    created_at: float
    updated_at: float
    memory: str = ""  # who and where: at the top of the context
    authors_note: str = ""  # tone, what should happen: near the end of the context

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author_id": str(self.author_id) if self.author_id is not None else None,
            "source": self.source,
            "guild_id": str(self.guild_id) if self.guild_id is not None else None,
            "channel_id": str(self.channel_id) if self.channel_id is not None else None,
            "genre": self.genre,
            "title": self.title,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "memory": self.memory,
            "authors_note": self.authors_note,
        }


@dataclass(frozen=True)
class Part:
    id: int
    story_id: int
    parent_id: int | None
    kind: PartKind
    text: str
    requested_by: int | None
    params: dict[str, Any] | None
    seed: int | None
    model_id: str | None
    prompt_tokens: int | None
    new_tokens: int | None
    queued_s: float | None
    generation_s: float | None
    finish_reason: str | None
    created_at: float
    masked: bool = False  # the content filter masked words in it
    hidden: bool = False  # hidden after reports, until an admin restores it
    memory: str | None = None  # the story's notes when this part was written
    authors_note: str | None = None
    candidate: bool = False  # a vote's option not (or not yet) chosen: never followed

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "kind": self.kind,
            "text": self.text,
            "requested_by": str(self.requested_by) if self.requested_by is not None else None,
            "params": self.params,
            "seed": self.seed,
            "model_id": self.model_id,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "queued_s": self.queued_s,
            "generation_s": self.generation_s,
            "finish_reason": self.finish_reason,
            "created_at": self.created_at,
            "masked": self.masked,
            "memory": self.memory,
            "authors_note": self.authors_note,
            "candidate": self.candidate,
        }


@dataclass(frozen=True)
class RunRecord:
    """One generation as the database knows it: what it writes, for whom, how far."""

    id: int
    story_id: int
    parent_id: int  # the part it writes after
    kind: RunKind
    replaces_id: int | None  # reroll: the part it writes a new version of
    requested_by: int | None
    state: Status
    seed: int | None
    part_id: int | None  # the part it wrote, once done
    error: str | None
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED


@dataclass(frozen=True)
class MessageRecord:
    """A Discord message of the bot's, what it should show, and what it shows."""

    message_id: int
    channel_id: int
    story_id: int | None
    run_id: int | None
    part_id: int | None  # the part it shows (None: a run, or nothing any more)
    chunk: int  # which piece of a long part
    shows: str  # what Discord displays now, as last confirmed
    wants: str  # what the database says it should display
    vote_id: int | None = None  # the vote whose ballot it holds


@dataclass(frozen=True)
class GeneratedPart:
    """What a caller hands `add_part`: a generated text and how it was made."""

    text: str
    requested_by: int | None = None
    params: dict[str, Any] | None = None
    seed: int | None = None
    model_id: str | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    queued_s: float | None = None
    generation_s: float | None = None
    finish_reason: str | None = None
    masked: bool = False  # the content filter masked words in `text`
    memory: str | None = None  # the notes it was written with
    authors_note: str | None = None


ContinuePolicy = Literal["anyone", "author", "role"]


@dataclass(frozen=True)
class GuildSettings:
    """What a server's admins chose. None: the operator's default (for genres
    and channels: all of them)."""

    guild_id: int
    genres: tuple[str, ...] | None = None  # genre keys enabled
    channels: tuple[int, ...] | None = None  # channels the bot writes in
    cooldown_s: float | None = None
    max_active: int | None = None
    daily_quota: int | None = None  # stories a day for the whole server
    continue_policy: ContinuePolicy = "anyone"
    continue_role_id: int | None = None
    default_length: str | None = None
    filter_terms: tuple[str, ...] = ()  # the server's own terms, on top of the built-in list
    report_threshold: int = 3  # members' reports that hide a part
    admin_report_threshold: int = 1  # admins' reports that hide a part
    notes_by_anyone: bool = False  # anyone in the channel may edit a story's notes
    vote_by_default: bool = False  # Continue and ➕ start a vote on what happens next
    vote_seconds: int = 60  # how long a vote is open
    left_at: float | None = None  # when the bot left the server
    sharing: bool = True  # stories may get a public web page (a share link)


GUILD_SETTINGS_FIELDS = (
    "genres",
    "channels",
    "cooldown_s",
    "max_active",
    "daily_quota",
    "continue_policy",
    "continue_role_id",
    "default_length",
    "filter_terms",
    "report_threshold",
    "admin_report_threshold",
    "notes_by_anyone",
    "vote_by_default",
    "vote_seconds",
    "sharing",
)


@dataclass(frozen=True)
class GuildCounts:
    """A server's counts over some days (the daily quota uses today's stories)."""

    days: int
    stories: int = 0
    refused: int = 0  # prompts the filter refused
    masked: int = 0  # generated parts the filter masked
    reports: int = 0
    hidden: int = 0  # parts hidden after reports


GUILD_COUNTERS = ("stories", "refused", "masked", "reports", "hidden")


@dataclass(frozen=True)
class ReportTally:
    """The reports a part has, after one more."""

    members: int
    admins: int
    new: bool  # False: this person had reported it already
    hidden: bool  # the part is hidden now


@dataclass(frozen=True)
class HiddenPart:
    """A part hidden after reports, for the admins of the server it was in."""

    part: Part
    story: Story
    reports: int


@dataclass(frozen=True)
class StorySummary:
    story: Story
    part_count: int


@dataclass(frozen=True)
class StoryPage:
    items: list[StorySummary]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Deleted:
    stories: int
    parts: int
    messages: int


def part_from_row(row: Any) -> Part:
    params = json.loads(row["params"]) if row["params"] else None
    return Part(
        id=row["id"],
        story_id=row["story_id"],
        parent_id=row["parent_id"],
        kind=row["kind"],
        text=row["text"],
        requested_by=row["requested_by"],
        params=params,
        seed=row["seed"],
        model_id=row["model_id"],
        prompt_tokens=row["prompt_tokens"],
        new_tokens=row["new_tokens"],
        queued_s=row["queued_s"],
        generation_s=row["generation_s"],
        finish_reason=row["finish_reason"],
        created_at=row["created_at"],
        masked=bool(row["masked"]),
        hidden=bool(row["hidden"]),
        memory=row["memory"],
        authors_note=row["authors_note"],
        candidate=bool(row["candidate"]),
    )


def guild_settings_from_row(row: Any) -> GuildSettings:
    genres = json.loads(row["genres"]) if row["genres"] is not None else None
    channels = json.loads(row["channels"]) if row["channels"] is not None else None
    return GuildSettings(
        guild_id=row["guild_id"],
        genres=tuple(genres) if genres is not None else None,
        channels=tuple(int(c) for c in channels) if channels is not None else None,
        cooldown_s=row["cooldown_s"],
        max_active=row["max_active"],
        daily_quota=row["daily_quota"],
        continue_policy=row["continue_policy"],
        continue_role_id=row["continue_role_id"],
        default_length=row["default_length"],
        filter_terms=tuple(json.loads(row["filter_terms"])),
        report_threshold=row["report_threshold"],
        admin_report_threshold=row["admin_report_threshold"],
        notes_by_anyone=bool(row["notes_by_anyone"]),
        vote_by_default=bool(row["vote_by_default"]),
        vote_seconds=int(row["vote_seconds"]),
        left_at=row["left_at"],
        sharing=bool(row["sharing"]),
    )


def run_from_row(row: Any) -> RunRecord:
    return RunRecord(
        id=row["id"],
        story_id=row["story_id"],
        parent_id=row["parent_id"],
        kind=row["kind"],
        replaces_id=row["replaces_id"],
        requested_by=row["requested_by"],
        state=row["state"],
        seed=row["seed"],
        part_id=row["part_id"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def message_from_row(row: Any) -> MessageRecord:
    return MessageRecord(
        message_id=row["message_id"],
        channel_id=row["channel_id"],
        story_id=row["story_id"],
        run_id=row["run_id"],
        part_id=row["part_id"],
        chunk=row["chunk"],
        shows=row["shows"],
        wants=row["wants"],
        vote_id=row["vote_id"],
    )


def story_from_row(row: Any) -> Story:
    return Story(
        id=row["id"],
        author_id=row["author_id"],
        source=row["source"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        genre=row["genre"],
        title=row["title"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        memory=row["memory"],
        authors_note=row["authors_note"],
    )
