"""What each Discord server's admins decided, applied to every story there.

`ServerRules` answers the questions the story use-cases ask before they start
work in a server: may this channel be written in, is this genre enabled here,
is today's quota used up, may this person continue that story, which limits
hold for them. Admins change the settings through `update`, which checks each
value against the operator's bounds, logs the change and applies it at once.
Requests without a server (the HTTP interface, direct messages) get the
operator's defaults.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from generation.messages import N_
from storage.guilds import DAY_S, GuildStore
from storage.models import GuildCounts, GuildSettings, HiddenPart, ReportTally
from stories.errors import (
    ChannelClosed,
    GenreDisabled,
    InvalidSetting,
    NotAllowed,
    QuotaReached,
    SharingOff,
)
from stories.genres import GenreRegistry
from stories.moderation import ContentFilter, normalise_term

log = logging.getLogger(__name__)


def _reason(error: ValueError) -> str:
    """What a refused filter term's error says: the `Text` it was raised with,
    so a front-end can say it in another language."""
    return error.args[0] if error.args and isinstance(error.args[0], str) else str(error)


# How long a server the bot left keeps its settings (the README says so too).
KEEP_LEFT_SERVERS_S = 30 * DAY_S
MAX_COOLDOWN_S = 3600.0
MAX_DAILY_QUOTA = 100_000
MAX_REPORT_THRESHOLD = 100
MAX_CHANNELS = 100
MAX_FILTER_TERMS = 500
MIN_VOTE_S, MAX_VOTE_S = 10, 600


@dataclass(frozen=True)
class Length:
    label: str
    max_new_tokens: int
    min_new_tokens: int  # holds off end-of-text, so "long" is long


LENGTHS = {
    "short": Length(N_("Short (a paragraph)"), 60, 20),
    "medium": Length(N_("Medium"), 120, 50),
    "long": Length(N_("Long (several paragraphs)"), 250, 120),
}
DEFAULT_LENGTH = "medium"


@dataclass(frozen=True)
class Member:
    """Who is asking, as the server sees them (a Discord member)."""

    roles: tuple[int, ...] = ()
    admin: bool = False  # may manage the server


@dataclass(frozen=True)
class Limits:
    max_active: int  # stories one person may have queued or being written
    cooldown_s: float  # between two stories one person starts


def seconds_to_midnight_utc(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return DAY_S - now % DAY_S


class ServerRules:
    def __init__(
        self,
        guilds: GuildStore,
        genres: GenreRegistry,
        *,
        user_max_active: int,
        user_cooldown_s: float,
    ) -> None:
        self.guilds = guilds
        self.genres = genres
        self.user_max_active = user_max_active  # the operator's bounds
        self.user_cooldown_s = user_cooldown_s
        self._cache: dict[int, GuildSettings] = {}

    # ------------------------------------------------------------- reading
    async def settings(self, guild_id: int | None) -> GuildSettings | None:
        if guild_id is None:
            return None
        cached = self._cache.get(guild_id)
        if cached is None:
            cached = self._cache[guild_id] = await self.guilds.settings(guild_id)
        return cached

    def limits(self, settings: GuildSettings | None) -> Limits:
        """The server's per-member limits, never looser than the operator's."""
        if settings is None:
            return Limits(self.user_max_active, self.user_cooldown_s)
        active = settings.max_active or self.user_max_active
        cooldown = settings.cooldown_s if settings.cooldown_s is not None else 0.0
        return Limits(min(active, self.user_max_active), max(cooldown, self.user_cooldown_s))

    def content_filter(self, settings: GuildSettings | None) -> ContentFilter:
        """The built-in list, plus the server's own terms (cached per list)."""
        builtin = ContentFilter.builtin()
        if settings is None or not settings.filter_terms:
            return builtin
        return builtin.with_terms(settings.filter_terms)

    def length(self, settings: GuildSettings | None, chosen: str | None) -> Length:
        key = chosen or (settings.default_length if settings else None) or DEFAULT_LENGTH
        return LENGTHS.get(key, LENGTHS[DEFAULT_LENGTH])

    def enabled_genres(self, settings: GuildSettings | None) -> list[str]:
        keys = [genre.key for genre in self.genres]
        if settings is None or settings.genres is None:
            return keys
        return [key for key in keys if key in settings.genres]

    # -------------------------------------------------------------- checks
    def check_channel(self, settings: GuildSettings | None, channel_id: int | None) -> None:
        if settings is None or settings.channels is None or channel_id is None:
            return
        if channel_id not in settings.channels:
            raise ChannelClosed(
                N_(
                    "storybot does not write stories in this channel: "
                    "this server's admins chose other channels for it."
                )
            )

    def check_genre(self, settings: GuildSettings | None, key: str) -> None:
        if settings is None or settings.genres is None or key in settings.genres:
            return
        raise GenreDisabled(
            N_("The {genre} genre is not enabled in this server.", genre=self.genres.get(key).title)
        )

    def check_continue(
        self,
        settings: GuildSettings | None,
        member: Member,
        user_id: int | None,
        author: int | None,
    ) -> None:
        """Who may continue or reroll a story here (its author always may)."""
        if settings is None or user_id is None or user_id == author or member.admin:
            return
        if settings.continue_policy == "author":
            raise NotAllowed(N_("In this server only a story's author can continue it."))
        if settings.continue_policy == "role" and (
            settings.continue_role_id is None or settings.continue_role_id not in member.roles
        ):
            raise NotAllowed(
                N_("In this server only members with the storytellers' role can continue stories.")
            )

    def check_reroll(
        self,
        settings: GuildSettings | None,
        member: Member,
        user_id: int | None,
        author: int | None,
    ) -> None:
        """A new version of a part: its story's author, the server's admins, and
        where continuing takes a role, members with it."""
        if user_id is None or user_id == author or member.admin:
            return
        if (
            settings is not None
            and settings.continue_policy == "role"
            and settings.continue_role_id in member.roles
        ):
            return
        raise NotAllowed(N_("Only the story's author can reroll it."))

    def check_sharing(self, settings: GuildSettings | None) -> None:
        """Share links for the server's stories (always, outside a server)."""
        if settings is not None and not settings.sharing:
            raise SharingOff()

    async def take_story(self, settings: GuildSettings | None) -> None:
        """Count a new story against the server's daily quota (or refuse it)."""
        if settings is None:
            return
        if not await self.guilds.take_daily_story(settings.guild_id, settings.daily_quota):
            wait = seconds_to_midnight_utc()
            raise QuotaReached(
                N_(
                    "This server's {quota} stories for today are written; "
                    "more in {hours} h (at midnight UTC).",
                    quota=settings.daily_quota,
                    hours=f"{wait / 3600:.0f}",
                ),
                retry_after=wait,
            )

    async def give_back_story(self, settings: GuildSettings | None) -> None:
        if settings is not None:
            await self.guilds.give_back_daily_story(settings.guild_id)

    async def count(self, guild_id: int | None, counter: str) -> None:
        if guild_id is not None:
            await self.guilds.add_count(guild_id, counter)

    # ------------------------------------------------------------- admins
    async def update(self, guild_id: int, by: int, **changes: Any) -> GuildSettings:
        """Apply an admin's change after checking it; raises InvalidSetting with
        a message for the admin."""
        checked = {name: self._check(name, value) for name, value in changes.items()}
        settings = await self.guilds.update(guild_id, **checked)
        self._cache[guild_id] = settings
        for name, value in checked.items():
            log.info("guild %d: %s set to %r by %d", guild_id, name, value, by)
        return settings

    async def forget_cached(self, guild_id: int) -> None:
        self._cache.pop(guild_id, None)

    def _check(self, name: str, value: Any) -> Any:
        if name == "genres":
            if value is None:
                return None
            unknown = [key for key in value if key not in self.genres]
            if unknown:
                raise InvalidSetting(N_("Unknown genre: {genres}.", genres=", ".join(unknown)))
            if not value:
                raise InvalidSetting(N_("At least one genre must stay enabled."))
            return tuple(dict.fromkeys(value))
        if name == "channels":
            if value is None:
                return None
            if not value:
                raise InvalidSetting(N_("At least one channel must stay open to stories."))
            if len(value) > MAX_CHANNELS:
                raise InvalidSetting(N_("At most {count} channels.", count=MAX_CHANNELS))
            return tuple(dict.fromkeys(int(c) for c in value))
        if name == "cooldown_s":
            if value is None:
                return None
            if not self.user_cooldown_s <= value <= MAX_COOLDOWN_S:
                raise InvalidSetting(
                    N_(
                        "The cooldown must be between {low} s (this bot's minimum) and {high} s.",
                        low=f"{self.user_cooldown_s:g}",
                        high=f"{MAX_COOLDOWN_S:g}",
                    )
                )
            return float(value)
        if name == "max_active":
            if value is None:
                return None
            if not 1 <= value <= self.user_max_active:
                raise InvalidSetting(
                    N_(
                        "Stories at once per member must be between 1 and {high} "
                        "(this bot's maximum).",
                        high=self.user_max_active,
                    )
                )
            return int(value)
        if name == "daily_quota":
            if value is None:
                return None
            if not 1 <= value <= MAX_DAILY_QUOTA:
                raise InvalidSetting(
                    N_("The daily quota must be between 1 and {high}.", high=MAX_DAILY_QUOTA)
                )
            return int(value)
        if name == "continue_policy":
            if value not in ("anyone", "author", "role"):
                raise InvalidSetting(N_("Who may continue: anyone, author or role."))
            return value
        if name == "continue_role_id":
            return None if value is None else int(value)
        if name == "default_length":
            if value is not None and value not in LENGTHS:
                raise InvalidSetting(
                    N_("The length must be one of {lengths}.", lengths=", ".join(LENGTHS))
                )
            return value
        if name in ("report_threshold", "admin_report_threshold"):
            if not 1 <= value <= MAX_REPORT_THRESHOLD:
                raise InvalidSetting(
                    N_(
                        "A report threshold must be between 1 and {high}.",
                        high=MAX_REPORT_THRESHOLD,
                    )
                )
            return int(value)
        if name in ("notes_by_anyone", "vote_by_default"):
            return bool(value)
        if name == "vote_seconds":
            if not MIN_VOTE_S <= value <= MAX_VOTE_S:
                raise InvalidSetting(
                    N_(
                        "A vote lasts between {low} and {high} seconds.",
                        low=MIN_VOTE_S,
                        high=MAX_VOTE_S,
                    )
                )
            return int(value)
        if name == "sharing":
            if not isinstance(value, bool):
                raise InvalidSetting(N_("Sharing is on or off."))
            return value
        if name == "filter_terms":
            if len(value) > MAX_FILTER_TERMS:
                raise InvalidSetting(
                    N_("At most {count} filter terms per server.", count=MAX_FILTER_TERMS)
                )
            try:  # stored as matched: case, accents and look-alikes folded
                return tuple(dict.fromkeys(normalise_term(term) for term in value))
            except ValueError as error:
                raise InvalidSetting(
                    N_("That term cannot be filtered: {reason}", reason=_reason(error))
                ) from None
        raise InvalidSetting(N_("There is no setting {name}.", name=repr(name)))

    async def counts(self, guild_id: int) -> tuple[GuildCounts, GuildCounts]:
        """Today's counts and the last 30 days'."""
        return await self.guilds.counts(guild_id, 1), await self.guilds.counts(guild_id, 30)

    # ------------------------------------------------------------ reports
    async def report(
        self, guild_id: int | None, part_id: int, user_id: int, member: Member
    ) -> ReportTally:
        settings = await self.settings(guild_id) or GuildSettings(0)
        tally = await self.guilds.report(
            part_id,
            user_id,
            admin=member.admin,
            members_hide=settings.report_threshold,
            admins_hide=settings.admin_report_threshold,
        )
        if tally.new:
            await self.count(guild_id, "reports")
        return tally

    async def hidden_parts(self, guild_id: int) -> list[HiddenPart]:
        return await self.guilds.hidden_parts(guild_id)

    async def left(self, guild_id: int) -> None:
        await self.guilds.left(guild_id)
        self._cache.pop(guild_id, None)

    async def joined(self, guild_id: int) -> None:
        await self.guilds.joined(guild_id)
        self._cache.pop(guild_id, None)

    async def forget_servers_left_long_ago(self) -> list[int]:
        gone = await self.guilds.forget_left_before(time.time() - KEEP_LEFT_SERVERS_S)
        for guild_id in gone:
            self._cache.pop(guild_id, None)
            log.info("guild %d: settings deleted, %d days after the bot left", guild_id, 30)
        return gone
