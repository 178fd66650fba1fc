"""Buttons and menus.

Story buttons are one `DynamicItem`: its custom_id names the action and the
part or run it acts on (`story:continue:42`, `story:cancel:7`), it has no
timeout and is registered at start-up, so buttons keep working on messages
posted before a restart. The item class is made by `story_button_type` for the
handlers it calls, so nothing is looked up on the client. The /mystories views
are private and short-lived; they get their handlers when they are built.
Labels are in the language of whoever sees them (bot.i18n): a story's buttons
in the server's, a private view's in its owner's.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import discord

from bot.i18n import Messages, messages
from generation.messages import N_
from storage.models import StoryPage

ErrorHandler = Callable[[discord.Interaction, BaseException], Awaitable[None]]


class StoryActions(Protocol):
    """What the story buttons call (bot.handlers.Handlers).

    Plain `def`s returning awaitables: the handlers are coroutine functions
    wrapped by a decorator, which a Protocol of `async def`s would not match.
    """

    def on_error(
        self, interaction: discord.Interaction, error: BaseException
    ) -> Awaitable[None]: ...

    def story_button(
        self, interaction: discord.Interaction, action: str, id: int
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ButtonLook:
    label: str
    emoji: str | None
    style: discord.ButtonStyle


# What each action's button looks like; the id is a part id for continue, vote,
# reroll, notes, report and share, a run id for cancel and retry, a vote id for
# pick1-3, a story id for unshare.
# pick1-3, a story id for unshare. Labels are English here, translated when sent.
BUTTONS = {
    "continue": ButtonLook(N_("Continue"), "➕", discord.ButtonStyle.primary),
    "reroll": ButtonLook(N_("Reroll"), "🎲", discord.ButtonStyle.secondary),
    "cancel": ButtonLook(N_("Cancel"), None, discord.ButtonStyle.danger),
    "retry": ButtonLook(N_("Retry"), "🔁", discord.ButtonStyle.primary),
    "report": ButtonLook(N_("Report"), "🚩", discord.ButtonStyle.secondary),
    "notes": ButtonLook(N_("Notes"), "📝", discord.ButtonStyle.secondary),
    "vote": ButtonLook(N_("Vote"), "🗳️", discord.ButtonStyle.secondary),
    "pick1": ButtonLook("1", None, discord.ButtonStyle.primary),
    "pick2": ButtonLook("2", None, discord.ButtonStyle.primary),
    "pick3": ButtonLook("3", None, discord.ButtonStyle.primary),
    "share": ButtonLook(N_("Share"), "🔗", discord.ButtonStyle.secondary),
    "unshare": ButtonLook(N_("Revoke link"), None, discord.ButtonStyle.danger),
}
_TEMPLATE = r"story:(?P<action>" + "|".join(BUTTONS) + r"):(?P<id>[0-9]{1,20})"


def story_button_type(actions: StoryActions) -> type[discord.ui.DynamicItem[Any]]:
    """The story button class, bound to the handlers its callbacks call."""

    class StoryButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_TEMPLATE):
        def __init__(self, action: str, id: int) -> None:
            look = BUTTONS[action]
            super().__init__(
                discord.ui.Button(
                    label=look.label,
                    emoji=look.emoji,
                    style=look.style,
                    custom_id=f"story:{action}:{id}",
                )
            )
            self.action, self.target = action, id

        @classmethod
        async def from_custom_id(
            cls,
            interaction: discord.Interaction,
            item: discord.ui.Item[Any],
            match: re.Match[str],
        ) -> StoryButton:
            return cls(match["action"], int(match["id"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            # Button callbacks bypass the command tree's error handler: use the same one.
            try:
                await actions.story_button(interaction, self.action, self.target)
            except Exception as error:
                await actions.on_error(interaction, error)

    return StoryButton


def buttons(t: Messages, *items: tuple[str, int]) -> discord.ui.View:
    """Story buttons for a message, labelled in `t`'s language, e.g.
    buttons(t, ("continue", 4), ("reroll", 4)).

    Only their custom_ids matter: clicks reach the registered StoryButton class,
    on any message, also after a restart. The view is stopped before it is sent,
    so discord.py does not keep a copy of it per message for the whole evening.
    """
    view = discord.ui.View(timeout=None)
    for action, id in items:
        look = BUTTONS[action]
        view.add_item(
            discord.ui.Button(
                label=t._(look.label),
                emoji=look.emoji,
                style=look.style,
                custom_id=f"story:{action}:{id}",
            )
        )
    view.stop()
    return view


def part_buttons(t: Messages, part_id: int) -> discord.ui.View:
    return buttons(
        t,
        ("continue", part_id),
        ("vote", part_id),
        ("reroll", part_id),
        ("notes", part_id),
        ("report", part_id),
        ("share", part_id),
    )


def ballot_buttons(t: Messages, vote_id: int, numbers: list[int]) -> discord.ui.View:
    return buttons(t, *((f"pick{number}", vote_id) for number in numbers))


def _paragraph(label: str, value: str, max_length: int, example: str) -> discord.ui.TextInput[Any]:
    """An optional paragraph field of a form, within Discord's lengths."""
    return discord.ui.TextInput(
        label=label[:45],
        style=discord.TextStyle.paragraph,
        default=value or None,
        required=False,
        max_length=max_length,
        placeholder=example[:100],
    )


class NotesModal(discord.ui.Modal):
    """A story's memory and author's note, to edit (prefilled with the current ones)."""

    def __init__(
        self,
        story_id: int,
        memory: str,
        note: str,
        limits: tuple[int, int],
        save: Callable[[discord.Interaction, str, str], Awaitable[None]],
        on_error: ErrorHandler,
        t: Messages | None = None,
    ) -> None:
        t = t or messages()
        super().__init__(title=t._("Notes of story #{story}", story=story_id)[:45], timeout=900)
        self.memory = _paragraph(
            t._("Memory: who and where"),
            memory,
            limits[0],
            t._("Ada is a detective in rainy 1920s Glasgow."),
        )
        self.note = _paragraph(
            t._("Author's note: tone, what happens next"),
            note,
            limits[1],
            t._("Tense. The storm breaks soon."),
        )
        self.add_item(self.memory)
        self.add_item(self.note)
        self._save, self._on_error = save, on_error

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:  # errors go to the one handler, as the buttons' do
            await self._save(interaction, self.memory.value, self.note.value)
        except Exception as error:
            await self._on_error(interaction, error)


def cancel_button(t: Messages, run_id: int) -> discord.ui.View:
    return buttons(t, ("cancel", run_id))


def retry_button(t: Messages, run_id: int) -> discord.ui.View:
    return buttons(t, ("retry", run_id))


# ------------------------------------------------------------------ /mystories
class Library(Protocol):
    """What the /mystories views call (bot.handlers.Handlers)."""

    def on_error(
        self, interaction: discord.Interaction, error: BaseException
    ) -> Awaitable[None]: ...

    def story_page(
        self, user_id: int, page: int, per_page: int, genre: str | None
    ) -> Awaitable[StoryPage]: ...

    def show_story(
        self, interaction: discord.Interaction, story_id: int, back: MyStoriesView | None
    ) -> Awaitable[None]: ...

    def export_story(self, interaction: discord.Interaction, story_id: int) -> Awaitable[None]: ...

    def share_story(self, interaction: discord.Interaction, story_id: int) -> Awaitable[None]: ...

    def delete_story(self, interaction: discord.Interaction, story_id: int) -> Awaitable[None]: ...


class GuardedView(discord.ui.View):
    """A private view: only its owner may use it; errors go to the one handler."""

    def __init__(
        self, owner: int, on_error: ErrorHandler, *, timeout: float, t: Messages | None = None
    ) -> None:
        super().__init__(timeout=timeout)
        self.owner = owner
        self._on_error = on_error
        self.t = t or messages()  # the owner's language

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.owner

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await self._on_error(interaction, error)


def _ago(t: Messages, timestamp: float) -> str:
    seconds = dt.datetime.now(dt.UTC).timestamp() - timestamp
    if seconds >= 86400:
        return t._("{count} d ago", count=int(seconds // 86400))
    if seconds >= 3600:
        return t._("{count} h ago", count=int(seconds // 3600))
    if seconds >= 60:
        return t._("{count} min ago", count=int(seconds // 60))
    return t._("just now")


# A story's status as /mystories shows it (stories.service's words).
STATUSES = {
    "queued": N_("queued"),
    "generating": N_("generating"),
    "done": N_("done"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
    "interrupted": N_("interrupted"),
}


def page_text(t: Messages, page: StoryPage, genre: str | None) -> str:
    if page.total == 0:
        if genre:
            return t._("You have no stories in {genre} yet. Start one with `/story`.", genre=genre)
        return t._("You have no stories yet. Start one with `/story`.")
    first = page.offset + 1
    last = page.offset + len(page.items)
    heading = (
        t._(
            "**Your stories** ({first}–{last} of {total}, {genre})",
            genre=genre,
            first=first,
            last=last,
            total=page.total,
        )
        if genre
        else t._(
            "**Your stories** ({first}–{last} of {total})", first=first, last=last, total=page.total
        )
    )
    lines = [heading]
    for summary in page.items:
        story = summary.story
        title = discord.utils.escape_markdown(story.title)
        parts = t._("{count} part(s)", count=summary.part_count - 1)
        status = t._(STATUSES[story.status]) if story.status in STATUSES else story.status
        lines.append(
            f"`#{story.id}` **{title}** · {story.genre} · {parts} · "
            f"{status} · {_ago(t, story.created_at)}"
        )
    return "\n".join(lines)


class MyStoriesView(GuardedView):
    PER_PAGE = 10

    def __init__(
        self,
        library: Library,
        user_id: int,
        genres: list[tuple[str, str]],
        t: Messages | None = None,
    ) -> None:
        super().__init__(user_id, library.on_error, timeout=900, t=t)
        self.library = library
        self.page = 0
        self.genre: str | None = None
        t = self.t
        self.previous.label = t._("Previous")
        self.next.label = t._("Next")
        self.genre_select.placeholder = t._("Filter by genre")
        self.open_story.placeholder = t._("Open a story")
        self.genre_select.options = [
            discord.SelectOption(label=t._("All genres"), value="*", default=True)
        ] + [discord.SelectOption(label=title, value=key) for key, title in genres[:24]]

    async def render(self) -> tuple[str, StoryPage]:
        page = await self.library.story_page(self.owner, self.page, self.PER_PAGE, self.genre)
        last = max(0, (page.total - 1) // self.PER_PAGE)
        if self.page > last:  # a double click on Next, or stories deleted meanwhile
            self.page = last
            page = await self.library.story_page(self.owner, last, self.PER_PAGE, self.genre)
        self.previous.disabled = self.page == 0
        self.next.disabled = page.offset + len(page.items) >= page.total
        self.open_story.options = [
            discord.SelectOption(
                label=f"#{s.story.id} {s.story.title}"[:100], value=str(s.story.id)
            )
            for s in page.items
        ] or [discord.SelectOption(label=self.t._("(none)"), value="0")]
        self.open_story.disabled = not page.items
        return page_text(self.t, page, self.genre), page

    async def refresh(self, interaction: discord.Interaction) -> None:
        text, _ = await self.render()
        await interaction.response.edit_message(content=text, view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary, row=2)
    async def previous(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.page = max(0, self.page - 1)
        await self.refresh(interaction)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary, row=2)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.page += 1
        await self.refresh(interaction)

    @discord.ui.select(cls=discord.ui.Select, placeholder="Filter by genre", row=0)
    async def genre_select(
        self, interaction: discord.Interaction, select: discord.ui.Select[Any]
    ) -> None:
        value = select.values[0]
        self.genre = None if value == "*" else value
        for option in select.options:
            option.default = option.value == value
        self.page = 0
        await self.refresh(interaction)

    @discord.ui.select(cls=discord.ui.Select, placeholder="Open a story", row=1)
    async def open_story(
        self, interaction: discord.Interaction, select: discord.ui.Select[Any]
    ) -> None:
        await self.library.show_story(interaction, int(select.values[0]), back=self)


class StoryDetailView(GuardedView):
    def __init__(
        self,
        library: Library,
        user_id: int,
        story_id: int,
        back: MyStoriesView | None,
        t: Messages | None = None,
    ) -> None:
        super().__init__(user_id, library.on_error, timeout=900, t=t)
        self.library, self.story_id, self.back_to = library, story_id, back
        self.export.label = self.t._("Export")
        self.share.label = self.t._("Share")
        self.delete.label = self.t._("Delete")
        self.back.label = self.t._("Back")
        if back is None:
            self.remove_item(self.back)

    @discord.ui.button(label="Export", emoji="📄", style=discord.ButtonStyle.primary)
    async def export(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await self.library.export_story(interaction, self.story_id)

    @discord.ui.button(label="Share", emoji="🔗", style=discord.ButtonStyle.secondary)
    async def share(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await self.library.share_story(interaction, self.story_id)

    @discord.ui.button(label="Delete", emoji="🗑️", style=discord.ButtonStyle.danger)
    async def delete(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        confirm = ConfirmView(
            self.owner,
            self.library.on_error,
            self.t._("Delete it"),
            lambda i: self.library.delete_story(i, self.story_id),
            t=self.t,
        )
        await interaction.response.edit_message(
            content=self.t._(
                "Delete story #{story} and all its parts? This cannot be undone.",
                story=self.story_id,
            ),
            view=confirm,
        )

    @discord.ui.button(label="Back", style=discord.ButtonStyle.secondary)
    async def back(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        if self.back_to is not None:
            await self.back_to.refresh(interaction)


class ConfirmView(GuardedView):
    def __init__(
        self,
        user_id: int,
        on_error: ErrorHandler,
        label: str,
        on_confirm: Callable[[discord.Interaction], Awaitable[None]],
        t: Messages | None = None,
    ) -> None:
        super().__init__(user_id, on_error, timeout=300, t=t)
        self.on_confirm = on_confirm
        self.confirm.label = label
        self.keep.label = self.t._("Keep everything")

    @discord.ui.button(label="Yes", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.stop()
        await self.on_confirm(interaction)

    @discord.ui.button(label="Keep everything", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(content=self.t._("Nothing was deleted."), view=None)
