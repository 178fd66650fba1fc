"""Showing runs and parts in channel messages, and keeping those messages true.

A story is shown in ordinary channel messages owned by the bot (interaction
tokens die after 15 minutes; a queued story can take longer). A run's message
is posted before anything is generated (`post`, called from the service's
`announce`), shows the queue position with a Cancel button, then the text as it
streams (edited at most once per `edit_interval`), then the final part split at
sentence boundaries, with Continue and Reroll buttons and one ➕ reaction.

- A reroll streams into a message of its own and leaves the old version in
  place until the new one is complete; then the old messages show the new part.
- Every message is recorded in the `MessageBook` with what Discord confirmed it
  shows. A final update that fails for a reason other than "gone" is retried
  with backoff; what is still stale is brought up to date by `sync` (at the
  next start, or after a deletion).
- A message deleted meanwhile is posted again; a deleted channel stops the run.
- Everything here is said in the channel's server's language (bot.i18n), the
  story text itself excepted.
- Every request counts against the bot's `RequestBudget`: stream and queue
  edits go out only when there is room to spare (a skipped one is made up by
  the next), and each message's edits are spaced further apart the more
  stories stream at once, so new messages and final text never wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import discord

from bot import render
from bot.budget import RequestBudget, Skipped
from bot.i18n import Messages, for_channel
from bot.views import ballot_buttons, cancel_button, part_buttons, retry_button
from generation.errors import Cancelled
from storage.errors import NotFound
from storage.models import MessageRecord
from storage.votes import VoteRecord
from stories.errors import StoryDeleted
from stories.message_book import GONE, MessageBook, part_key, run_key, vote_key
from stories.service import PartView, Run, RunView, StoryService
from stories.votes import Vote

log = logging.getLogger(__name__)

CONTINUE_EMOJI = "➕"
UNKNOWN_CHANNEL = 10003
Target = discord.Message | discord.PartialMessage


class ChannelGone(Exception):
    """The channel was deleted, or the bot can no longer see it."""


class Edit(enum.Enum):
    GONE = "gone"  # the message was deleted
    FAILED = "failed"  # Discord refused or failed after retries: the message is stale


def _channel_gone(error: discord.HTTPException) -> bool:
    return error.code in (UNKNOWN_CHANNEL, 50001)  # Unknown Channel, Missing Access


class Publisher:
    def __init__(
        self,
        book: MessageBook,
        service: StoryService,
        *,
        edit_interval: float = 1.0,
        final_retries: int = 3,
        retry_base_s: float = 1.0,
        budget: RequestBudget | None = None,
    ) -> None:
        self.book = book
        self.service = service
        self.edit_interval = edit_interval
        # The client's, which counts its requests; None: edits are spaced by
        # `edit_interval` alone.
        self.budget = budget
        self.final_retries = final_retries
        self.retry_base_s = retry_base_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: set[int] = set()  # message ids a live task is updating
        self._adopted: set[int] = set()  # ids of HTTP runs a channel asked to see
        self._sync_lock = asyncio.Lock()
        self._closing = False

    # ----------------------------------------------------------------- posting
    def waiting_text(self, run: Run, position: int, t: Messages) -> str:
        head = render.story_body(run.previous_text, "") if run.kind == "start" else ""
        reroll_of = run.number if run.kind == "reroll" else None
        return render.progress(head, render.waiting_status(t, run.genre.title, position, reroll_of))

    async def post(
        self,
        run: Run,
        channel: discord.abc.Messageable,
        *,
        reply_to: Target | None = None,
        existing: Target | None = None,
    ) -> discord.Message:
        """Post (or take over) the message that will show this run, before it is
        generated. Raises what Discord raises (a missing permission, say)."""
        t = for_channel(channel)
        content = self.waiting_text(run, run.position, t)
        view = cancel_button(t, run.id)
        message: discord.Message | None = None
        if existing is not None:
            try:
                message = await existing.edit(content=content, view=view)
            except discord.NotFound as error:
                if _channel_gone(error):
                    raise
        if message is None:
            reference = reply_to.to_reference(fail_if_not_exists=False) if reply_to else None
            message = await channel.send(content, view=view, reference=reference)  # type: ignore[arg-type]
        try:
            await self.book.showing_run(
                message.id, message.channel.id, story_id=run.story.id, run_id=run.id, state="queued"
            )
        except Exception as error:
            # Deleted meanwhile (or the database failed): the message is linked
            # to nothing, so it must not stay "queued" with a Cancel button.
            gone = isinstance(error, StoryDeleted)
            text = (
                render.tombstone(t, whole_story=True)
                if gone
                else render.ended(t, "failed", t._("This part could not be started; try again."))
            )
            with contextlib.suppress(discord.HTTPException):
                await message.edit(content=text, view=None)
            raise
        return message

    async def adopt(
        self, run: Run, channel: discord.abc.Messageable, *, reply_to: Target | None = None
    ) -> discord.Message | None:
        """Show a run that began without a message (over HTTP) once someone in a
        channel asked for the same part; None when it is shown already."""
        if run.announced or run.id in self._adopted:
            return None
        self._adopted.add(run.id)  # before the first await: a second joiner sees it
        message = await self.post(run, channel, reply_to=reply_to)
        self.follow(run, channel, message)
        return message

    def follow(self, run: Run, channel: discord.abc.Messageable, message: discord.Message) -> None:
        """Keep the message up to date until the run ends, in a task of its own."""
        self._spawn(self._follow(run, channel, message), f"publish-run-{run.id}", message.id)

    def _spawn(self, work: Awaitable[object], name: str, message_id: int | None = None) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("%s: could not update Discord", name)
            finally:
                if message_id is not None:
                    self._live.discard(message_id)

        if message_id is not None:
            self._live.add(message_id)
        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, within: float) -> None:
        """Shutting down: let running updates finish for up to `within` seconds
        (retries give up at once), then stop the rest; what they leave stale is
        fixed at the next start."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=within)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d message updates left for the next start", len(pending))
                await asyncio.wait(pending, timeout=1.0)

    # --------------------------------------------------------------- following
    async def _follow(
        self, run: Run, channel: discord.abc.Messageable, message: discord.Message
    ) -> None:
        try:
            await self._follow_to_end(run, channel, message)
        finally:
            self._adopted.discard(run.id)

    async def _follow_to_end(
        self, run: Run, channel: discord.abc.Messageable, message: discord.Message
    ) -> None:
        try:
            message = await self._follow_progress(run, channel, message)
        except ChannelGone:
            log.info("story %d: its channel is gone; stopping run %d", run.story.id, run.id)
            run.cancel()
            await self.book.forget(message.id)
            return
        try:
            outcome = await run.outcome()
        except StoryDeleted:
            await self._clear(message, whole_story=True)
            return
        except Cancelled:
            if run.kind == "reroll":  # the old version never left its place
                await self._delete(message)
            else:
                status = render.ended(for_channel(channel), "cancelled", None)
                await self._settle_run(run, message, status, None)
            return
        except Exception as error:  # interrupted, failed, timed out, disk full
            t = for_channel(channel)
            status = render.ended(t, run.state, t.error(error))
            await self._settle_run(run, message, status, retry_button(t, run.id))
            return
        view = PartView(
            outcome.story,
            outcome.part,
            run.number,
            run.genre.title,
            run.previous_text if run.number == 1 else None,
        )
        targets: list[tuple[Target, str | None]] = [(message, run_key(run.id, "queued"))]
        if run.kind == "reroll" and run.replaces is not None:
            old = await self.book.of_part(run.replaces.id)
            if old:
                targets = [(self._partial(channel, r.message_id), r.shows) for r in old]
        await self.show_part(view, channel, targets)
        if targets[0][0].id != message.id:
            await self._delete(message)  # the reroll's own message has done its job

    async def _follow_progress(
        self, run: Run, channel: discord.abc.Messageable, message: discord.Message
    ) -> discord.Message:
        shown = message.content
        last_edit = time.monotonic()
        t = for_channel(channel)
        streaming = self.budget.streaming(run.id) if self.budget else contextlib.nullcontext()
        with streaming:
            async for position in run.positions():
                content = self.waiting_text(run, position, t)
                if position > 0 and content != shown and self._due(last_edit):
                    try:
                        message = await self._progress(run, channel, message, content)
                    except Skipped:
                        continue  # no room in the budget now: a later one goes
                    shown, last_edit = content, time.monotonic()
            head = run.previous_text if run.kind == "start" else None
            reroll_of = run.number if run.kind == "reroll" else None
            text = ""
            last_edit = 0.0
            async for delta in run.stream():
                text += delta
                if self._due(last_edit):
                    content = render.progress(
                        render.story_body(head, text),
                        render.waiting_status(t, run.genre.title, 0, reroll_of),
                    )
                    if content != shown:
                        try:
                            message = await self._progress(run, channel, message, content)
                        except Skipped:
                            continue  # the next delta tries again, with more text
                        shown, last_edit = content, time.monotonic()
        return message

    def _due(self, last_edit: float) -> bool:
        """Time for another edit of a streamed message: spaced by the edit
        interval, stretched when many stories stream at once."""
        interval = self.edit_interval
        if self.budget is not None:
            interval = self.budget.stream_interval(interval)
        return time.monotonic() - last_edit >= interval

    async def _progress(
        self, run: Run, channel: discord.abc.Messageable, message: discord.Message, content: str
    ) -> discord.Message:
        """One progress edit; a deleted message is posted again; a failure skips
        it; no room in the budget raises `Skipped`."""
        try:
            with self.budget.optional() if self.budget else contextlib.nullcontext():
                return await message.edit(content=content)
        except discord.NotFound as error:
            if _channel_gone(error):
                raise ChannelGone() from None
        except discord.HTTPException as error:
            if _channel_gone(error):
                raise ChannelGone() from None
            log.info("story %d: skipped a progress edit: %s", run.story.id, error)
            return message
        # Deleted by someone while the run is going on: post it again.
        await self.book.forget(message.id)
        self._live.discard(message.id)
        try:
            fresh = await channel.send(content, view=cancel_button(for_channel(channel), run.id))
        except discord.HTTPException as error:
            if _channel_gone(error):
                raise ChannelGone() from None
            raise
        self._live.add(fresh.id)
        await self.book.showing_run(
            fresh.id, fresh.channel.id, story_id=run.story.id, run_id=run.id, state=run.state
        )
        return fresh

    async def _settle_run(
        self, run: Run, message: Target, status: str, view: discord.ui.View | None
    ) -> None:
        head = render.story_body(run.previous_text, "") if run.kind == "start" else ""
        content = render.progress(head, status, cursor=False)
        edited = await self._final_edit(message, content=content, view=view)
        if edited is Edit.GONE:
            await self.book.forget(message.id)
        elif edited is not Edit.FAILED:
            await self.book.confirmed(message.id, run_key(run.id, run.state))

    # ------------------------------------------------------------------- votes
    async def post_vote(
        self,
        vote: Vote,
        channel: discord.abc.Messageable,
        *,
        reply_to: Target | None,
        refresh: Callable[[], None],
    ) -> discord.Message:
        """The ballot message, posted while the options are written, and followed:
        the options are shown once written, with ballot buttons; once decided,
        `refresh` brings every message of the vote up to date (the winner's
        become the story's part, with its buttons)."""
        writing = render.ballot_writing(for_channel(channel), len(vote.runs))
        message = await self._send(channel, writing, None, reply_to)
        await self.book.showing_vote(
            message.id, message.channel.id, story_id=vote.story.id, vote_id=vote.id, state="writing"
        )
        self._spawn(
            self._follow_vote(vote, channel, message, refresh), f"vote-{vote.id}", message.id
        )
        return message

    async def _follow_vote(
        self,
        vote: Vote,
        channel: discord.abc.Messageable,
        message: discord.Message,
        refresh: Callable[[], None],
    ) -> None:
        record = await asyncio.shield(vote.opened)
        if record.state == "open":
            await self._post_options(record, vote.story.id, channel, message)
            await self._show_ballot(message, record)
        await asyncio.shield(vote.closed)
        refresh()

    async def _post_options(
        self,
        record: VoteRecord,
        story_id: int,
        channel: discord.abc.Messageable,
        after: Target,
        numbers: Collection[int] | None = None,
    ) -> None:
        """Post a vote's options (those in `numbers`, else all written ones) after
        `after`, as the vote's state shows them."""
        for candidate in record.candidates:
            if candidate.part_id is None or (
                numbers is not None and candidate.number not in numbers
            ):
                continue
            view = await self.service.describe_part(candidate.part_id)
            body = render.story_body(None, view.part.text)
            for chunk, text in enumerate(render.split_text(body)):
                shown = render.option(
                    for_channel(channel), candidate.number, text, chunk, record.state
                )
                sent = await self._send(channel, shown, None, after)
                await self.book.showing_candidate(
                    sent.id,
                    sent.channel.id,
                    story_id=story_id,
                    part_id=candidate.part_id,
                    chunk=chunk,
                    vote_state=record.state,
                )
                after = sent

    async def _show_ballot(self, message: Target, record: VoteRecord) -> None:
        numbers = [c.number for c in record.candidates if c.part_id is not None]
        t = for_channel(message.channel)
        if record.state == "open":
            content = render.ballot(t, record.tally, numbers, record.closes_at)
            buttons: discord.ui.View | None = ballot_buttons(t, record.id, numbers)
        else:
            content = render.vote_result(t, record.state, record.winner, record.tally)
            buttons = None
        edited = await self._final_edit(message, content=content, view=buttons)
        if edited is Edit.GONE:
            await self.book.forget(message.id)
        elif edited is not Edit.FAILED:
            await self.book.confirmed(message.id, vote_key(record.id, record.state))

    async def _sync_vote(self, client: discord.Client, record: MessageRecord) -> None:
        assert record.vote_id is not None
        if record.message_id in self._live:
            return  # its vote's own task keeps it up to date
        channel = await self._channel(client, record)
        if channel is None:
            return
        view = await self.service.describe_vote(record.vote_id)
        ballot = self._partial(channel, record.message_id)
        vote = view.record
        if vote.state in ("open", "closed") and record.shows.endswith(":writing"):
            # Opened (or decided) while no task of this process followed it, e.g.
            # its options were written while the last process stopped: options
            # nobody saw are posted now, before the ballot (a refusal leaves the
            # ballot stale, so the next sync tries again). Only while the ballot
            # never showed the vote open: an option deleted in Discord since
            # stays deleted.
            unseen = [
                c.number
                for c in vote.candidates
                if c.part_id is not None
                and c.number != vote.winner
                and not await self.book.of_part(c.part_id)
            ]
            if unseen:
                await self._post_options(vote, view.story.id, channel, ballot, unseen)
        await self._show_ballot(ballot, vote)
        if vote.state == "closed" and vote.winner is not None:
            winner = vote.candidate(vote.winner).part_id
            if winner is not None and not await self.book.of_part(winner):
                # Decided before its options were shown (one written, or a
                # restart): the winner is posted as the story's part.
                part = await self.service.describe_part(winner)
                await self.show_part(part, channel, [])

    async def _sync_option(self, client: discord.Client, record: MessageRecord) -> None:
        assert record.part_id is not None
        channel = await self._channel(client, record)
        if channel is None:
            return
        found = await self.service.describe_option(record.part_id)
        if found is None:
            return
        number, vote = found
        part = await self.service.describe_part(record.part_id)
        chunks = render.split_text(render.story_body(None, part.part.text))
        text = chunks[record.chunk] if record.chunk < len(chunks) else ""
        content = render.option(for_channel(channel), number, text, record.chunk, vote.record.state)
        edited = await self._final_edit(
            self._partial(channel, record.message_id), content=content or "-#", view=None
        )
        if edited is Edit.GONE:
            await self.book.forget(record.message_id)
        elif edited is not Edit.FAILED:
            await self.book.confirmed(record.message_id, record.wants)

    # ----------------------------------------------------------------- showing
    async def show_part(
        self,
        view: PartView,
        channel: discord.abc.Messageable,
        targets: list[tuple[Target, str | None]],
    ) -> list[Target]:
        """Show a complete part in `targets` (message, what it showed before), one
        chunk each; post more for a long part, delete what is left over, and add the
        ➕ reaction once, to the last chunk, unless it had it already."""
        part = view.part
        t = for_channel(channel)
        body = render.story_body(view.prompt, part.text)
        chunks = render.final_chunks(
            body,
            render.footer(t, view.genre_title, view.story.author_id, view.number, part.seed or 0),
        )
        await self.book.should_show_part(part.id, [t.id for t, _ in targets[: len(chunks)]])
        shown: list[Target] = []
        fresh_last = False
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            buttons = part_buttons(t, part.id) if last else None
            edited: discord.Message | Target | Edit = Edit.GONE
            before: str | None = None
            if index < len(targets):
                target, before = targets[index]
                edited = await self._final_edit(target, content=chunk, view=buttons)
                if edited is Edit.GONE:
                    await self.book.forget(target.id)
                elif edited is Edit.FAILED:
                    edited = target  # stale: `sync` will try again
                else:
                    await self.book.confirmed(target.id, part_key(part.id, index))
            if edited is Edit.GONE:
                sent = await self._send(channel, chunk, buttons, shown[-1] if shown else None)
                await self.book.showing_part(
                    sent.id, sent.channel.id, story_id=view.story.id, part_id=part.id, chunk=index
                )
                edited, before = sent, None
            assert not isinstance(edited, Edit)
            shown.append(edited)
            if last:
                # The message that showed the last chunk of a part has the ➕ already.
                had_it = before is not None and before.startswith("part:")
                fresh_last = not (had_it and index == len(targets) - 1)
        for surplus, _ in targets[len(chunks) :]:  # a new version that came out shorter
            await self._delete(surplus)
        if fresh_last:
            await self._react(shown[-1])
        return shown

    async def _send(
        self,
        channel: discord.abc.Messageable,
        content: str,
        view: discord.ui.View | None,
        after: Target | None,
    ) -> discord.Message:
        reference = after.to_reference(fail_if_not_exists=False) if after is not None else None
        try:
            return await channel.send(
                content,
                view=view if view is not None else discord.utils.MISSING,
                reference=reference,  # type: ignore[arg-type]
            )
        except discord.HTTPException as error:
            if _channel_gone(error):
                raise ChannelGone() from None
            raise

    async def _react(self, message: Target) -> None:
        try:
            await message.add_reaction(CONTINUE_EMOJI)
        except discord.Forbidden:
            log.info(
                "no permission to add reactions in channel %s; buttons still work",
                message.channel.id,
            )
        except discord.HTTPException as error:
            log.warning("could not add the continue reaction: %s", error)

    async def _final_edit(self, message: Target, **fields: Any) -> discord.Message | Edit:
        """An edit that matters (the final text, a settled state): retried with
        backoff on errors other than "gone"; Edit.FAILED leaves it for `sync`."""
        for attempt in range(self.final_retries + 1):
            try:
                return await message.edit(**fields)
            except discord.NotFound as error:
                if _channel_gone(error):
                    raise ChannelGone() from None
                return Edit.GONE
            except discord.Forbidden as error:
                if _channel_gone(error):
                    raise ChannelGone() from None
                log.warning("no permission to edit message %s: %s", message.id, error)
                return Edit.FAILED
            except discord.HTTPException as error:
                if self._closing or attempt == self.final_retries:
                    log.warning("message %s left stale: %s", message.id, error)
                    return Edit.FAILED
                delay = self.retry_base_s * 2**attempt
                log.info("message %s: %s; trying again in %.0f s", message.id, error, delay)
                await asyncio.sleep(delay)
        return Edit.FAILED

    async def _delete(self, message: Target) -> None:
        with contextlib.suppress(discord.HTTPException):
            await message.delete()
        await self.book.forget(message.id)

    async def _clear(self, message: Target, *, whole_story: bool) -> None:
        """What the message showed was deleted: say so, without buttons, and forget it."""
        content = render.tombstone(for_channel(message.channel), whole_story)
        edited = await self._final_edit(message, content=content, view=None)
        if edited is not Edit.FAILED:
            await self.book.forget(message.id)

    @staticmethod
    def _partial(channel: Any, message_id: int) -> discord.PartialMessage:
        return channel.get_partial_message(message_id)

    # ----------------------------------------------------------------- syncing
    def sync_soon(self, client: discord.Client) -> None:
        """`sync` in a task of its own (bounded, like every update, at shutdown)."""
        if not self._closing:
            self._spawn(self.sync(client), "sync-messages")

    async def sync(self, client: discord.Client) -> int:
        """Bring every stale message up to date (at start-up, and after a
        deletion); returns how many were looked at."""
        async with self._sync_lock:
            return await self._sync(client)

    async def _sync(self, client: discord.Client) -> int:
        records = [r for r in await self.book.stale() if r.message_id not in self._live]
        parts: dict[int, list[MessageRecord]] = {}
        for record in records:
            kind, _, rest = record.wants.partition(":")
            try:
                if kind == "part":
                    parts.setdefault(int(rest.split(":")[0]), []).append(record)
                elif kind == "hidden":
                    await self._hide(client, record)
                elif kind == "vote":
                    await self._sync_vote(client, record)
                elif kind == "candidate":
                    await self._sync_option(client, record)
                elif kind == "run":
                    await self._sync_run(client, record, int(rest.split(":")[0]))
                elif record.wants == GONE:
                    channel = await self._channel(client, record)
                    if channel is not None:
                        target = self._partial(channel, record.message_id)
                        await self._clear(target, whole_story=record.story_id is None)
            except ChannelGone:
                await self.book.forget(record.message_id)
            except NotFound:
                continue  # deleted meanwhile: the next sync clears it
            except discord.HTTPException as error:  # it stays stale: the next sync retries
                log.warning("could not bring message %d up to date: %s", record.message_id, error)
        for part_id, linked in parts.items():
            try:
                await self._sync_part(client, part_id, linked)
            except ChannelGone:
                for record in linked:
                    await self.book.forget(record.message_id)
            except NotFound:
                continue  # deleted meanwhile: the next sync clears it
        if records:
            log.info("brought %d messages up to date", len(records))
        return len(records)

    async def _hide(self, client: discord.Client, record: MessageRecord) -> None:
        """A part hidden after reports: each of its messages says it was removed
        (no buttons, so nobody continues it). Restored, it is shown again."""
        channel = await self._channel(client, record)
        if channel is None:
            return
        target = self._partial(channel, record.message_id)
        content = render.removed(for_channel(channel)) if record.chunk == 0 else "-# 🚩"
        edited = await self._final_edit(target, content=content, view=None)
        if edited is Edit.GONE:
            await self.book.forget(record.message_id)
        elif edited is not Edit.FAILED:
            await self.book.confirmed(record.message_id, record.wants)

    async def _channel(
        self, client: discord.Client, record: MessageRecord
    ) -> discord.abc.Messageable | None:
        channel = client.get_channel(record.channel_id)
        if channel is None:
            try:
                channel = await client.fetch_channel(record.channel_id)
            except discord.NotFound:
                raise ChannelGone() from None
            except discord.HTTPException as error:
                log.info("channel %s not reachable now: %s", record.channel_id, error)
                return None
        if not isinstance(channel, discord.abc.Messageable):
            raise ChannelGone()
        return channel

    async def _sync_run(self, client: discord.Client, record: MessageRecord, run_id: int) -> None:
        if self.service.running(run_id) is not None:
            return  # in flight here: its own task keeps the message up to date
        channel = await self._channel(client, record)
        if channel is None:
            return
        view: RunView = await self.service.describe_run(run_id)
        head = render.story_body(view.prompt, "") if view.prompt is not None else ""
        state = view.record.state
        t = for_channel(channel)
        status = render.ended(t, state, view.record.error)
        buttons = None if state == "cancelled" else retry_button(t, run_id)
        target = self._partial(channel, record.message_id)
        content = render.progress(head, status, cursor=False)
        edited = await self._final_edit(target, content=content, view=buttons)
        if edited is Edit.GONE:
            await self.book.forget(record.message_id)
        elif edited is not Edit.FAILED:
            await self.book.confirmed(record.message_id, run_key(run_id, state))

    async def _sync_part(
        self, client: discord.Client, part_id: int, linked: list[MessageRecord]
    ) -> None:
        unlinked = [r.message_id for r in linked if r.part_id is None]
        if unlinked:  # a run's message whose part was stored, but never shown
            await self.book.should_show_part(part_id, unlinked[:1])
        records = await self.book.of_part(part_id)
        if not records:
            return
        channel = await self._channel(client, records[0])
        if channel is None:
            return
        view = await self.service.describe_part(part_id)
        targets: list[tuple[Target, str | None]] = [
            (self._partial(channel, r.message_id), r.shows) for r in records
        ]
        await self.show_part(view, channel, targets)
