"""`/storyadmin`: a server's admins choose how storybot behaves there.

Only members who may manage the server see the command group (Discord hides it
from the others through `default_member_permissions`), and the bot checks the
permission again, since a server can grant commands to other roles. Every
change is checked by the story service's rules, answered privately with what
now holds, logged there with who made it, and applies at once. Answers are in
the admin's language, the command's descriptions in the server members'
(bot.i18n).
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.i18n import Messages, for_person
from bot.views import ErrorHandler, GuardedView
from generation.messages import N_
from storage.models import GuildCounts, GuildSettings, HiddenPart
from stories.moderation import normalise_term
from stories.servers import LENGTHS
from stories.service import Requester, StoryService

log = logging.getLogger(__name__)

ALL = "*"  # the genre choice that enables every genre again
# A length in the middle of a sentence ("A story here is short (a paragraph)...").
LENGTH_PHRASES = {
    "short": N_("short (a paragraph)"),
    "medium": N_("medium"),
    "long": N_("long (several paragraphs)"),
}


def _names(keys: tuple[str, ...] | list[str], titles: dict[str, str]) -> str:
    return ", ".join(titles.get(key, key) for key in keys)


def describe_settings(
    t: Messages,
    settings: GuildSettings,
    titles: dict[str, str],
    today: GuildCounts,
    month: GuildCounts,
    hidden: int,
    bounds: tuple[int, float],
) -> str:
    """Everything that holds in a server, for its admins."""
    max_active, cooldown = bounds
    genres = t._("all") if settings.genres is None else _names(settings.genres, titles)
    channels = (
        t._("all channels")
        if settings.channels is None
        else ", ".join(f"<#{c}>" for c in settings.channels)
    )
    who = {
        "anyone": t._("anyone"),
        "author": t._("the story's author only"),
        "role": t._("members with {role}", role=f"<@&{settings.continue_role_id}>"),
    }[settings.continue_policy]
    quota = (
        t._("none")
        if settings.daily_quota is None
        else t._("{count} stories a day", count=settings.daily_quota)
    )
    cooldown_s = settings.cooldown_s if settings.cooldown_s is not None else cooldown
    length = LENGTH_PHRASES.get(settings.default_length or "medium", LENGTH_PHRASES["medium"])
    lines = [
        t._("**storybot in this server**"),
        t._("- Genres: {genres}", genres=genres),
        t._("- Writes in: {channels}", channels=channels),
        t._(
            "- Per member: {count} stories at once, {seconds} s between two stories",
            count=settings.max_active or max_active,
            seconds=f"{cooldown_s:g}",
        ),
        t._("- Daily quota: {quota} (today: {today})", quota=quota, today=today.stories),
        t._("- Who may continue: {who} (and the admins)", who=who),
        t._("- Default length: {length}", length=t._(length)),
        t._("- Story notes edited by: anyone")
        if settings.notes_by_anyone
        else t._("- Story notes edited by: the author"),
        t._("- Votes: for every Continue, {seconds} s", seconds=settings.vote_seconds)
        if settings.vote_by_default
        else t._("- Votes: by the Vote button, {seconds} s", seconds=settings.vote_seconds),
        t.n_(
            "- Filter: the built-in list and {count} term of this server",
            "- Filter: the built-in list and {count} terms of this server",
            len(settings.filter_terms),
        ),
        t._(
            "- Reports that hide a part: {members} from members, {admins} from admins",
            members=settings.report_threshold,
            admins=settings.admin_report_threshold,
        ),
        t._("- Share links (a story's web page): on")
        if settings.sharing
        else t._("- Share links (a story's web page): off"),
        t._(
            "**Moderation** (today / 30 days): prompts refused {refused} / {refused_30}, "
            "parts masked {masked} / {masked_30}, reports {reports} / {reports_30}, "
            "parts hidden {hidden} / {hidden_30}; hidden now: {hidden_now}",
            refused=today.refused,
            refused_30=month.refused,
            masked=today.masked,
            masked_30=month.masked,
            reports=today.reports,
            reports_30=month.reports,
            hidden=today.hidden,
            hidden_30=month.hidden,
            hidden_now=hidden,
        ),
    ]
    return "\n".join(lines)


class HiddenView(GuardedView):
    """The server's hidden parts: pick one, then restore or delete it."""

    def __init__(
        self, admin: AdminHandlers, owner: int, hidden: list[HiddenPart], t: Messages
    ) -> None:
        super().__init__(owner, admin.on_error, timeout=900, t=t)
        self.admin = admin
        self.selected: int | None = None
        self.pick.placeholder = t._("Choose a hidden part")
        self.restore.label = t._("Restore")
        self.delete.label = t._("Delete")
        self.pick.options = [
            discord.SelectOption(
                label=t._(
                    "Story #{story} · part {part} · {count} report(s)",
                    story=h.story.id,
                    part=h.part.id,
                    count=h.reports,
                )[:100],
                description=h.part.text.strip()[:100] or t._("(empty)"),
                value=str(h.part.id),
            )
            for h in hidden[:25]
        ]

    @discord.ui.select(cls=discord.ui.Select, placeholder="Choose a hidden part", row=0)
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        self.selected = int(select.values[0])
        await interaction.response.defer()

    @discord.ui.button(label="Restore", style=discord.ButtonStyle.primary, row=1)
    async def restore(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await self.admin.decide(interaction, self.selected, restore=True)

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger, row=1)
    async def delete(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await self.admin.decide(interaction, self.selected, restore=False)


class AdminHandlers:
    """What the /storyadmin commands do: one service call each, then an answer."""

    def __init__(
        self,
        service: StoryService,
        *,
        on_error: ErrorHandler,
        requester: Any,
        refresh: Any,
    ) -> None:
        self.service = service
        self.rules = service.servers
        self.on_error = on_error
        self._requester = requester  # interaction -> Requester
        self._refresh = refresh  # brings the channel's messages up to date

    @property
    def titles(self) -> dict[str, str]:
        return {genre.key: genre.title for genre in self.service.genres}

    async def _answer(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True)

    async def _set(self, interaction: discord.Interaction, **changes: Any) -> GuildSettings:
        assert interaction.guild_id is not None  # guild_only
        return await self.rules.update(interaction.guild_id, interaction.user.id, **changes)

    async def _change(
        self, interaction: discord.Interaction, missing: str, **given: Any
    ) -> GuildSettings | None:
        """Set the options the command was given (None: not given); given none,
        answer `missing`, what to give, and return None."""
        changes = {name: value for name, value in given.items() if value is not None}
        if not changes:
            await self._answer(interaction, missing)
            return None
        return await self._set(interaction, **changes)

    async def _settings(self, interaction: discord.Interaction) -> GuildSettings:
        settings = await self.rules.settings(interaction.guild_id)
        assert settings is not None  # guild_only
        return settings

    # ------------------------------------------------------------ commands
    async def show(self, interaction: discord.Interaction) -> None:
        settings = await self._settings(interaction)
        today, month = await self.rules.counts(settings.guild_id)
        hidden = await self.rules.hidden_parts(settings.guild_id)
        bounds = (self.rules.user_max_active, self.rules.user_cooldown_s)
        await self._answer(
            interaction,
            describe_settings(
                for_person(interaction), settings, self.titles, today, month, len(hidden), bounds
            ),
        )

    async def genre(self, interaction: discord.Interaction, name: str, enabled: bool) -> None:
        settings = await self._settings(interaction)
        t = for_person(interaction)
        if name == ALL:
            await self._set(interaction, genres=None if enabled else [])
            await self._answer(interaction, t._("Every genre is enabled here now."))
            return
        if name not in self.service.genres:
            await self._answer(interaction, t._("There is no genre {name}.", name=repr(name)))
            return
        current = self.rules.enabled_genres(settings)
        if enabled:
            wanted = current if name in current else [*current, name]
        else:
            wanted = [key for key in current if key != name]
        settings = await self._set(interaction, genres=wanted)
        listed = _names(self.rules.enabled_genres(settings), self.titles)
        await self._answer(
            interaction,
            t._(
                "{genre} is enabled here now. Enabled: {genres}.",
                genre=self.titles[name],
                genres=listed,
            )
            if enabled
            else t._(
                "{genre} is disabled here now. Enabled: {genres}.",
                genre=self.titles[name],
                genres=listed,
            ),
        )

    async def channel(
        self, interaction: discord.Interaction, channel: discord.abc.GuildChannel, allowed: bool
    ) -> None:
        settings = await self._settings(interaction)
        t = for_person(interaction)
        current = list(settings.channels or [])
        if settings.channels is None and allowed:
            await self._answer(
                interaction,
                t._(
                    "storybot writes in every channel already, {channel} too.",
                    channel=channel.mention,
                ),
            )
            return
        if settings.channels is None:  # all but this one: list the others that can hold stories
            guild = interaction.guild
            assert guild is not None
            current = [c.id for c in guild.text_channels if c.id != channel.id]
        elif allowed and channel.id not in current:
            current.append(channel.id)
        elif not allowed:
            current = [c for c in current if c != channel.id]
        settings = await self._set(interaction, channels=current)
        listed = ", ".join(f"<#{c}>" for c in settings.channels or ())
        await self._answer(
            interaction,
            t._(
                "storybot now writes in {channel}. It writes in: {channels}.",
                channel=channel.mention,
                channels=listed,
            )
            if allowed
            else t._(
                "storybot no longer writes in {channel}. It writes in: {channels}.",
                channel=channel.mention,
                channels=listed,
            ),
        )

    async def all_channels(self, interaction: discord.Interaction) -> None:
        await self._set(interaction, channels=None)
        await self._answer(
            interaction, for_person(interaction)._("storybot writes in every channel here now.")
        )

    async def limits(
        self,
        interaction: discord.Interaction,
        cooldown: int | None,
        per_member: int | None,
        daily_quota: int | None,
    ) -> None:
        changes: dict[str, Any] = {}
        if cooldown is not None:
            changes["cooldown_s"] = float(cooldown)
        if per_member is not None:
            changes["max_active"] = per_member
        if daily_quota is not None:
            changes["daily_quota"] = daily_quota or None  # 0: no quota
        t = for_person(interaction)
        if not changes:
            await self._answer(interaction, t._("Give a cooldown, a per-member limit or a quota."))
            return
        settings = await self._set(interaction, **changes)
        limits = self.rules.limits(settings)
        each = t._(
            "Per member: {count} stories at once, {seconds} s between two;",
            count=limits.max_active,
            seconds=f"{limits.cooldown_s:g}",
        )
        quota = (
            t._("{quota} daily quota for the server.", quota=settings.daily_quota)
            if settings.daily_quota
            else t._("no daily quota for the server.")
        )
        await self._answer(interaction, f"{each} {quota}")

    async def continuing(
        self, interaction: discord.Interaction, who: str, role: discord.Role | None
    ) -> None:
        t = for_person(interaction)
        if who == "role" and role is None:
            await self._answer(
                interaction, t._("Name the role whose members may continue stories.")
            )
            return
        await self._set(
            interaction, continue_policy=who, continue_role_id=role.id if role else None
        )
        if who == "anyone":
            said = t._("Anyone may continue a story here now.")
        elif who == "author":
            said = t._("Only a story's author (and the admins) may continue it here now.")
        else:
            said = t._(
                "Only members with {role} (and authors and admins) may continue stories here now.",
                role=role.mention if role else "",
            )
        await self._answer(interaction, said)

    async def length(self, interaction: discord.Interaction, default: str) -> None:
        await self._set(interaction, default_length=default)
        t = for_person(interaction)
        await self._answer(
            interaction,
            t._(
                "A story here is {length} unless its author chooses.",
                length=t._(LENGTH_PHRASES[default]),
            ),
        )

    async def filter(self, interaction: discord.Interaction, action: str, term: str | None) -> None:
        settings = await self._settings(interaction)
        terms = list(settings.filter_terms)
        t = for_person(interaction)
        if action == "list":
            shown = ", ".join(f"||{term}||" for term in terms) or t._("none")
            await self._answer(
                interaction, t._("This server's own filter terms: {terms}.", terms=shown)
            )
            return
        if not term or not term.strip():
            await self._answer(interaction, t._("Give the term to add or remove."))
            return
        try:  # compared as the filter matches: case, accents, look-alikes folded
            term = normalise_term(term)
        except ValueError as error:
            await self._answer(
                interaction, t._("That term cannot be filtered: {reason}", reason=t.error(error))
            )
            return
        if action == "add":
            if term in terms:
                await self._answer(interaction, t._("That term is on the list already."))
                return
            terms.append(term)
        else:
            if term not in terms:
                await self._answer(interaction, t._("That term is not on this server's list."))
                return
            terms.remove(term)
        settings = await self._set(interaction, filter_terms=terms)
        count = len(settings.filter_terms)
        await self._answer(
            interaction,
            t._(
                "Term added to the filter; this server has {count} of its own "
                "on top of the built-in list.",
                count=count,
            )
            if action == "add"
            else t._(
                "Term removed from the filter; this server has {count} of its own "
                "on top of the built-in list.",
                count=count,
            ),
        )

    async def reports(
        self, interaction: discord.Interaction, members: int | None, admins: int | None
    ) -> None:
        t = for_person(interaction)
        settings = await self._change(
            interaction,
            t._("Give how many reports hide a part."),
            report_threshold=members,
            admin_report_threshold=admins,
        )
        if settings is None:
            return
        await self._answer(
            interaction,
            t._(
                "A part is hidden after {members} reports from members or {admins} from admins.",
                members=settings.report_threshold,
                admins=settings.admin_report_threshold,
            ),
        )

    async def notes(self, interaction: discord.Interaction, anyone: bool) -> None:
        await self._set(interaction, notes_by_anyone=anyone)
        t = for_person(interaction)
        await self._answer(
            interaction,
            t._("Anyone here may now edit a story's memory and author's note.")
            if anyone
            else t._("Only a story's author (and the admins) may edit its notes here now."),
        )

    async def votes(
        self, interaction: discord.Interaction, by_default: bool | None, seconds: int | None
    ) -> None:
        t = for_person(interaction)
        settings = await self._change(
            interaction,
            t._("Say whether voting is the default, or how long."),
            vote_by_default=by_default,
            vote_seconds=seconds,
        )
        if settings is None:
            return
        await self._answer(
            interaction,
            t._(
                "Continue and ➕ start a vote here; a vote lasts {seconds} s.",
                seconds=settings.vote_seconds,
            )
            if settings.vote_by_default
            else t._(
                "Continue writes the next part at once; the Vote button starts a vote; "
                "a vote lasts {seconds} s.",
                seconds=settings.vote_seconds,
            ),
        )

    async def sharing(self, interaction: discord.Interaction, enabled: bool) -> None:
        await self._set(interaction, sharing=enabled)
        t = for_person(interaction)
        await self._answer(
            interaction,
            t._("Authors can share their stories here as web pages now (a Share button).")
            if enabled
            else t._(
                "Sharing is off here now: no new links, and the pages of this server's "
                "stories are gone until it is on again."
            ),
        )

    async def hidden(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        found = await self.rules.hidden_parts(interaction.guild_id)
        t = for_person(interaction)
        if not found:
            await self._answer(interaction, t._("No part is hidden in this server."))
            return
        view = HiddenView(self, interaction.user.id, found, t)
        await interaction.response.send_message(
            t._("{count} hidden part(s). Choose one, then Restore or Delete.", count=len(found)),
            view=view,
            ephemeral=True,
        )

    async def decide(
        self, interaction: discord.Interaction, part_id: int | None, *, restore: bool
    ) -> None:
        t = for_person(interaction)
        if part_id is None:
            await self._answer(interaction, t._("Choose a part first."))
            return
        who: Requester = self._requester(interaction)
        if restore:
            await self.service.restore_part(part_id, who)
            text = t._("Part {part} is shown again.", part=part_id)
        else:
            deleted = await self.service.delete_part(part_id, who)
            text = t._(
                "Part {part} is deleted ({count} part(s) with what followed it).",
                part=part_id,
                count=deleted,
            )
        await interaction.response.edit_message(content=text, view=None)
        self._refresh()


def admin_group(admin: AdminHandlers) -> app_commands.Group:
    """The /storyadmin commands, bound to their handlers."""
    group = app_commands.Group(
        name="storyadmin",
        description=locale_str("Server settings for storybot (Manage Server)"),
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )
    manage = app_commands.checks.has_permissions(manage_guild=True)
    lengths = [
        app_commands.Choice(name=locale_str(size.label), value=key) for key, size in LENGTHS.items()
    ]

    @group.command(
        name="show", description=locale_str("What holds in this server, and the moderation counts")
    )
    @manage
    async def show(interaction: discord.Interaction) -> None:
        await admin.show(interaction)

    async def genre_names(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        everything = for_person(interaction)._("All genres")
        choices = [app_commands.Choice(name=everything, value=ALL)] + [
            app_commands.Choice(name=genre.title[:100], value=genre.key)
            for genre in admin.service.genres
        ]
        typed = current.casefold()
        return [c for c in choices if typed in c.name.casefold() or typed in c.value][:25]

    @group.command(name="genre", description=locale_str("Enable or disable a genre here"))
    @app_commands.describe(name=locale_str("The genre (or all)"), enabled=locale_str("On or off"))
    @app_commands.autocomplete(name=genre_names)
    @manage
    async def genre(interaction: discord.Interaction, name: str, enabled: bool) -> None:
        await admin.genre(interaction, name, enabled)

    @group.command(
        name="channel", description=locale_str("Let storybot write in a channel, or not")
    )
    @app_commands.describe(
        channel=locale_str("The channel"), allowed=locale_str("Stories there or not")
    )
    @manage
    async def channel(
        interaction: discord.Interaction, channel: discord.TextChannel, allowed: bool
    ) -> None:
        await admin.channel(interaction, channel, allowed)

    @group.command(
        name="allchannels", description=locale_str("Let storybot write in every channel")
    )
    @manage
    async def allchannels(interaction: discord.Interaction) -> None:
        await admin.all_channels(interaction)

    @group.command(
        name="limits", description=locale_str("Per-member limits and the server's daily quota")
    )
    @app_commands.describe(
        cooldown=locale_str("Seconds between two stories of one member"),
        per_member=locale_str("Stories one member may have going at once"),
        daily_quota=locale_str("Stories a day for the whole server (0: no quota)"),
    )
    @manage
    async def limits(
        interaction: discord.Interaction,
        cooldown: app_commands.Range[int, 0, 3600] | None = None,
        per_member: app_commands.Range[int, 1, 100] | None = None,
        daily_quota: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        await admin.limits(interaction, cooldown, per_member, daily_quota)

    @group.command(name="continuing", description=locale_str("Who may continue others' stories"))
    @app_commands.describe(
        who=locale_str("Anyone, the author only, or members with a role"),
        role=locale_str("The role"),
    )
    @app_commands.choices(
        who=[
            app_commands.Choice(name=locale_str("Anyone"), value="anyone"),
            app_commands.Choice(name=locale_str("The story's author only"), value="author"),
            app_commands.Choice(name=locale_str("Members with a role"), value="role"),
        ]
    )
    @manage
    async def continuing(
        interaction: discord.Interaction, who: str, role: discord.Role | None = None
    ) -> None:
        await admin.continuing(interaction, who, role)

    @group.command(
        name="length", description=locale_str("How long a story is unless its author chooses")
    )
    @app_commands.choices(default=lengths)
    @manage
    async def length(interaction: discord.Interaction, default: str) -> None:
        await admin.length(interaction, default)

    @group.command(name="filter", description=locale_str("This server's own filter terms"))
    @app_commands.describe(
        action=locale_str("Add, remove or list"), term=locale_str("A word or phrase")
    )
    @app_commands.choices(
        action=[
            app_commands.Choice(name=locale_str("Add a term"), value="add"),
            app_commands.Choice(name=locale_str("Remove a term"), value="remove"),
            app_commands.Choice(name=locale_str("List the terms"), value="list"),
        ]
    )
    @manage
    async def filter_(
        interaction: discord.Interaction,
        action: str,
        term: app_commands.Range[str, 1, 50] | None = None,
    ) -> None:
        await admin.filter(interaction, action, term)

    @group.command(name="reports", description=locale_str("How many reports hide a part"))
    @app_commands.describe(
        members=locale_str("Reports from members"), admins=locale_str("Reports from admins")
    )
    @manage
    async def reports(
        interaction: discord.Interaction,
        members: app_commands.Range[int, 1, 100] | None = None,
        admins: app_commands.Range[int, 1, 100] | None = None,
    ) -> None:
        await admin.reports(interaction, members, admins)

    @group.command(
        name="notes", description=locale_str("Who may edit a story's memory and author's note")
    )
    @app_commands.describe(
        anyone=locale_str("On: anyone in the channel; off: the author (and admins)")
    )
    @manage
    async def notes(interaction: discord.Interaction, anyone: bool) -> None:
        await admin.notes(interaction, anyone)

    @group.command(name="votes", description=locale_str("Voting on what happens next"))
    @app_commands.describe(
        by_default=locale_str("On: Continue and ➕ start a vote"),
        seconds=locale_str("How long a vote lasts"),
    )
    @manage
    async def votes(
        interaction: discord.Interaction,
        by_default: bool | None = None,
        seconds: app_commands.Range[int, 10, 600] | None = None,
    ) -> None:
        await admin.votes(interaction, by_default, seconds)

    @group.command(
        name="sharing", description=locale_str("Whether authors may share stories as web pages")
    )
    @app_commands.describe(enabled=locale_str("On or off"))
    @manage
    async def sharing(interaction: discord.Interaction, enabled: bool) -> None:
        await admin.sharing(interaction, enabled)

    @group.command(
        name="hidden", description=locale_str("Parts hidden after reports: restore or delete")
    )
    @manage
    async def hidden(interaction: discord.Interaction) -> None:
        await admin.hidden(interaction)

    return group
