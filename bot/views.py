"""Buttons and menus.

Story buttons are one `DynamicItem`: its custom_id names the action and the
part or run it acts on (`story:continue:42`, `story:cancel:7`), it has no
timeout and is registered at start-up, so buttons keep working on messages
posted before a restart. The item class is made by `story_button_type` for the
handlers it calls, so nothing is looked up on the client. The /mystories views
are private and short-lived; they get their handlers when they are built.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import discord

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
BUTTONS = {
    "continue": ButtonLook("Continue", "➕", discord.ButtonStyle.primary),
    "reroll": ButtonLook("Reroll", "🎲", discord.ButtonStyle.secondary),
    "cancel": ButtonLook("Cancel", None, discord.ButtonStyle.danger),
    "retry": ButtonLook("Retry", "🔁", discord.ButtonStyle.primary),
    "report": ButtonLook("Report", "🚩", discord.ButtonStyle.secondary),
    "notes": ButtonLook("Notes", "📝", discord.ButtonStyle.secondary),
    "vote": ButtonLook("Vote", "🗳️", discord.ButtonStyle.secondary),
    "pick1": ButtonLook("1", None, discord.ButtonStyle.primary),
    "pick2": ButtonLook("2", None, discord.ButtonStyle.primary),
    "pick3": ButtonLook("3", None, discord.ButtonStyle.primary),
    "share": ButtonLook("Share", "🔗", discord.ButtonStyle.secondary),
    "unshare": ButtonLook("Revoke link", None, discord.ButtonStyle.danger),
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


def buttons(*items: tuple[str, int]) -> discord.ui.View:
    """Story buttons for a message, e.g. buttons(("continue", 4), ("reroll", 4)).

    Only their custom_ids matter: clicks reach the registered StoryButton class,
    on any message, also after a restart. The view is stopped before it is sent,
    so discord.py does not keep a copy of it per message for the whole evening.
    """
    view = discord.ui.View(timeout=None)
    for action, id in items:
        look = BUTTONS[action]
        view.add_item(
            discord.ui.Button(
                label=look.label,
                emoji=look.emoji,
                style=look.style,
                custom_id=f"story:{action}:{id}",
            )
        )
    view.stop()
    return view


def part_buttons(part_id: int) -> discord.ui.View:
    return buttons(
        ("continue", part_id),
        ("vote", part_id),
        ("reroll", part_id),
        ("notes", part_id),
        ("report", part_id),
        ("share", part_id),
    )


def ballot_buttons(vote_id: int, numbers: list[int]) -> discord.ui.View:
    return buttons(*((f"pick{number}", vote_id) for number in numbers))


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
    ) -> None:
        super().__init__(title=f"Notes of story #{story_id}"[:45], timeout=900)
        self.memory: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Memory: who and where",
            style=discord.TextStyle.paragraph,
            default=memory or None,
            required=False,
            max_length=limits[0],
            placeholder="Ada is a detective in rainy 1920s Glasgow.",
        )
        self.note: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Author's note: tone, what happens next",
            style=discord.TextStyle.paragraph,
            default=note or None,
            required=False,
            max_length=limits[1],
            placeholder="Tense. The storm breaks soon.",
        )
        self.add_item(self.memory)
        self.add_item(self.note)
        self._save, self._on_error = save, on_error

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:  # errors go to the one handler, as the buttons' do
            await self._save(interaction, self.memory.value, self.note.value)
        except Exception as error:
            await self._on_error(interaction, error)


def cancel_button(run_id: int) -> discord.ui.View:
    return buttons(("cancel", run_id))


def retry_button(run_id: int) -> discord.ui.View:
    return buttons(("retry", run_id))


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

    def __init__(self, owner: int, on_error: ErrorHandler, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.owner = owner
        self._on_error = on_error

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.owner

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await self._on_error(interaction, error)


def _ago(timestamp: float) -> str:
    seconds = dt.datetime.now(dt.UTC).timestamp() - timestamp
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def page_text(page: StoryPage, genre: str | None) -> str:
    if page.total == 0:
        where = f" in {genre}" if genre else ""
        return f"You have no stories{where} yet. Start one with `/story`."
    first = page.offset + 1
    last = page.offset + len(page.items)
    lines = [f"**Your stories** ({first}–{last} of {page.total}{', ' + genre if genre else ''})"]
    for summary in page.items:
        story = summary.story
        title = discord.utils.escape_markdown(story.title)
        lines.append(
            f"`#{story.id}` **{title}** · {story.genre} · {summary.part_count - 1} part(s) · "
            f"{story.status} · {_ago(story.created_at)}"
        )
    return "\n".join(lines)


class MyStoriesView(GuardedView):
    PER_PAGE = 10

    def __init__(self, library: Library, user_id: int, genres: list[tuple[str, str]]) -> None:
        super().__init__(user_id, library.on_error, timeout=900)
        self.library = library
        self.page = 0
        self.genre: str | None = None
        self.genre_select.options = [
            discord.SelectOption(label="All genres", value="*", default=True)
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
        ] or [discord.SelectOption(label="(none)", value="0")]
        self.open_story.disabled = not page.items
        return page_text(page, self.genre), page

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
        self, library: Library, user_id: int, story_id: int, back: MyStoriesView | None
    ) -> None:
        super().__init__(user_id, library.on_error, timeout=900)
        self.library, self.story_id, self.back_to = library, story_id, back
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
            "Delete it",
            lambda i: self.library.delete_story(i, self.story_id),
        )
        await interaction.response.edit_message(
            content=f"Delete story #{self.story_id} and all its parts? This cannot be undone.",
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
    ) -> None:
        super().__init__(user_id, on_error, timeout=300)
        self.on_confirm = on_confirm
        self.confirm.label = label

    @discord.ui.button(label="Yes", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.stop()
        await self.on_confirm(interaction)

    @discord.ui.button(label="Keep everything", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)
