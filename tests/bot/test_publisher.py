"""bot.publisher's units: throttled progress edits, retries of the edits that
matter, a part split over several messages, and what happens when Discord says
a message or a channel is gone.

Discord is a fake channel and fake messages that record what they are asked and
raise real discord.py exceptions; the message book is a recorder; the clock the
throttle reads is a fake one, and backoff sleeps are recorded, not slept. The
whole flow against a fake Discord is in test_evening.py and its neighbours.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

import bot.publisher as publisher_module
from bot import render
from bot.i18n import messages
from bot.publisher import CONTINUE_EMOJI, ChannelGone, Edit, Publisher
from generation.errors import Cancelled
from storage.models import MessageRecord, Part, Story
from stories.errors import StoryDeleted
from stories.service import PartView

EN = messages()  # the bot's English, its source language

UNKNOWN_MESSAGE, UNKNOWN_CHANNEL, MISSING_ACCESS, MISSING_PERMISSIONS = 10008, 10003, 50001, 50013
_ids = itertools.count(5000)


PART_11_BUTTONS = [
    "story:continue:11",
    "story:vote:11",
    "story:reroll:11",
    "story:notes:11",
    "story:report:11",
    "story:share:11",
]


def http_error(cls: type[discord.HTTPException], status: int, code: int) -> discord.HTTPException:
    return cls(SimpleNamespace(status=status, reason="x"), {"code": code, "message": "no"})


def gone(code: int = UNKNOWN_MESSAGE) -> discord.HTTPException:
    return http_error(discord.NotFound, 404, code)


def server_error() -> discord.HTTPException:
    return http_error(discord.DiscordServerError, 503, 0)


def forbidden(code: int = MISSING_PERMISSIONS) -> discord.HTTPException:
    return http_error(discord.Forbidden, 403, code)


# ----------------------------------------------------------------------- fakes
class FakeMessage:
    def __init__(self, channel: FakeChannel, content: str = "", id: int | None = None) -> None:
        self.id = id if id is not None else next(_ids)
        self.channel = channel
        self.content = content
        self.view: Any = None
        self.edits: list[dict[str, Any]] = []
        self.failures: list[BaseException] = []  # raised by the next edits, in order
        self.reactions: list[str] = []
        self.react_failure: BaseException | None = None
        self.deleted = False

    async def edit(self, **fields: Any) -> FakeMessage:
        if self.failures:
            raise self.failures.pop(0)
        self.edits.append(fields)
        self.content = fields.get("content", self.content)
        self.view = fields.get("view", self.view)
        return self

    async def add_reaction(self, emoji: str) -> None:
        if self.react_failure is not None:
            raise self.react_failure
        self.reactions.append(emoji)

    async def delete(self) -> None:
        self.deleted = True

    def to_reference(self, *, fail_if_not_exists: bool = True) -> tuple[str, int]:
        assert not fail_if_not_exists
        return ("reply-to", self.id)


class FakeChannel:
    def __init__(self, id: int = 77) -> None:
        self.id = id
        self.sent: list[tuple[FakeMessage, Any, Any]] = []  # message, view, reference
        self.messages: dict[int, FakeMessage] = {}
        self.send_failure: BaseException | None = None

    async def send(self, content: str, *, view: Any = None, reference: Any = None) -> FakeMessage:
        await asyncio.sleep(0)  # a request: other tasks run meanwhile
        if self.send_failure is not None:
            raise self.send_failure
        message = FakeMessage(self, content)
        message.view = view
        self.sent.append((message, view, reference))
        self.messages[message.id] = message
        return message

    def get_partial_message(self, message_id: int) -> FakeMessage:
        return self.messages.setdefault(message_id, FakeMessage(self, id=message_id))

    def message(self, content: str = "") -> FakeMessage:
        message = FakeMessage(self, content)
        self.messages[message.id] = message
        return message


@dataclass
class FakeBook:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    parts: dict[int, list[MessageRecord]] = field(default_factory=dict)
    showing_run_failure: BaseException | None = None

    async def showing_run(
        self, message_id: int, channel_id: int, *, story_id: int, run_id: int, state: str
    ) -> None:
        if self.showing_run_failure is not None:
            raise self.showing_run_failure
        self.calls.append(("showing_run", message_id, run_id, state))

    async def showing_part(
        self, message_id: int, channel_id: int, *, story_id: int, part_id: int, chunk: int
    ) -> None:
        self.calls.append(("showing_part", message_id, part_id, chunk))

    async def should_show_part(self, part_id: int, message_ids: list[int]) -> None:
        self.calls.append(("should_show_part", part_id, message_ids))

    async def confirmed(self, message_id: int, shows: str) -> None:
        self.calls.append(("confirmed", message_id, shows))

    async def forget(self, message_id: int) -> bool:
        self.calls.append(("forget", message_id))
        return True

    async def of_part(self, part_id: int) -> list[MessageRecord]:
        return self.parts.get(part_id, [])

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == name]


class Clock:
    """What bot.publisher reads as time.monotonic: moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def story(id: int = 3) -> Story:
    return Story(id, 42, "discord", 1, 77, "crime", "A title", "done", 0.0, 0.0)


def part(id: int, text: str, seed: int = 1234) -> Part:
    return Part(id, 3, 1, "generated", text, 42, None, seed, "tiny", 5, 50, 0.1, 1.0, "length", 0.0)


@dataclass(eq=False)
class FakeRun:
    """What the publisher reads of a stories.service.Run."""

    id: int = 7
    kind: str = "start"
    number: int = 1
    previous_text: str = "The detective reached the crime scene"
    position: int = 2
    state: str = "queued"
    announced: bool = False
    replaces: Part | None = None
    story: Story = field(default_factory=story)
    genre: Any = field(default_factory=lambda: SimpleNamespace(title="Crime"))
    position_steps: list[int] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    step_s: float = 0.0  # the fake clock moves this much before each position or delta
    clock: Clock | None = None
    result: Any = None  # a PartOutcome-like object, or an exception to raise
    cancelled: bool = False

    async def positions(self) -> AsyncIterator[int]:
        for position in self.position_steps:
            self._tick()
            yield position

    async def stream(self) -> AsyncIterator[str]:
        for delta in self.deltas:
            self._tick()
            yield delta

    async def outcome(self) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def _tick(self) -> None:
        if self.clock is not None:
            self.clock.now += self.step_s


@pytest.fixture
def book() -> FakeBook:
    return FakeBook()


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays asked for by the publisher, returned at once."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    fake_asyncio = SimpleNamespace(**{**vars(asyncio), "sleep": sleep})
    monkeypatch.setattr(publisher_module, "asyncio", fake_asyncio)
    return delays


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(publisher_module, "time", fake)
    return fake


def make(book: FakeBook, **options: Any) -> Publisher:
    return Publisher(book, service=None, **options)  # type: ignore[arg-type]


def custom_ids(view: discord.ui.View | None) -> list[str | None]:
    return [getattr(item, "custom_id", None) for item in view.children] if view else []


# --------------------------------------------------------------------- posting
def test_waiting_text_shows_the_prompt_of_a_new_story_only(book: FakeBook) -> None:
    publisher = make(book)
    start = FakeRun(previous_text="A *dark* night")
    assert publisher.waiting_text(start, 3, EN) == (
        "**A \\*dark\\* night** ▌\n-# ⏳ Crime · queued, position 3"
    )
    later = FakeRun(kind="continue", number=2, previous_text="everything so far")
    assert publisher.waiting_text(later, 0, EN) == "-# ✍️ Crime · writing…"
    reroll = FakeRun(kind="reroll", number=4)
    assert "new version of part 4" in publisher.waiting_text(reroll, 1, EN)


async def test_post_sends_the_waiting_message_with_cancel(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    reply_to = channel.message("the ➕ that asked")
    message = await publisher.post(FakeRun(), channel, reply_to=reply_to)  # type: ignore[arg-type]
    ((sent, view, reference),) = channel.sent
    assert sent is message and reference == ("reply-to", reply_to.id)
    assert custom_ids(view) == ["story:cancel:7"]
    assert "queued, position 2" in sent.content
    assert book.calls == [("showing_run", message.id, 7, "queued")]


async def test_post_takes_over_an_existing_message(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book)
    existing = channel.message("⚠️ interrupted")
    message = await publisher.post(FakeRun(), channel, existing=existing)  # type: ignore[arg-type]
    assert message is existing and channel.sent == []
    assert custom_ids(existing.view) == ["story:cancel:7"]


async def test_post_replaces_an_existing_message_that_was_deleted(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    existing = channel.message()
    existing.failures = [gone()]
    message = await publisher.post(FakeRun(), channel, existing=existing)  # type: ignore[arg-type]
    assert message is not existing and [m for m, _, _ in channel.sent] == [message]


async def test_post_into_a_deleted_channel_raises(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book)
    existing = channel.message()
    existing.failures = [gone(UNKNOWN_CHANNEL)]
    with pytest.raises(discord.NotFound):
        await publisher.post(FakeRun(), channel, existing=existing)  # type: ignore[arg-type]
    assert channel.sent == []


@pytest.mark.parametrize(
    ("failure", "shown"),
    [(StoryDeleted(), "This story was deleted"), (RuntimeError("db"), "could not be started")],
)
async def test_a_message_the_book_cannot_link_does_not_stay_queued(
    book: FakeBook, channel: FakeChannel, failure: BaseException, shown: str
) -> None:
    publisher = make(book)
    book.showing_run_failure = failure
    with pytest.raises(type(failure)):
        await publisher.post(FakeRun(), channel)  # type: ignore[arg-type]
    ((message, _, _),) = channel.sent
    assert shown in message.content and message.view is None  # no Cancel button left


async def test_adopt_posts_once_for_two_joiners_at_once(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    run = FakeRun(kind="continue", result=Cancelled())
    first, second = await asyncio.gather(
        publisher.adopt(run, channel),  # type: ignore[arg-type]
        publisher.adopt(run, channel),  # type: ignore[arg-type]
    )
    assert (first is None) != (second is None)
    assert len(channel.sent) == 1
    await publisher.settle(within=5)
    assert run.id not in publisher._adopted  # the run ended: a later join may show it
    assert await publisher.adopt(FakeRun(announced=True), channel) is None  # type: ignore[arg-type]


# --------------------------------------------------------- throttled progress
async def test_streaming_edits_at_most_once_per_interval(
    book: FakeBook, channel: FakeChannel, clock: Clock
) -> None:
    publisher = make(book, edit_interval=1.0)
    message = channel.message()
    deltas = [f" word{i}." for i in range(20)]
    run = FakeRun(deltas=deltas, step_s=0.25, clock=clock)
    result = await publisher._follow_progress(run, channel, message)  # type: ignore[arg-type]
    assert result is message
    # A delta every 0.25 s: the first is shown at once, then one every fourth.
    head = "**The detective reached the crime scene**"
    assert [e["content"] for e in message.edits] == [
        f"{head}{''.join(deltas[: i + 1])} ▌\n-# ✍️ Crime · writing…" for i in (0, 4, 8, 12, 16)
    ]


async def test_queue_positions_are_throttled_and_unchanged_text_is_not_sent(
    book: FakeBook, channel: FakeChannel, clock: Clock
) -> None:
    publisher = make(book, edit_interval=1.0)
    run = FakeRun(kind="continue", position_steps=[5, 4, 3, 3, 3, 3, 2, 1, 0], step_s=0.5)
    run.clock = clock
    message = channel.message(publisher.waiting_text(run, 5, EN))  # type: ignore[arg-type]
    await publisher._follow_progress(run, channel, message)  # type: ignore[arg-type]
    shown = [e["content"] for e in message.edits]
    # Every 0.5 s a position: 5 (shown already), 4 (1 s since the start: due),
    # 3 (0.5 s later: not due), 3 (due), 3, 3 (shown already), 2 (due), 1 (not
    # due); 0 is "writing", which the stream shows.
    assert shown == [
        publisher.waiting_text(run, 4, EN),  # type: ignore[arg-type]
        publisher.waiting_text(run, 3, EN),  # type: ignore[arg-type]
        publisher.waiting_text(run, 2, EN),  # type: ignore[arg-type]
    ]


async def test_no_interval_means_every_change_is_shown(
    book: FakeBook, channel: FakeChannel, clock: Clock
) -> None:
    publisher = make(book, edit_interval=0.0)
    message = channel.message()
    run = FakeRun(kind="continue", deltas=[" a", " b", " c"], clock=clock)
    await publisher._follow_progress(run, channel, message)  # type: ignore[arg-type]
    assert [e["content"].split(" ▌")[0] for e in message.edits] == ["a", "a b", "a b c"]


async def test_a_progress_edit_on_a_deleted_message_posts_it_again(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    old = channel.message()
    old.failures = [gone()]
    fresh = await publisher._progress(FakeRun(state="generating"), channel, old, "text")  # type: ignore[arg-type]
    assert fresh is not old and fresh.content == "text"
    assert custom_ids(channel.sent[0][1]) == ["story:cancel:7"]
    assert book.calls == [("forget", old.id), ("showing_run", fresh.id, 7, "generating")]
    assert fresh.id in publisher._live and old.id not in publisher._live


@pytest.mark.parametrize("failure", [gone(UNKNOWN_CHANNEL), forbidden(MISSING_ACCESS)])
async def test_a_progress_edit_in_a_deleted_channel_stops(
    book: FakeBook, channel: FakeChannel, failure: discord.HTTPException
) -> None:
    publisher = make(book)
    message = channel.message()
    message.failures = [failure]
    with pytest.raises(ChannelGone):
        await publisher._progress(FakeRun(), channel, message, "text")  # type: ignore[arg-type]
    assert channel.sent == []


async def test_a_failed_progress_edit_is_skipped(
    book: FakeBook, channel: FakeChannel, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = make(book)
    message = channel.message("before")
    message.failures = [server_error()]
    with caplog.at_level(logging.INFO, "bot.publisher"):
        result = await publisher._progress(FakeRun(), channel, message, "text")  # type: ignore[arg-type]
    assert result is message and message.content == "before"
    assert "skipped a progress edit" in caplog.text
    assert book.calls == [] and channel.sent == []


# ----------------------------------------------------------------- final edits
async def test_a_final_edit_is_retried_with_backoff(
    book: FakeBook, channel: FakeChannel, sleeps: list[float]
) -> None:
    publisher = make(book, final_retries=3, retry_base_s=0.5)
    message = channel.message()
    message.failures = [server_error(), server_error()]
    assert await publisher._final_edit(message, content="done") is message
    assert sleeps == [0.5, 1.0] and message.content == "done"


async def test_a_final_edit_gives_up_after_its_retries(
    book: FakeBook, channel: FakeChannel, sleeps: list[float]
) -> None:
    publisher = make(book, final_retries=2, retry_base_s=1.0)
    message = channel.message("stale")
    message.failures = [server_error() for _ in range(5)]
    assert await publisher._final_edit(message, content="done") is Edit.FAILED
    assert sleeps == [1.0, 2.0] and len(message.failures) == 2  # three tries in all
    assert message.content == "stale"


async def test_no_retries_while_closing(
    book: FakeBook, channel: FakeChannel, sleeps: list[float]
) -> None:
    publisher = make(book, final_retries=3)
    await publisher.settle(within=1)
    message = channel.message()
    message.failures = [server_error(), server_error()]
    assert await publisher._final_edit(message, content="done") is Edit.FAILED
    assert sleeps == [] and len(message.failures) == 1


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [(gone(), Edit.GONE), (forbidden(), Edit.FAILED)],
    ids=["deleted", "no-permission"],
)
async def test_a_final_edit_that_cannot_succeed_is_not_retried(
    book: FakeBook,
    channel: FakeChannel,
    sleeps: list[float],
    failure: discord.HTTPException,
    outcome: Edit,
) -> None:
    publisher = make(book, final_retries=3)
    message = channel.message()
    message.failures = [failure, server_error()]
    assert await publisher._final_edit(message, content="x") is outcome
    assert sleeps == [] and len(message.failures) == 1


@pytest.mark.parametrize("failure", [gone(UNKNOWN_CHANNEL), forbidden(MISSING_ACCESS)])
async def test_a_final_edit_in_a_deleted_channel_raises(
    book: FakeBook, channel: FakeChannel, failure: discord.HTTPException
) -> None:
    message = channel.message()
    message.failures = [failure]
    with pytest.raises(ChannelGone):
        await make(book)._final_edit(message, content="x")


# ------------------------------------------------------------- showing a part
def part_view(text: str, *, id: int = 11, number: int = 1, prompt: str | None = "Prompt") -> Any:
    return PartView(story(), part(id, text), number, "Crime", prompt)


LONG = " ".join(f"Sentence number {i} is here." for i in range(170))  # about 4 700 characters


async def test_a_long_part_fills_the_run_message_then_posts_the_rest(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    run_message = channel.message("queued")
    shown = await publisher.show_part(
        part_view(" " + LONG), channel, [(run_message, "run:7:queued")]
    )
    chunks = render.final_chunks(
        render.story_body("Prompt", " " + LONG), render.footer(EN, "Crime", 42, 1, 1234)
    )
    assert len(chunks) == 3 and len(shown) == 3 and shown[0] is run_message
    assert [m.content for m in shown] == chunks
    assert all(len(m.content) <= render.MESSAGE_LIMIT for m in shown)
    assert run_message.edits == [{"content": chunks[0], "view": None}]  # Cancel removed
    (_, view1, ref1), (_, view2, ref2) = channel.sent
    assert view1 is discord.utils.MISSING and ref1 == ("reply-to", run_message.id)
    assert custom_ids(view2) == PART_11_BUTTONS
    assert ref2 == ("reply-to", shown[1].id)  # each chunk replies to the one before
    assert [m.reactions for m in shown] == [[], [], [CONTINUE_EMOJI]]
    assert book.calls == [
        ("should_show_part", 11, [run_message.id]),
        ("confirmed", run_message.id, "part:11:0"),
        ("showing_part", shown[1].id, 11, 1),
        ("showing_part", shown[2].id, 11, 2),
    ]


async def test_a_shorter_new_version_deletes_what_is_left_over(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    old = [channel.message(f"old {i}") for i in range(3)]
    targets = [(m, f"part:5:{i}") for i, m in enumerate(old)]
    shown = await publisher.show_part(part_view(" Short.", number=2, prompt=None), channel, targets)  # type: ignore[arg-type]
    assert shown == [old[0]] and channel.sent == []
    assert old[0].content == "Short.\n-# Crime · by <@42> · part 2 · seed 1234"
    assert custom_ids(old[0].view) == PART_11_BUTTONS
    assert [m.deleted for m in old] == [False, True, True]
    assert ("forget", old[1].id) in book.calls and ("forget", old[2].id) in book.calls
    assert old[0].reactions == [CONTINUE_EMOJI]  # the ➕ was on the old last chunk


async def test_the_last_chunk_keeps_its_reaction(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book)
    old = [channel.message(), channel.message()]
    targets = [(old[0], "part:5:0"), (old[1], "part:5:1")]
    await publisher.show_part(part_view(" " + LONG[:2500]), channel, targets)  # type: ignore[arg-type]
    assert channel.sent == [] and [m.reactions for m in old] == [[], []]


async def test_a_deleted_target_is_posted_again(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book)
    target = channel.message()
    target.failures = [gone()]
    (shown,) = await publisher.show_part(part_view(" Short."), channel, [(target, "part:5:0")])
    assert shown is not target and shown.reactions == [CONTINUE_EMOJI]
    assert book.of("forget") == [(target.id,)]
    assert book.of("showing_part") == [(shown.id, 11, 0)]


async def test_a_target_that_stays_stale_is_left_for_sync(
    book: FakeBook, channel: FakeChannel, sleeps: list[float]
) -> None:
    publisher = make(book, final_retries=1)
    target = channel.message("old")
    target.failures = [server_error(), server_error()]
    (shown,) = await publisher.show_part(part_view(" Short."), channel, [(target, "run:7:queued")])
    assert shown is target and target.content == "old" and channel.sent == []
    assert book.of("confirmed") == []  # stale: `sync` finds it
    assert book.of("should_show_part") == [(11, [target.id])]


@pytest.mark.parametrize(
    ("failure", "level"), [(forbidden(), logging.INFO), (server_error(), logging.WARNING)]
)
async def test_a_refused_reaction_is_logged_not_raised(
    book: FakeBook,
    channel: FakeChannel,
    caplog: pytest.LogCaptureFixture,
    failure: BaseException,
    level: int,
) -> None:
    message = channel.message()
    message.react_failure = failure
    with caplog.at_level(logging.INFO, "bot.publisher"):
        await make(book)._react(message)
    assert [r.levelno for r in caplog.records if r.name == "bot.publisher"] == [level]


# ------------------------------------------------------------ following a run
async def test_a_failed_run_shows_why_with_retry(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book)
    message = channel.message()
    run = FakeRun(state="failed", result=RuntimeError("The disk is full."))
    await publisher._follow(run, channel, message)  # type: ignore[arg-type]
    assert "⚠️ The disk is full." in message.content and "▌" not in message.content
    assert custom_ids(message.view) == ["story:retry:7"]
    assert book.of("confirmed") == [(message.id, "run:7:failed")]


async def test_a_cancelled_reroll_deletes_its_own_message(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    message = channel.message()
    run = FakeRun(kind="reroll", result=Cancelled())
    await publisher._follow(run, channel, message)  # type: ignore[arg-type]
    assert message.deleted and book.of("forget") == [(message.id,)]


async def test_a_deleted_channel_stops_the_run(book: FakeBook, channel: FakeChannel) -> None:
    publisher = make(book, edit_interval=0.0)
    message = channel.message()
    message.failures = [gone(UNKNOWN_CHANNEL)]
    run = FakeRun(deltas=[" text"], result=AssertionError("not awaited"))
    await publisher._follow(run, channel, message)  # type: ignore[arg-type]
    assert run.cancelled and book.of("forget") == [(message.id,)]


async def test_a_finished_reroll_shows_in_the_old_messages(
    book: FakeBook, channel: FakeChannel
) -> None:
    publisher = make(book)
    old = channel.message("old version")
    book.parts[5] = [MessageRecord(old.id, channel.id, 3, None, 5, 0, "part:5:0", "part:5:0")]
    own = channel.message()
    new_part = part(11, " A new version.")
    run = FakeRun(
        kind="reroll",
        number=2,
        replaces=part(5, " The old version."),
        result=SimpleNamespace(story=story(), part=new_part),
    )
    await publisher._follow(run, channel, own)  # type: ignore[arg-type]
    assert old.content.startswith("A new version.") and own.deleted
    assert custom_ids(old.view) == PART_11_BUTTONS
    assert old.reactions == []  # it had the ➕ already


# ------------------------------------------------------------------- shutdown
async def test_settle_stops_what_does_not_finish_in_time(
    book: FakeBook, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = make(book)
    never = asyncio.Event()
    finished: list[str] = []

    async def quick() -> None:
        finished.append("quick")

    publisher._spawn(never.wait(), "stuck", message_id=1)
    publisher._spawn(quick(), "quick", message_id=2)
    with caplog.at_level(logging.WARNING, "bot.publisher"):
        await publisher.settle(within=0.05)
    assert finished == ["quick"] and publisher._tasks == set()
    assert publisher._live == set()
    assert "1 message updates left for the next start" in caplog.text


async def test_a_failing_update_is_logged_with_its_name(
    book: FakeBook, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = make(book)

    async def broken() -> None:
        raise RuntimeError("boom")

    publisher._spawn(broken(), "publish-run-9", message_id=9)
    await publisher.settle(within=5)
    (record,) = [r for r in caplog.records if r.name == "bot.publisher"]
    assert record.getMessage() == "publish-run-9: could not update Discord"
    assert record.exc_info is not None and publisher._live == set()
