"""Buttons and menus.

Story buttons are `DynamicItem`s: their custom_id carries the part or story id
(`story:continue:42`), they have no timeout and are registered at start-up, so
they keep working on messages posted before a restart. The /mystories views
are ephemeral and short-lived.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from storage.models import StoryPage

if TYPE_CHECKING:
    from bot.frontend import Frontend


def frontend_of(interaction: discord.Interaction) -> Frontend:
    return interaction.client.frontend  # type: ignore[attr-defined, no-any-return]


async def guarded(
    interaction: discord.Interaction, action: Callable[[Frontend], Awaitable[None]]
) -> None:
    """Button callbacks bypass the command tree's error handler: use the same one."""
    frontend = frontend_of(interaction)
    try:
        await action(frontend)
    except Exception as error:
        await frontend.on_error(interaction, error)


class GuardedView(discord.ui.View):
    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await frontend_of(interaction).on_error(interaction, error)


class ContinueButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"story:continue:(?P<id>[0-9]+)"
):
    def __init__(self, part_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Continue",
                emoji="➕",
                style=discord.ButtonStyle.primary,
                custom_id=f"story:continue:{part_id}",
            )
        )
        self.part_id = part_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ContinueButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, lambda f: f.continue_button(interaction, self.part_id))


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"story:reroll:(?P<id>[0-9]+)"
):
    def __init__(self, part_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                emoji="🎲",
                style=discord.ButtonStyle.secondary,
                custom_id=f"story:reroll:{part_id}",
            )
        )
        self.part_id = part_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, lambda f: f.reroll_button(interaction, self.part_id))


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"story:cancel:(?P<id>[0-9]+)"
):
    def __init__(self, story_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.danger,
                custom_id=f"story:cancel:{story_id}",
            )
        )
        self.story_id = story_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, lambda f: f.cancel_button(interaction, self.story_id))


class RetryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"story:retry:(?P<id>[0-9]+)"
):
    def __init__(self, story_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Retry",
                emoji="🔁",
                style=discord.ButtonStyle.primary,
                custom_id=f"story:retry:{story_id}",
            )
        )
        self.story_id = story_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RetryButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, lambda f: f.retry_button(interaction, self.story_id))


DYNAMIC_ITEMS = (ContinueButton, RerollButton, CancelButton, RetryButton)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def story_view(part_id: int) -> discord.ui.View:
    return _view(ContinueButton(part_id), RerollButton(part_id))


def cancel_view(story_id: int) -> discord.ui.View:
    return _view(CancelButton(story_id))


def retry_view(story_id: int) -> discord.ui.View:
    return _view(RetryButton(story_id))


# ------------------------------------------------------------------ /mystories
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

    def __init__(self, frontend: Frontend, user_id: int, genres: list[tuple[str, str]]) -> None:
        super().__init__(timeout=900)
        self.frontend = frontend
        self.user_id = user_id
        self.page = 0
        self.genre: str | None = None
        self.genre_select.options = [
            discord.SelectOption(label="All genres", value="*", default=True)
        ] + [discord.SelectOption(label=title, value=key) for key, title in genres[:24]]

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    async def render(self) -> tuple[str, StoryPage]:
        page = await self.frontend.service.list_stories(
            self.user_id, page=self.page, per_page=self.PER_PAGE, genre=self.genre
        )
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

    @discord.ui.select(placeholder="Filter by genre", row=0)
    async def genre_select(
        self, interaction: discord.Interaction, select: discord.ui.Select[Any]
    ) -> None:
        value = select.values[0]
        self.genre = None if value == "*" else value
        for option in select.options:
            option.default = option.value == value
        self.page = 0
        await self.refresh(interaction)

    @discord.ui.select(placeholder="Open a story", row=1)
    async def open_story(
        self, interaction: discord.Interaction, select: discord.ui.Select[Any]
    ) -> None:
        await self.frontend.show_story(interaction, int(select.values[0]), back=self)


class StoryDetailView(GuardedView):
    def __init__(
        self, frontend: Frontend, user_id: int, story_id: int, back: MyStoriesView | None
    ) -> None:
        super().__init__(timeout=900)
        self.frontend, self.user_id, self.story_id, self.back_to = frontend, user_id, story_id, back
        if back is None:
            self.remove_item(self.back)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Export", emoji="📄", style=discord.ButtonStyle.primary)
    async def export(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await self.frontend.export_story(interaction, self.story_id)

    @discord.ui.button(label="Delete", emoji="🗑️", style=discord.ButtonStyle.danger)
    async def delete(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        confirm = ConfirmView(
            self.user_id, "Delete it", lambda i: self.frontend.delete_story(i, self.story_id)
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
    def __init__(self, user_id: int, label: str, on_confirm: Any) -> None:
        super().__init__(timeout=300)
        self.user_id = user_id
        self.on_confirm = on_confirm
        self.confirm.label = label

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

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
