"""The Discord front-end: thin handlers over `stories.StoryService`.

Each handler answers the interaction first (within Discord's 3 seconds), calls
one service method, and hands the run to the publisher. One error handler maps
domain errors to short ephemeral replies; anything unexpected is logged with
its traceback and answered with an apology and a reference id.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot import render
from bot.publisher import CONTINUE_EMOJI, Publisher
from bot.views import ConfirmView, MyStoriesView, StoryDetailView, retry_view
from generation.errors import Busy, GenerationError, InvalidRequest
from storage.errors import NotFound, StorageError
from stories.errors import UserLimit
from stories.service import Requester, Run, StoryOptions, StoryService

log = logging.getLogger(__name__)

PROMPT_LIMIT = 1000


@dataclass(frozen=True)
class Length:
    label: str
    max_new_tokens: int
    min_new_tokens: int  # holds off end-of-text, so "long" is long


LENGTHS = {
    "short": Length("Short (a paragraph)", 60, 20),
    "medium": Length("Medium", 120, 50),
    "long": Length("Long (several paragraphs)", 250, 120),
}


def is_age_restricted(channel: Any) -> bool:
    checker = getattr(channel, "is_nsfw", None)
    return bool(checker()) if callable(checker) else False


def requester(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        source="discord",
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        age_restricted_ok=is_age_restricted(interaction.channel),
    )


def describe(error: BaseException) -> str | None:
    """A short message for a known error; None for anything unexpected."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, Busy):
        return f"storybot is busy right now: try again in about {error.retry_after:.0f} s."
    if isinstance(error, UserLimit | GenerationError):
        return str(error)
    if isinstance(error, NotFound):
        return "That story no longer exists."
    if isinstance(error, StorageError):
        return "Stories cannot be saved right now; please try again later."
    if isinstance(error, app_commands.CheckFailure | app_commands.TransformerError):
        return str(error)
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


class Frontend:
    def __init__(
        self,
        client: discord.Client,
        service: StoryService,
        publisher: Publisher,
        *,
        max_new_tokens_limit: int = 400,
    ) -> None:
        self.client = client
        self.service = service
        self.publisher = publisher
        self.max_new_tokens_limit = max_new_tokens_limit
        self._shown: set[int] = set()  # ids of runs already being shown

    # ---------------------------------------------------------------- errors
    async def on_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        message = describe(error)
        if message is None:
            reference = uuid.uuid4().hex[:8]
            original = getattr(error, "original", error)
            log.error(
                "unexpected error (ref %s) in %s",
                reference,
                interaction.command,
                exc_info=(type(original), original, original.__traceback__),
            )
            message = f"Sorry, something went wrong (reference `{reference}`)."
        await tell(interaction, message)

    # ---------------------------------------------------------------- /story
    async def story(
        self,
        interaction: discord.Interaction,
        genre: str,
        prompt: str,
        length: str,
        seed: int | None,
    ) -> None:
        await defer(interaction)
        if len(prompt) > PROMPT_LIMIT:
            raise InvalidRequest(f"The prompt can be at most {PROMPT_LIMIT} characters.")
        size = LENGTHS.get(length, LENGTHS["medium"])
        options = StoryOptions(
            genre=genre,
            max_new_tokens=min(size.max_new_tokens, self.max_new_tokens_limit),
            min_new_tokens=size.min_new_tokens,
            seed=seed,
        )
        run = await self.service.start(prompt, options, requester(interaction))
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        message = await self.publisher.begin(run, channel, show_prompt=True)
        self._show(run, channel, message, show_prompt=True)
        await tell(
            interaction,
            f"Your {run.genre.title.lower()} story is queued (seed {run.seed}): {message.jump_url}",
        )

    def _show(
        self,
        run: Run,
        channel: Any,
        message: discord.Message,
        *,
        show_prompt: bool,
        old: list[discord.PartialMessage] | None = None,
    ) -> None:
        self._shown.add(id(run))
        self.publisher.spawn(
            run,
            channel,
            message,
            show_prompt=show_prompt,
            part_number=run.part_number,
            old_messages=old,
        )

    # ------------------------------------------------------------- continuing
    async def continue_part(self, part_id: int, who: Requester, channel: Any) -> tuple[Run, bool]:
        """Continue after a part; returns (run, shown_now). A run that is already
        being shown (a second reaction at once) is not shown twice."""
        run = await self.service.continue_from(part_id, who)
        if id(run) in self._shown:
            return run, False
        self._shown.add(id(run))
        previous = await self.service.store.messages_of_part(part_id)
        reply_to = channel.get_partial_message(previous[-1][0]) if previous else None
        message = await self.publisher.begin(run, channel, show_prompt=False, reply_to=reply_to)
        self._show(run, channel, message, show_prompt=False)
        return run, True

    async def on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.client.user
        if me is None or payload.user_id == me.id:
            return  # our own seeded reaction, echoed back by Discord
        if payload.member is not None and payload.member.bot:
            return
        if str(payload.emoji) != CONTINUE_EMOJI:
            return
        part = await self.service.store.part_for_message(payload.message_id)
        if part is None:
            return  # not a story message
        channel = self.client.get_channel(payload.channel_id)
        if channel is None or not isinstance(channel, discord.abc.Messageable):
            return
        who = Requester(
            user_id=payload.user_id,
            guild_id=payload.guild_id,
            channel_id=payload.channel_id,
            age_restricted_ok=is_age_restricted(channel),
        )
        try:
            await self.continue_part(part.id, who, channel)
        except (GenerationError, StorageError) as error:
            # A reaction has no reply channel; the person sees nothing happen.
            log.info("continue by reaction from %s not started: %s", payload.user_id, error)

    async def continue_button(self, interaction: discord.Interaction, part_id: int) -> None:
        await defer(interaction)
        run, shown = await self.continue_part(part_id, requester(interaction), interaction.channel)
        if shown:
            await tell(interaction, f"Writing the next part (seed {run.seed}).")
        else:
            await tell(interaction, "Someone is already continuing this story.")

    async def reroll_button(self, interaction: discord.Interaction, part_id: int) -> None:
        await defer(interaction)
        run = await self.service.reroll(part_id, requester(interaction))
        messages = await self.service.store.messages_of_part(part_id)
        channel = interaction.channel
        assert channel is not None and hasattr(channel, "get_partial_message")
        partials = [channel.get_partial_message(mid) for mid, _ in messages]
        first_part = run.parent.parent_id is None
        message = await self.publisher.begin(
            run,
            channel,
            show_prompt=first_part,  # type: ignore[arg-type]
            existing=partials[0] if partials else None,
        )
        self._show(run, channel, message, show_prompt=first_part, old=partials[1:])
        await tell(interaction, f"Rerolling with seed {run.seed}.")

    async def cancel_button(self, interaction: discord.Interaction, story_id: int) -> None:
        cancelled = await self.service.cancel(story_id, requester(interaction))
        await tell(
            interaction, "Cancelled." if cancelled else "There is nothing to cancel any more."
        )

    async def retry_button(self, interaction: discord.Interaction, story_id: int) -> None:
        await defer(interaction)
        who = requester(interaction)
        story = await self.service.store.get_story(story_id)
        latest = await self.service.store.latest_part(story_id)
        run = await self.service.continue_from(latest.id, who)
        if id(run) in self._shown:
            await tell(interaction, "This story is already being written.")
            return
        first_part = latest.parent_id is None
        message = await self.publisher.begin(
            run,
            interaction.channel,
            show_prompt=first_part,  # type: ignore[arg-type]
            existing=interaction.message,
        )
        self._show(run, interaction.channel, message, show_prompt=first_part)
        await tell(interaction, f"Retrying story #{story.id} (seed {run.seed}).")

    async def on_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.service.store.forget_message(payload.message_id)

    # --------------------------------------------------------------- recovery
    async def announce_interrupted(self) -> None:
        """Stories cut off by the last shutdown: say so where they were shown."""
        stories, self.service.recovered = self.service.recovered, []
        for story in stories:
            for message_id, channel_id in await self.service.store.pending_messages(story.id):
                channel = self.client.get_channel(channel_id)
                if channel is None or not hasattr(channel, "get_partial_message"):
                    continue
                message = channel.get_partial_message(message_id)
                try:
                    await message.edit(
                        content=f"⚠️ Story #{story.id} ({story.title}) was interrupted by a "
                        "restart. Press Retry to write it again.",
                        view=retry_view(story.id),
                    )
                except discord.HTTPException as error:
                    log.info("could not mark message %s interrupted: %s", message_id, error)
                    await self.service.store.clear_pending(message_id)

    # ------------------------------------------------------------ /mystories
    async def my_stories(self, interaction: discord.Interaction) -> None:
        genres = [(genre.key, genre.title) for genre in self.service.genres]
        view = MyStoriesView(self, interaction.user.id, genres)
        text, _ = await view.render()
        await interaction.response.send_message(text, view=view, ephemeral=True)

    async def show_story(
        self, interaction: discord.Interaction, story_id: int, back: MyStoriesView | None
    ) -> None:
        story, _, path = await self.service.story(story_id)
        if story.author_id != interaction.user.id:
            await tell(interaction, "That is not one of your stories.")
            return
        body = render.story_body(path[0].text, "".join(p.text for p in path[1:]))
        chunks = render.final_chunks(
            body, f"-# story #{story.id} · {story.genre} · {len(path) - 1} part(s)"
        )
        view = StoryDetailView(self, interaction.user.id, story_id, back)
        await interaction.response.edit_message(content=chunks[0], view=view)
        for chunk in chunks[1:]:
            await interaction.followup.send(chunk, ephemeral=True)

    async def export_story(self, interaction: discord.Interaction, story_id: int) -> None:
        markdown = await self.service.export(story_id, "md")
        file = discord.File(io.BytesIO(markdown.encode("utf-8")), filename=f"story-{story_id}.md")
        await interaction.response.send_message(
            f"Story #{story_id} as Markdown:", file=file, ephemeral=True
        )

    async def delete_story(self, interaction: discord.Interaction, story_id: int) -> None:
        deleted = await self.service.delete_story(story_id, requester(interaction))
        await interaction.response.edit_message(
            content=f"Deleted story #{story_id} ({deleted.parts} parts).", view=None
        )

    async def forget_me(self, interaction: discord.Interaction) -> None:
        page = await self.service.store.list_stories(interaction.user.id, limit=1)

        async def confirmed(confirm: discord.Interaction) -> None:
            deleted = await self.service.forget(interaction.user.id)
            await confirm.response.edit_message(
                content=f"Done: deleted {deleted.stories} stories and {deleted.parts} parts "
                "you wrote.",
                view=None,
            )

        view = ConfirmView(interaction.user.id, "Delete everything", confirmed)
        await interaction.response.send_message(
            f"This deletes the {page.total} stories you started and every part you asked for, "
            "in every server. It cannot be undone.",
            view=view,
            ephemeral=True,
        )
