"""The Discord handlers: thin, over `stories.StoryService`.

Each handler answers the interaction first (within Discord's 3 seconds), calls
one service method, and hands the run to the publisher. Every action gets a
visible answer: interactions a private reply, reactions (which have nothing to
reply to) a notice when they are refused. One error handler maps domain errors
to short replies; anything unexpected is logged with its traceback and answered
with an apology and a reference id. Private answers are in the person's
language, what goes to the channel in the server's (bot.i18n).
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import discord
from discord import app_commands

from bot import render
from bot.admin import AdminHandlers
from bot.i18n import Messages, for_channel, for_person, for_server
from bot.notices import Notices
from bot.publisher import CONTINUE_EMOJI, Publisher, Target
from bot.sharing import ShareHandlers
from bot.telemetry import context_of
from bot.views import ConfirmView, MyStoriesView, NotesModal, StoryDetailView, ballot_buttons
from generation.errors import Busy, GenerationError
from generation.messages import N_
from storage.errors import NotFound, StorageError
from storage.models import MessageRecord, StoryPage
from stories.errors import NothingToContinue, StoryError, UserLimit, WritingElsewhere
from stories.message_book import MessageBook
from stories.servers import Member
from stories.service import (
    MAX_MEMORY_CHARS,
    MAX_NOTE_CHARS,
    Announce,
    Requester,
    Run,
    Started,
    StoryOptions,
    StoryService,
)
from stories.votes import Vote

log = logging.getLogger(__name__)

MISSING_ACCESS = 50001
UNKNOWN_CHANNEL = 10003

# A ➕ on one of the bot's messages that shows no story part (any more: its part
# was deleted, its story too; or a vote's ballot) is refused with these, never
# ignored.
NOTHING_HERE = N_("There is nothing to continue here: this message shows no part of a story.")
A_BALLOT = N_(
    "This message is a vote: choose with its buttons, then continue the story from the "
    "winning option."
)


def shows_no_part(record: MessageRecord | None) -> NothingToContinue | None:
    """Why a ➕ on this message of ours cannot continue anything; None when it can."""
    if record is not None and (record.part_id is not None or record.run_id is not None):
        return None
    if record is not None and record.vote_id is not None:
        return NothingToContinue(A_BALLOT)
    return NothingToContinue(NOTHING_HERE)


def is_age_restricted(channel: Any) -> bool:
    checker = getattr(channel, "is_nsfw", None)
    return bool(checker()) if callable(checker) else False


def member_of(user: Any, permissions: discord.Permissions | None = None) -> Member:
    """A person's roles in the server, and whether they manage it."""
    roles = tuple(role.id for role in getattr(user, "roles", ()) if not role.is_default())
    if permissions is None:
        permissions = getattr(user, "guild_permissions", None)
    return Member(roles=roles, admin=bool(permissions and permissions.manage_guild))


def requester(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        source="discord",
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        age_restricted_ok=is_age_restricted(interaction.channel),
        member=member_of(interaction.user, interaction.permissions),
    )


def describe(error: BaseException, t: Messages) -> str | None:
    """A short message for a known error, in `t`'s language; None for anything
    unexpected."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, Busy):
        return t._(
            "storybot is busy right now: try again in about {seconds} s.",
            seconds=f"{error.retry_after:.0f}",
        )
    if isinstance(error, StoryError | GenerationError):
        return t.error(error)
    if isinstance(error, NotFound):
        return t._("That story no longer exists.")
    if isinstance(error, StorageError):
        return t._("Stories cannot be saved right now; please try again later.")
    if isinstance(error, discord.Forbidden):
        return t._(
            "I can't post in this channel: I need the View Channel, Send Messages and "
            "Read Message History permissions here."
        )
    if isinstance(error, discord.NotFound) and error.code == UNKNOWN_CHANNEL:
        return t._("That channel no longer exists.")
    if isinstance(error, app_commands.MissingPermissions):
        names = [
            name.replace("_", " ").replace("guild", "server").title()
            for name in error.missing_permissions
        ]
        return t._(
            "You are missing {permissions} permission(s) to run this command.",
            permissions=", ".join(names),
        )
    if isinstance(error, app_commands.NoPrivateMessage):
        return t._("This command cannot be used in private messages.")
    if isinstance(error, app_commands.CheckFailure | app_commands.TransformerError):
        return str(error)
    return None


def retry_after(error: BaseException) -> float | None:
    if isinstance(error, Busy):
        return error.retry_after
    if isinstance(error, UserLimit):
        return error.retry_after
    return None


async def tell(interaction: discord.Interaction, text: str, **kwargs: Any) -> None:
    """Answer privately, whether or not the interaction was answered yet."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, **kwargs)
        else:
            await interaction.response.send_message(text, ephemeral=True, **kwargs)
    except discord.HTTPException as error:  # 10062 / 50027: the person is gone
        log.info("could not answer interaction %s: %s", interaction.id, error)


async def defer(interaction: discord.Interaction) -> None:
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    except discord.NotFound:  # 10062: missed the 3 s; the work still happens
        log.warning("interaction %s expired before it was acknowledged", interaction.id)
    except discord.HTTPException as error:
        if error.code != 40060:  # already acknowledged is fine
            raise


class _Show:
    """The `announce` a use-case awaits before generating: posts the run's message."""

    def __init__(
        self,
        publisher: Publisher,
        channel: Any,
        *,
        reply_to: Target | None = None,
        existing: Target | None = None,
    ) -> None:
        self.publisher, self.channel = publisher, channel
        self.reply_to, self.existing = reply_to, existing
        self.message: discord.Message | None = None

    async def __call__(self, run: Run) -> None:
        self.message = await self.publisher.post(
            run, self.channel, reply_to=self.reply_to, existing=self.existing
        )

    def follow(self, run: Run) -> discord.Message:
        assert self.message is not None, "the use-case announced the run"
        self.publisher.follow(run, self.channel, self.message)
        return self.message


P = ParamSpec("P")
R = TypeVar("R")


def _tracked(
    method: Callable[Concatenate[Handlers, P], Awaitable[R]],
) -> Callable[Concatenate[Handlers, P], Awaitable[R]]:
    """Count the handler while it runs, so shutting down can wait for answers
    in flight before it closes the Discord session under them; its log lines
    name its interaction (or reaction) and guild."""

    @functools.wraps(method)
    async def tracked(self: Handlers, *args: P.args, **kwargs: P.kwargs) -> R:
        self._busy += 1
        self._idle.clear()
        try:
            with context_of(args[0] if args else None):
                return await method(self, *args, **kwargs)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    return tracked


class Handlers:
    def __init__(
        self,
        client: discord.Client,
        service: StoryService,
        book: MessageBook,
        publisher: Publisher,
        notices: Notices,
        *,
        max_new_tokens_limit: int = 400,
        public_base_url: str = "http://127.0.0.1:5000",
    ) -> None:
        self.client = client
        self.service = service
        self.book = book
        self.publisher = publisher
        self.notices = notices
        self.max_new_tokens_limit = max_new_tokens_limit
        self.admin = AdminHandlers(
            service,
            on_error=self.on_error,
            requester=requester,
            refresh=lambda: publisher.sync_soon(client),
        )
        self.shares = ShareHandlers(
            service, public_base_url=public_base_url, on_error=self.on_error, requester=requester
        )
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, within: float) -> bool:
        """Shutting down: wait up to `within` seconds for the handlers still
        answering someone. True when none is left."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            log.warning("%d Discord handlers still running at shutdown", self._busy)
            return False
        return True

    # ---------------------------------------------------------------- errors
    async def on_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        t = for_person(interaction)
        message = describe(error, t)
        if message is None:
            reference = uuid.uuid4().hex[:8]
            original = getattr(error, "original", error)
            log.error(
                "unexpected error (ref %s) in %s",
                reference,
                interaction.command,
                exc_info=(type(original), original, original.__traceback__),
            )
            message = t._(
                "Sorry, something went wrong (reference `{reference}`).", reference=reference
            )
        await tell(interaction, message)

    # ---------------------------------------------------------------- /story
    @_tracked
    async def story(
        self,
        interaction: discord.Interaction,
        genre: str,
        prompt: str,
        length: str | None,
        seed: int | None,
        memory: str | None = None,
        authors_note: str | None = None,
    ) -> None:
        await defer(interaction)
        await self.shares.remember(interaction.user)  # the name its share page shows
        server = await self.service.servers.settings(interaction.guild_id)
        size = self.service.servers.length(server, length)
        options = StoryOptions(
            genre=genre,
            max_new_tokens=min(size.max_new_tokens, self.max_new_tokens_limit),
            min_new_tokens=size.min_new_tokens,
            seed=seed,
            memory=memory,
            authors_note=authors_note,
        )
        show = _Show(self.publisher, interaction.channel)
        run = await self.service.start(prompt, options, requester(interaction), announce=show)
        message = show.follow(run)
        await tell(
            interaction,
            for_person(interaction)._(
                "Your {genre} story is queued (seed {seed}): {link}",
                genre=run.genre.title.lower(),
                seed=run.seed,
                link=message.jump_url,
            ),
        )

    async def genre_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """/story's genre suggestions: what this server enabled, 18+ genres only
        in age-restricted channels, matching what was typed so far."""
        rules = self.service.servers
        enabled = set(rules.enabled_genres(await rules.settings(interaction.guild_id)))
        adult_ok = is_age_restricted(interaction.channel)
        typed = current.casefold().strip()
        return [
            app_commands.Choice(name=genre.title[:100], value=genre.key)
            for genre in self.service.genres
            if genre.key in enabled
            and (adult_ok or not genre.age_restricted)
            and (typed in genre.title.casefold() or typed in genre.key)
        ][:25]

    # ----------------------------------------------------------------- buttons
    @_tracked
    async def story_button(self, interaction: discord.Interaction, action: str, id: int) -> None:
        if action == "cancel":
            await self.cancel(interaction, id)
            return
        if action == "report":
            await self.report(interaction, id)
            return
        if action == "notes":
            await self.edit_notes(interaction, id)
            return
        if action.startswith("pick"):
            await self.cast(interaction, id, int(action.removeprefix("pick")))
            return
        if action == "share":
            await self.shares.share_part(interaction, id)
            return
        if action == "unshare":
            await self.shares.unshare(interaction, id)
            return
        await defer(interaction)
        await self.shares.remember(interaction.user)
        t = for_person(interaction)
        channel = interaction.channel
        who = requester(interaction)
        server = await self.service.servers.settings(interaction.guild_id)
        if action == "vote" or (action == "continue" and server and server.vote_by_default):
            message = await self._vote(id, who, channel, interaction.message)
            await tell(
                interaction,
                t._("The channel votes on what happens next: {link}", link=message.jump_url),
            )
        elif action == "continue":
            show = _Show(self.publisher, channel, reply_to=interaction.message)
            started = await self.service.continue_from(id, who, announce=show)
            await self._answer_started(
                interaction, show, started, N_("Writing the next part (seed {seed}): {link}")
            )
        elif action == "reroll":
            old = await self.book.of_part(id)
            reply_to = channel.get_partial_message(old[-1].message_id) if old else None  # type: ignore[union-attr]
            show = _Show(self.publisher, channel, reply_to=reply_to or interaction.message)
            run = await self.service.reroll(id, who, announce=show)
            message = show.follow(run)
            await tell(
                interaction,
                t._(
                    "Writing a new version of part {part} (seed {seed}): {link}",
                    part=run.number,
                    seed=run.seed,
                    link=message.jump_url,
                ),
            )
        elif action == "retry":
            show = _Show(self.publisher, channel, existing=interaction.message)
            started = await self.service.retry(id, who, announce=show)
            run = started.run
            doing = (
                N_("Writing a new version of part {part} (seed {seed}): {link}")
                if run.kind == "reroll"
                else N_("Writing it again (seed {seed}): {link}")
            )
            await self._answer_started(interaction, show, started, doing)

    async def _answer_started(
        self, interaction: discord.Interaction, show: _Show, started: Started, doing: str
    ) -> None:
        """`doing`: what a new run's answer says (a message of the catalogues, with
        {part}, {seed} and {link} to fill)."""
        t = for_person(interaction)
        run = started.run
        if started.new:
            message = show.follow(run)
            await tell(
                interaction, t._(doing, part=run.number, seed=run.seed, link=message.jump_url)
            )
            return
        adopted = await self.publisher.adopt(run, interaction.channel, reply_to=interaction.message)  # type: ignore[arg-type]
        if adopted is not None:
            await tell(
                interaction,
                t._(
                    "Writing the next part (seed {seed}): {link}",
                    seed=run.seed,
                    link=adopted.jump_url,
                ),
            )
            return
        shown = await self.book.of_run(run.id)
        if shown:
            link = render.jump_url(interaction.guild_id, shown[0].channel_id, shown[0].message_id)
            await tell(
                interaction, t._("Someone is already writing the next part: {link}", link=link)
            )
        else:
            await tell(interaction, t._("Someone is already writing the next part."))

    async def _vote(
        self, part_id: int, who: Requester, channel: Any, reply_to: Target | None
    ) -> discord.Message:
        """Start a vote on what follows `part_id`: its ballot message is posted at
        once; its options when written."""
        posted: list[discord.Message] = []

        async def announce(vote: Vote) -> None:
            posted.append(
                await self.publisher.post_vote(
                    vote,
                    channel,
                    reply_to=reply_to,
                    refresh=lambda: self.publisher.sync_soon(self.client),
                )
            )

        await self.service.votes.start(part_id, who, announce=announce)
        return posted[0]

    async def cast(self, interaction: discord.Interaction, vote_id: int, number: int) -> None:
        """A ballot: the vote's message shows the new count, and the voter is told
        privately what they chose."""
        record = await self.service.votes.cast(vote_id, requester(interaction), number)
        numbers = [c.number for c in record.candidates if c.part_id is not None]
        t = for_person(interaction)
        if record.state == "open":
            channel = for_server(interaction)  # the ballot is the channel's message
            await interaction.response.edit_message(
                content=render.ballot(channel, record.tally, numbers, record.closes_at),
                view=ballot_buttons(channel, vote_id, numbers),
            )
            await interaction.followup.send(
                t._(
                    "Your vote: option {number}. You can change it until the vote closes.",
                    number=number,
                ),
                ephemeral=True,
            )
        else:  # this ballot decided it: the messages are brought up to date
            await tell(interaction, t._("Your vote for option {number} decided it.", number=number))
            self.publisher.sync_soon(self.client)

    async def edit_notes(self, interaction: discord.Interaction, part_id: int) -> None:
        """The Notes button: a modal with the story's memory and author's note
        (answered at once, as a modal must be; saving checks who may)."""
        view = await self.service.describe_part(part_id)
        story = view.story
        t = for_person(interaction)

        async def save(submitted: discord.Interaction, memory: str, note: str) -> None:
            await self.service.set_notes(story.id, requester(submitted), memory, note)
            await tell(
                submitted,
                t._("Notes saved: the next part of this story is written with them.")
                if memory.strip() or note.strip()
                else t._("Notes cleared."),
            )

        await interaction.response.send_modal(
            NotesModal(
                story.id,
                story.memory,
                story.authors_note,
                (MAX_MEMORY_CHARS, MAX_NOTE_CHARS),
                save,
                self.on_error,
                t,
            )
        )

    async def report(self, interaction: discord.Interaction, part_id: int) -> None:
        tally = await self.service.report(part_id, requester(interaction))
        t = for_person(interaction)
        if tally.hidden:
            await tell(
                interaction, t._("Reported. That part is now hidden until an admin reviews it.")
            )
            self.publisher.sync_soon(self.client)  # its messages say it was removed
        elif tally.new:
            await tell(interaction, t._("Reported. Thank you: the server's admins can review it."))
        else:
            await tell(interaction, t._("You have reported that part already."))

    async def cancel(self, interaction: discord.Interaction, run_id: int) -> None:
        cancelled = await self.service.cancel(run_id, requester(interaction))
        t = for_person(interaction)
        await tell(
            interaction,
            t._("Cancelled.") if cancelled else t._("There is nothing to cancel any more."),
        )

    # --------------------------------------------------------------- reactions
    @_tracked
    async def on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.client.user
        if me is None or payload.user_id == me.id:
            return  # our own seeded reaction, echoed back by Discord
        if payload.member is not None and payload.member.bot:
            return
        if str(payload.emoji) != CONTINUE_EMOJI:
            return
        record = await self.book.get(payload.message_id)
        if record is None and payload.message_author_id != me.id:
            return  # not a story message: people react to chat as they like
        channel = self.client.get_channel(payload.channel_id)
        if channel is None or not isinstance(channel, discord.abc.Messageable):
            return
        message = channel.get_partial_message(payload.message_id)
        if (nothing := shows_no_part(record)) is not None:
            await self._refuse_reaction(channel, message, payload, nothing)
            return
        assert record is not None
        who = Requester(
            user_id=payload.user_id,
            guild_id=payload.guild_id,
            channel_id=payload.channel_id,
            age_restricted_ok=is_age_restricted(channel),
            member=member_of(payload.member),
        )
        await self.shares.remember(payload.member)
        show = _Show(self.publisher, channel, reply_to=message)
        try:
            server = await self.service.servers.settings(payload.guild_id)
            if server and server.vote_by_default and record.part_id is not None:
                await self._vote(record.part_id, who, channel, message)
                return
            started = await self._continue_message(record.part_id, record.run_id, who, show)
        except WritingElsewhere:
            # Another process (sharing the database) took the same part, maybe
            # for this very reaction (two sessions of one shard both get it):
            # like joining a run here, nothing to say; the part appears there.
            log.info("continue by reaction from %s: another process writes it", payload.user_id)
            return
        except (StoryError, GenerationError, StorageError, discord.HTTPException) as error:
            await self._refuse_reaction(channel, message, payload, error)
            return
        if started.new:
            show.follow(started.run)
        else:  # joined a run: shown already, unless it began over HTTP
            await self.publisher.adopt(started.run, channel, reply_to=message)

    async def _refuse_reaction(
        self,
        channel: discord.abc.Messageable,
        message: discord.PartialMessage,
        payload: discord.RawReactionActionEvent,
        error: BaseException,
    ) -> None:
        t = for_channel(channel)  # a notice in the channel: the server's language
        reason = describe(error, t) or t._("That could not be continued.")
        log.info("continue by reaction from %s refused: %s", payload.user_id, reason)
        await self.notices.refuse(
            message, payload.user_id, payload.emoji, reason, retry_after(error)
        )

    async def _continue_message(
        self, part_id: int | None, run_id: int | None, who: Requester, announce: Announce
    ) -> Started:
        if part_id is not None:
            return await self.service.continue_from(part_id, who, announce=announce)
        assert run_id is not None  # shows_no_part refused a message with neither
        return await self.service.continue_after_run(run_id, who, announce=announce)

    @_tracked
    async def on_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.book.forget(payload.message_id)

    # --------------------------------------------------------------- recovery
    async def bring_messages_up_to_date(self) -> None:
        """At start-up: messages left stale by the last process (interrupted
        runs, failed edits, deletions) show what the database says; servers the
        bot left long ago lose their settings."""
        self.publisher.sync_soon(self.client)
        await self.service.servers.forget_servers_left_long_ago()

    # ------------------------------------------------------------ /mystories
    async def story_page(
        self, user_id: int, page: int, per_page: int, genre: str | None
    ) -> StoryPage:
        return await self.service.list_stories(user_id, page=page, per_page=per_page, genre=genre)

    @_tracked
    async def my_stories(self, interaction: discord.Interaction) -> None:
        genres = [(genre.key, genre.title) for genre in self.service.genres]
        view = MyStoriesView(self, interaction.user.id, genres, for_person(interaction))
        text, _ = await view.render()
        await interaction.response.send_message(text, view=view, ephemeral=True)

    @_tracked
    async def show_story(
        self, interaction: discord.Interaction, story_id: int, back: MyStoriesView | None
    ) -> None:
        story, _, path = await self.service.story(story_id)
        t = for_person(interaction)
        if story.author_id != interaction.user.id:
            await tell(interaction, t._("That is not one of your stories."))
            return
        body = render.story_body(path[0].text, "".join(p.text for p in path[1:]))
        notes = render.notes(t, story.memory, story.authors_note)
        chunks = render.final_chunks(
            body + notes,
            t._(
                "-# story #{story} · {genre} · {count} part(s)",
                story=story.id,
                genre=story.genre,
                count=len(path) - 1,
            ),
        )
        view = StoryDetailView(self, interaction.user.id, story_id, back, t)
        await interaction.response.edit_message(content=chunks[0], view=view)
        for chunk in chunks[1:]:
            await interaction.followup.send(chunk, ephemeral=True)

    @_tracked
    async def export_story(self, interaction: discord.Interaction, story_id: int) -> None:
        markdown = await self.service.export(story_id, "md")
        file = discord.File(io.BytesIO(markdown.encode("utf-8")), filename=f"story-{story_id}.md")
        await interaction.response.send_message(
            for_person(interaction)._("Story #{story} as Markdown:", story=story_id),
            file=file,
            ephemeral=True,
        )

    @_tracked
    async def share_story(self, interaction: discord.Interaction, story_id: int) -> None:
        await self.shares.share_story(interaction, story_id)

    @_tracked
    async def delete_story(self, interaction: discord.Interaction, story_id: int) -> None:
        deleted = await self.service.delete_story(story_id, requester(interaction))
        await interaction.response.edit_message(
            content=for_person(interaction)._(
                "Deleted story #{story} ({parts} parts).", story=story_id, parts=deleted.parts
            ),
            view=None,
        )
        self.publisher.sync_soon(self.client)  # its messages in the channel say so

    @_tracked
    async def forget_me(self, interaction: discord.Interaction) -> None:
        page = await self.service.list_stories(interaction.user.id, per_page=1)
        t = for_person(interaction)

        async def confirmed(confirm: discord.Interaction) -> None:
            deleted = await self.service.forget(interaction.user.id)
            await confirm.response.edit_message(
                content=t._(
                    "Done: deleted {stories} stories and {parts} parts you wrote.",
                    stories=deleted.stories,
                    parts=deleted.parts,
                ),
                view=None,
            )
            self.publisher.sync_soon(self.client)

        view = ConfirmView(
            interaction.user.id, self.on_error, t._("Delete everything"), confirmed, t=t
        )
        await interaction.response.send_message(
            t._(
                "This deletes the {count} stories you started and every part you asked for, "
                "in every server. It cannot be undone.",
                count=page.total,
            ),
            view=view,
            ephemeral=True,
        )
