"""The channel votes on what happens next.

A vote writes two or three candidate continuations of a part at once (the pool
batches them, so three cost little more than one), opens for the server's
vote time, takes one ballot per member (changeable until the end), and closes
at the deadline or as soon as one option has a majority of at least three
ballots. The winner becomes the story's next part; the others stay in the
story tree as siblings, as rerolls do. Ties go to the lowest number; no
ballots, to option 1.

Votes are state in the database: a restart closes the ones whose time ran out,
resumes the timers of the others, and fails the ones whose candidates were
being written (their runs were interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.messages import N_
from storage.errors import InvalidData, NotFound
from storage.models import Part, Story
from storage.votes import VoteRecord, VoteStore
from stories.errors import Conflict, NotAllowed, NothingToContinue, PartHidden

if TYPE_CHECKING:
    from stories.service import Requester, Run, StoryOptions, StoryService

log = logging.getLogger(__name__)

CANDIDATES = 3
EARLY_MAJORITY_BALLOTS = 3  # with this many ballots, a strict majority ends a vote early
DEFAULT_VOTE_S = 60.0


@dataclass(eq=False)  # identity: one object per vote in flight
class Vote:
    """A vote in this process: its record and the runs writing its candidates.
    `opened` resolves once they are written; `closed` once it is decided."""

    record: VoteRecord
    story: Story
    parent: Part
    runs: list[Run]
    opened: asyncio.Future[VoteRecord] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    closed: asyncio.Future[VoteRecord] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self.record.id


AnnounceVote = Callable[[Vote], Awaitable[None]]


def winner_of(record: VoteRecord) -> int | None:
    """The most ballots among the candidates written; ties to the lowest
    number; no ballots, the first written. None: nothing was written."""
    written = [c.number for c in record.candidates if c.part_id is not None]
    if not written:
        return None
    return max(written, key=lambda number: (record.tally.get(number, 0), -number))


def decided_early(record: VoteRecord) -> bool:
    if record.ballots < EARLY_MAJORITY_BALLOTS:
        return False
    return max(record.tally.values(), default=0) * 2 > record.ballots


class Votes:
    def __init__(self, service: StoryService, store: VoteStore) -> None:
        self.service = service
        self.store = store
        self._votes: dict[int, Vote] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Told of a vote decided that nobody in this process follows (one resumed
        # after a restart, closing on its timer): the front-end brings its
        # messages up to date. Must not raise.
        self.on_unfollowed_decision: Callable[[VoteRecord], None] | None = None

    def running(self, vote_id: int) -> Vote | None:
        return self._votes.get(vote_id)

    async def start(
        self,
        part_id: int,
        who: Requester,
        options: StoryOptions | None = None,
        *,
        count: int = CANDIDATES,
        announce: AnnounceVote | None = None,
    ) -> Vote:
        """Write `count` candidates to follow `part_id` and open a vote on them."""
        service = self.service
        service._check_open()
        if not 2 <= count <= 3:
            raise InvalidData("a vote has two or three candidates")
        existing = service._claims.get(part_id)
        if existing is not None:
            raise Conflict(
                N_("The channel is voting on this part already.")
                if existing.kind == "vote"
                else N_("Someone is writing the next part already.")
            )
        claim = service._claim(part_id, "vote")
        runs: list[Run] = []
        try:
            parent = await service.store.get_part(part_id)
            story = await service.store.get_story(parent.story_id)
            if parent.hidden:
                raise PartHidden()
            if parent.candidate:
                raise NothingToContinue(
                    N_("That option was not chosen: continue the story's part.")
                )
            for number in range(count):
                # One person's slot for the whole vote: the candidates are one action.
                runs.append(
                    await service._begin(
                        story,
                        parent,
                        "continue",
                        who,
                        options,
                        None,
                        None,
                        slot=number == 0,
                        claim="vote" if number == 0 else None,  # one claim for the vote
                    )
                )
            record = await self.store.create(story.id, parent.id, [run.id for run in runs])
            vote = Vote(record, story, parent, runs)
            self._votes[vote.id] = vote
            if announce is not None:
                await announce(vote)
        except BaseException as error:
            for run in runs:  # refused (Busy, a limit...): leave no trace of the attempt
                run.deleted = True
                run.cancel()
                await asyncio.shield(service.store.delete_run(run.id))
            service._fail_claim(part_id, claim, error)
            raise
        claim.ready.set_result(runs[0])  # a continue that finds the claim is refused
        log.info("story %d: vote %d on part %d, %d candidates", story.id, vote.id, part_id, count)
        self._spawn(self._follow(vote, part_id), f"vote-{vote.id}")
        return vote

    async def _follow(self, vote: Vote, part_id: int) -> None:
        """Wait for the candidates, open the vote (or decide it at once when fewer
        than two were written), and close it when its time is up."""
        try:
            await asyncio.gather(*(run.outcome() for run in vote.runs), return_exceptions=True)
            record = await self.store.get(vote.id)
            written = [c for c in record.candidates if c.part_id is not None]
            if len(written) < 2:
                await self._decide(vote.id, part_id)
                return
            seconds = await self._vote_seconds(vote.story)
            record = await self.store.open(vote.id, time.time() + seconds)
            vote.record = record
            vote.opened.set_result(record)
            vote.timer = self._spawn(
                self._close_at(vote.id, part_id, seconds), f"vote-{vote.id}-timer"
            )
        except Exception:
            log.exception("vote %d could not be opened", vote.id)
            with contextlib.suppress(Exception):
                await self._decide(vote.id, part_id)

    async def _vote_seconds(self, story: Story) -> float:
        settings = await self.service.servers.settings(story.guild_id)
        return float(settings.vote_seconds) if settings is not None else DEFAULT_VOTE_S

    async def _close_at(self, vote_id: int, part_id: int | None, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
        with contextlib.suppress(NotFound):  # decided early meanwhile
            await self._decide(vote_id, part_id)

    async def cast(self, vote_id: int, who: Requester, number: int) -> VoteRecord:
        """A member's ballot (their earlier one is replaced). A strict majority of
        three or more ballots ends the vote at once."""
        if who.user_id is None:
            raise NotAllowed(N_("Ballots come from members of the channel."))
        try:
            record = await self.store.cast(vote_id, who.user_id, number)
        except InvalidData:
            raise Conflict(N_("This vote is over.")) from None
        running = self._votes.get(vote_id)
        if running is not None:
            running.record = record
        if decided_early(record):
            record = await self._decide(vote_id, running.parent.id if running else None)
        return record

    async def _decide(self, vote_id: int, part_id: int | None) -> VoteRecord:
        """Close the vote with its winner (or fail it when nothing was written)."""
        record = await self.store.get(vote_id)
        record = await self.store.close(vote_id, winner_of(record))
        vote = self._votes.pop(vote_id, None)
        parent_id = part_id if part_id is not None else record.parent_id
        claim = self.service._claims.get(parent_id)
        if claim is not None and claim.kind == "vote":
            del self.service._claims[parent_id]
        if vote is not None:
            vote.record = record
            if vote.timer is not None and vote.timer is not asyncio.current_task():
                vote.timer.cancel()
            if not vote.opened.done():
                vote.opened.set_result(record)
            if not vote.closed.done():
                vote.closed.set_result(record)
        elif self.on_unfollowed_decision is not None:
            self.on_unfollowed_decision(record)
        log.info(
            "vote %d on story %d %s",
            vote_id,
            record.story_id,
            f"won by option {record.winner}" if record.winner else "failed",
        )
        return record

    async def recover(self) -> list[VoteRecord]:
        """At start-up: votes whose candidates were being written failed (their
        runs were interrupted); open votes close at their time, or now if it
        passed while the bot was down."""
        decided = []
        for record in await self.store.unfinished():
            if record.state == "writing":
                decided.append(await self._decide(record.id, None))
                continue
            remaining = (record.closes_at or 0) - time.time()
            if remaining <= 0:
                decided.append(await self._decide(record.id, None))
            else:
                self._spawn(self._close_at(record.id, None, remaining), f"vote-{record.id}-timer")
        return decided

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Shutting down: stop the timers (open votes stay open in the database
        and are resumed at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["CANDIDATES", "Vote", "Votes", "decided_early", "winner_of"]
