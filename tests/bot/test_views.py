"""bot.views: story buttons (a DynamicItem) and the private /mystories views.

The views are the real discord.py classes. Clicks go through discord.py's own
dispatch (`View._dispatch_item`, what its ViewStore calls for a component
interaction), so `interaction_check`, a select's values and `on_error` are
discord.py's; the interaction is a minimal fake with the attributes that path
and our callbacks read (`user`, `data`, `response`). Nothing reaches a network.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot import views
from bot.i18n import messages
from storage.models import Story, StoryPage, StorySummary

EN = messages()  # the bot's English, its source language

OWNER, STRANGER = 1001, 2002


class FakeResponse:
    def __init__(self) -> None:
        self.edits: list[dict[str, Any]] = []

    async def edit_message(self, **fields: Any) -> None:
        self.edits.append(fields)


def click(user_id: int, **data: Any) -> Any:
    """A component interaction from `user_id` (data: e.g. values=[...] for a select)."""
    return SimpleNamespace(
        user=SimpleNamespace(id=user_id),
        data={"component_type": 2, "custom_id": "x", **data},
        response=FakeResponse(),
    )


async def press(view: discord.ui.View, item: discord.ui.Item[Any], interaction: Any) -> None:
    task = view._dispatch_item(item, interaction)
    assert task is not None, "the view is stopped"
    await task


# ------------------------------------------------------------- story buttons
@dataclass
class FakeActions:
    calls: list[tuple[Any, str, int]] = field(default_factory=list)
    errors: list[tuple[Any, BaseException]] = field(default_factory=list)
    fail: BaseException | None = None

    async def on_error(self, interaction: Any, error: BaseException) -> None:
        self.errors.append((interaction, error))

    async def story_button(self, interaction: Any, action: str, id: int) -> None:
        self.calls.append((interaction, action, id))
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def actions() -> FakeActions:
    return FakeActions()


@pytest.fixture
def story_button(actions: FakeActions) -> type[discord.ui.DynamicItem[Any]]:
    return views.story_button_type(actions)


def template(item_type: type[discord.ui.DynamicItem[Any]]) -> re.Pattern[str]:
    return item_type.__discord_ui_compiled_template__


def test_the_label_table() -> None:
    looks = {action: (look.label, look.emoji, look.style) for action, look in views.BUTTONS.items()}
    assert looks == {
        "continue": ("Continue", "➕", discord.ButtonStyle.primary),
        "reroll": ("Reroll", "🎲", discord.ButtonStyle.secondary),
        "cancel": ("Cancel", None, discord.ButtonStyle.danger),
        "retry": ("Retry", "🔁", discord.ButtonStyle.primary),
        "report": ("Report", "🚩", discord.ButtonStyle.secondary),
        "notes": ("Notes", "📝", discord.ButtonStyle.secondary),
        "vote": ("Vote", "🗳️", discord.ButtonStyle.secondary),
        "pick1": ("1", None, discord.ButtonStyle.primary),
        "pick2": ("2", None, discord.ButtonStyle.primary),
        "pick3": ("3", None, discord.ButtonStyle.primary),
        "share": ("Share", "🔗", discord.ButtonStyle.secondary),
        "unshare": ("Revoke link", None, discord.ButtonStyle.danger),
    }


@pytest.mark.parametrize("action", list(views.BUTTONS))
@pytest.mark.parametrize("id", [0, 1, 42, 2**31, 2**63 - 1, 10**20 - 1])
async def test_custom_id_round_trip(
    story_button: type[discord.ui.DynamicItem[Any]], action: str, id: int
) -> None:
    made = story_button(action, id)  # type: ignore[call-arg]
    custom_id = made.custom_id
    assert custom_id == f"story:{action}:{id}" and len(custom_id) <= 100  # Discord's limit
    match = template(story_button).fullmatch(custom_id)
    assert match is not None
    parsed = await story_button.from_custom_id(click(OWNER), made.item, match)
    assert (parsed.action, parsed.target) == (action, id)  # type: ignore[attr-defined]
    assert parsed.to_component_dict() == made.to_component_dict()
    look = views.BUTTONS[action]
    assert (made.item.label, made.item.style) == (look.label, look.style)
    assert (str(made.item.emoji) if made.item.emoji else None) == look.emoji


@pytest.mark.parametrize(
    "custom_id",
    [
        "story:continue:",  # no id
        "story:continue:-1",
        "story:continue:1.5",
        "story:continue:1e3",
        "story:continue: 1",
        "story:continue:1 ",
        "story:continue:42\n",
        "story:continue:" + "1" * 21,  # past 20 digits
        "story:continue:٤٢",  # Arabic-Indic digits: int() would take them
        "story:continue:４２",  # fullwidth digits
        "story:delete:1",  # not an action
        "story:Continue:1",
        "story::1",
        "story:continue",
        "stories:continue:1",
        "xstory:continue:1",
        "story:continue:1:2",
        "story:continue|reroll:1",
        "",
    ],
)
def test_malformed_or_out_of_range_custom_ids_do_not_match(
    story_button: type[discord.ui.DynamicItem[Any]], custom_id: str
) -> None:
    assert template(story_button).fullmatch(custom_id) is None


async def test_the_buttons_posted_are_the_ones_the_registered_item_answers(
    story_button: type[discord.ui.DynamicItem[Any]],
) -> None:
    """`buttons()` builds plain buttons; clicks reach the DynamicItem by custom_id,
    and after a restart it rebuilds an identical button from that id alone."""
    view = views.buttons(EN, ("continue", 4), ("reroll", 4), ("cancel", 9), ("retry", 9))
    assert view.timeout is None and view.is_finished()  # not kept per message
    for posted in view.children:
        assert isinstance(posted, discord.ui.Button)
        match = template(story_button).fullmatch(posted.custom_id or "")
        assert match is not None, posted.custom_id
        rebuilt = story_button(match["action"], int(match["id"]))  # type: ignore[call-arg]
        assert rebuilt.to_component_dict() == posted.to_component_dict()


async def test_part_cancel_and_retry_buttons() -> None:
    def ids(view: discord.ui.View) -> list[str | None]:
        return [getattr(item, "custom_id", None) for item in view.children]

    assert ids(views.part_buttons(EN, 7)) == [
        "story:continue:7",
        "story:vote:7",
        "story:reroll:7",
        "story:notes:7",
        "story:report:7",
        "story:share:7",
    ]
    assert ids(views.cancel_button(EN, 8)) == ["story:cancel:8"]
    assert ids(views.retry_button(EN, 9)) == ["story:retry:9"]


async def test_a_click_calls_the_handler_with_action_and_id(
    story_button: type[discord.ui.DynamicItem[Any]], actions: FakeActions
) -> None:
    interaction = click(OWNER)
    await story_button("reroll", 12).callback(interaction)  # type: ignore[call-arg]
    assert actions.calls == [(interaction, "reroll", 12)]
    assert actions.errors == []


async def test_a_failing_click_goes_to_the_error_handler(
    story_button: type[discord.ui.DynamicItem[Any]], actions: FakeActions
) -> None:
    actions.fail = RuntimeError("boom")
    interaction = click(OWNER)
    await story_button("continue", 3).callback(interaction)  # type: ignore[call-arg]
    assert actions.errors == [(interaction, actions.fail)]


# ----------------------------------------------------------------- /mystories
def story(id: int, *, author: int = OWNER, genre: str = "crime", title: str = "") -> Story:
    now = time.time()
    return Story(
        id=id,
        author_id=author,
        source="discord",
        guild_id=1,
        channel_id=2,
        genre=genre,
        title=title or f"Story {id}",
        status="done",
        created_at=now - 2 * 3600,
        updated_at=now,
    )


@dataclass
class FakeLibrary:
    """Implements bot.views.Library over a list of stories."""

    stories: list[Story]
    pages: list[tuple[int, int, int, str | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    shown: list[tuple[int, Any]] = field(default_factory=list)
    exported: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    fail_export: BaseException | None = None

    async def on_error(self, interaction: Any, error: BaseException) -> None:
        self.errors.append(error)

    async def story_page(
        self, user_id: int, page: int, per_page: int, genre: str | None
    ) -> StoryPage:
        self.pages.append((user_id, page, per_page, genre))
        mine = [s for s in self.stories if s.author_id == user_id and genre in (None, s.genre)]
        offset = page * per_page
        items = [StorySummary(s, 3) for s in mine[offset : offset + per_page]]
        return StoryPage(items, len(mine), offset, per_page)

    async def show_story(self, interaction: Any, story_id: int, back: Any) -> None:
        self.shown.append((story_id, back))

    async def export_story(self, interaction: Any, story_id: int) -> None:
        self.exported.append(story_id)
        if self.fail_export is not None:
            raise self.fail_export

    async def delete_story(self, interaction: Any, story_id: int) -> None:
        self.deleted.append(story_id)


GENRES = [("crime", "Crime"), ("fantasy", "Fantasy")]


def library(count: int = 23, fantasy: set[int] | None = None) -> FakeLibrary:
    fantasy = fantasy or set()
    mine = [story(i, genre="fantasy" if i in fantasy else "crime") for i in range(1, count + 1)]
    theirs = [story(100 + i, author=STRANGER) for i in range(5)]
    return FakeLibrary(mine + theirs)


async def test_the_first_page() -> None:
    lib = library()
    view = views.MyStoriesView(lib, OWNER, GENRES)
    text, page = await view.render()
    assert lib.pages == [(OWNER, 0, 10, None)]
    assert text.splitlines()[0] == "**Your stories** (1–10 of 23)"
    assert text.splitlines()[1] == "`#1` **Story 1** · crime · 2 part(s) · done · 2 h ago"
    assert len(page.items) == 10
    assert view.previous.disabled and not view.next.disabled
    assert [o.value for o in view.open_story.options] == [str(i) for i in range(1, 11)]
    assert not view.open_story.disabled
    assert [(o.label, o.value, o.default) for o in view.genre_select.options] == [
        ("All genres", "*", True),
        ("Crime", "crime", False),
        ("Fantasy", "fantasy", False),
    ]


async def test_paging_forward_and_back() -> None:
    lib = library(23)
    view = views.MyStoriesView(lib, OWNER, GENRES)
    await view.render()

    interaction = click(OWNER)
    await press(view, view.next, interaction)
    assert view.page == 1 and not view.previous.disabled and not view.next.disabled
    (edit,) = interaction.response.edits
    assert edit["view"] is view and "(11–20 of 23)" in edit["content"]

    interaction = click(OWNER)
    await press(view, view.next, interaction)
    assert view.page == 2 and view.next.disabled
    assert "(21–23 of 23)" in interaction.response.edits[0]["content"]
    assert [o.value for o in view.open_story.options] == ["21", "22", "23"]

    for expected in (1, 0, 0):  # Previous on the first page stays there
        await press(view, view.previous, click(OWNER))
        assert view.page == expected
    assert view.previous.disabled
    assert [p[1] for p in lib.pages] == [0, 1, 2, 1, 0, 0]


async def test_someone_else_cannot_use_the_view() -> None:
    lib = library()
    view = views.MyStoriesView(lib, OWNER, GENRES)
    await view.render()
    intruder = click(STRANGER)
    await press(view, view.next, intruder)
    await press(view, view.genre_select, click(STRANGER, component_type=3, values=["fantasy"]))
    await press(view, view.open_story, click(STRANGER, component_type=3, values=["1"]))
    assert view.page == 0 and view.genre is None
    assert intruder.response.edits == [] and lib.shown == [] and lib.errors == []
    assert lib.pages == [(OWNER, 0, 10, None)]  # nothing of the owner's was read again
    assert await view.interaction_check(click(OWNER))
    assert not await view.interaction_check(click(STRANGER))


async def test_filtering_by_genre_starts_again_at_the_first_page() -> None:
    lib = library(23, fantasy={3, 5, 21})
    view = views.MyStoriesView(lib, OWNER, GENRES)
    await view.render()
    await press(view, view.next, click(OWNER))
    assert view.page == 1

    interaction = click(OWNER, component_type=3, values=["fantasy"])
    await press(view, view.genre_select, interaction)
    assert view.page == 0 and view.genre == "fantasy"
    assert lib.pages[-1] == (OWNER, 0, 10, "fantasy")
    content = interaction.response.edits[0]["content"]
    assert content.splitlines()[0] == "**Your stories** (1–3 of 3, fantasy)"
    assert view.previous.disabled and view.next.disabled
    assert [o.value for o in view.genre_select.options if o.default] == ["fantasy"]

    await press(view, view.genre_select, click(OWNER, component_type=3, values=["*"]))
    assert view.genre is None and lib.pages[-1] == (OWNER, 0, 10, None)
    assert [o.value for o in view.genre_select.options if o.default] == ["*"]


async def test_opening_a_story_hands_back_the_list() -> None:
    lib = library()
    view = views.MyStoriesView(lib, OWNER, GENRES)
    await view.render()
    await press(view, view.open_story, click(OWNER, component_type=3, values=["7"]))
    assert lib.shown == [(7, view)]


async def test_no_stories() -> None:
    lib = library(0)
    view = views.MyStoriesView(lib, OWNER, GENRES)
    text, _ = await view.render()
    assert text == "You have no stories yet. Start one with `/story`."
    assert view.previous.disabled and view.next.disabled and view.open_story.disabled
    assert [o.value for o in view.open_story.options] == ["0"]  # a select needs an option
    view.genre = "fantasy"
    text, _ = await view.render()
    assert text == "You have no stories in fantasy yet. Start one with `/story`."


async def test_select_limits_are_discords() -> None:
    """At most 25 options in a select, labels of at most 100 characters."""
    genres = [(f"g{i}", f"Genre {i}") for i in range(40)]
    lib = FakeLibrary([story(1, title="T" * 300)])
    view = views.MyStoriesView(lib, OWNER, genres)
    assert len(view.genre_select.options) == 25
    await view.render()
    assert len(view.open_story.options[0].label) == 100


def test_page_text_escapes_titles_and_says_how_long_ago() -> None:
    now = time.time()
    stories = [
        Story(1, OWNER, "discord", 1, 2, "crime", "**bold** _x_", "done", now - 5, now),
        Story(2, OWNER, "discord", 1, 2, "crime", "b", "failed", now - 90, now),
        Story(3, OWNER, "discord", 1, 2, "crime", "c", "done", now - 3 * 86400, now),
    ]
    page = StoryPage([StorySummary(s, 1) for s in stories], 3, 0, 10)
    lines = views.page_text(EN, page, None).splitlines()
    assert r"**\*\*bold\*\* \_x\_**" in lines[1] and lines[1].endswith("just now")
    assert lines[2].endswith("· 0 part(s) · failed · 1 min ago")
    assert lines[3].endswith("3 d ago")


async def test_next_past_the_last_page_stays_on_the_last_page() -> None:
    lib = library(20)
    view = views.MyStoriesView(lib, OWNER, GENRES)
    await view.render()
    await press(view, view.next, click(OWNER))  # to page 2 of 2
    double = click(OWNER)
    await press(view, view.next, double)  # the same click, sent twice
    content = double.response.edits[0]["content"]
    assert "(11–20 of 20)" in content, content.splitlines()[0]


# ------------------------------------------------------- detail and confirm
async def test_detail_view_without_a_list_has_no_back_button() -> None:
    lib = library()
    detail = views.StoryDetailView(lib, OWNER, 5, back=None)
    assert [getattr(i, "label", None) for i in detail.children] == ["Export", "Share", "Delete"]
    listing = views.MyStoriesView(lib, OWNER, GENRES)
    detail = views.StoryDetailView(lib, OWNER, 5, back=listing)
    labels = [getattr(i, "label", None) for i in detail.children]
    assert labels == ["Export", "Share", "Delete", "Back"]

    interaction = click(OWNER)
    await press(detail, detail.back, interaction)
    (edit,) = interaction.response.edits
    assert edit["view"] is listing and "(1–10 of 23)" in edit["content"]


async def test_export_and_its_errors_go_to_the_library() -> None:
    lib = library()
    detail = views.StoryDetailView(lib, OWNER, 5, back=None)
    await press(detail, detail.export, click(OWNER))
    assert lib.exported == [5]
    lib.fail_export = RuntimeError("disk on fire")
    await press(detail, detail.export, click(OWNER))
    assert lib.errors == [lib.fail_export]
    await press(detail, detail.export, click(STRANGER))
    assert lib.exported == [5, 5]


async def test_delete_asks_first_then_deletes() -> None:
    lib = library()
    detail = views.StoryDetailView(lib, OWNER, 5, back=None)
    ask = click(OWNER)
    await press(detail, detail.delete, ask)
    (edit,) = ask.response.edits
    assert edit["content"].startswith("Delete story #5 and all its parts?")
    confirm = edit["view"]
    assert isinstance(confirm, views.ConfirmView) and confirm.owner == OWNER
    assert confirm.confirm.label == "Delete it"
    assert lib.deleted == []

    await press(confirm, confirm.confirm, click(STRANGER))
    assert lib.deleted == [] and not confirm.is_finished()
    await press(confirm, confirm.confirm, click(OWNER))
    assert lib.deleted == [5] and confirm.is_finished()


async def test_keep_everything() -> None:
    confirm = views.ConfirmView(OWNER, library().on_error, "Delete it", on_confirm=_never)
    interaction = click(OWNER)
    await press(confirm, confirm.keep, interaction)
    assert interaction.response.edits == [{"content": "Nothing was deleted.", "view": None}]
    assert confirm.is_finished()


async def _never(interaction: Any) -> None:
    raise AssertionError("confirmed")
