"""Votes through the real service, the tiny model and a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from generation.errors import Busy
from storage.guilds import GuildStore
from storage.store import Store
from storage.votes import VoteStore
from stories.errors import Conflict, NothingToContinue
from stories.servers import Member
from stories.service import Requester, StoryOptions, StoryService
from stories.votes import decided_early, winner_of
from tests.conftest import wait_for

GUILD = 10


def member(user_id: int) -> Requester:
    return Requester(user_id=user_id, guild_id=GUILD, channel_id=20, member=Member())


ALICE, BOB, CAROL, DAN = member(1), member(2), member(3), member(4)
SHORT = StoryOptions(genre="crime", max_new_tokens=6)


async def first_part(service: StoryService) -> int:
    run = await service.start("The night was", SHORT, ALICE)
    return (await run.outcome()).part.id


async def vote_seconds(service: StoryService, seconds: float) -> None:
    """A short vote for a test (admins choose 10 s to 10 min)."""
    await GuildStore(service.store).update(GUILD, vote_seconds=seconds)
    await service.servers.forget_cached(GUILD)


async def test_three_candidates_and_the_majority_wins_early(service: StoryService) -> None:
    parent = await first_part(service)
    vote = await service.votes.start(parent, ALICE, StoryOptions(max_new_tokens=6))
    assert len(vote.runs) == 3 and len({run.seed for run in vote.runs}) == 3
    with pytest.raises(Conflict, match="voting on what happens next"):
        await service.continue_from(parent, BOB, SHORT)
    opened = await asyncio.wait_for(asyncio.shield(vote.opened), 60)
    assert opened.state == "open" and all(c.part_id for c in opened.candidates)
    parts = await service.store.story_parts(vote.story.id)
    candidates = [p for p in parts if p.candidate]
    assert len(candidates) == 3 and all(p.parent_id == parent for p in candidates)
    assert (await service.store.latest_part(vote.story.id)).id == parent  # undecided
    await service.votes.cast(vote.id, BOB, 2)
    await service.votes.cast(vote.id, CAROL, 1)
    await service.votes.cast(vote.id, CAROL, 2)  # changed their mind: still one ballot
    record = await service.votes.cast(vote.id, DAN, 1)
    assert record.state == "closed" or record.ballots == 3
    assert record.winner == 2 and record.tally == {2: 2, 1: 1}
    assert vote.closed.done() and (await vote.closed).winner == 2
    winner_part = record.candidate(2).part_id
    _, _, path = await service.story(vote.story.id)
    assert path[-1].id == winner_part  # the story follows the winner
    story_parts = await service.store.story_parts(vote.story.id)
    assert sorted(p.id for p in story_parts if p.candidate) == sorted(
        c.part_id for c in record.candidates if c.number != 2
    )  # the others stay in the tree as siblings
    with pytest.raises(NothingToContinue, match="not chosen"):
        await service.continue_from(record.candidate(1).part_id or 0, BOB, SHORT)
    await (await service.continue_from(winner_part or 0, BOB, SHORT)).run.outcome()
    with pytest.raises(Conflict, match="over"):
        await service.votes.cast(vote.id, DAN, 1)


async def test_time_up_without_ballots_the_first_option_wins(service: StoryService) -> None:
    await vote_seconds(service, 0.2)
    parent = await first_part(service)
    vote = await service.votes.start(parent, ALICE, StoryOptions(max_new_tokens=6), count=2)
    record = await asyncio.wait_for(asyncio.shield(vote.closed), 60)
    assert record.state == "closed" and record.winner == 1 and record.ballots == 0


def test_ties_go_to_the_lowest_number_and_early_needs_three_ballots() -> None:
    from storage.votes import Candidate, VoteRecord

    def record(tally: dict[int, int]) -> VoteRecord:
        return VoteRecord(
            1,
            1,
            1,
            "open",
            None,
            None,
            tuple(Candidate(n, n, "done", 100 + n) for n in (1, 2, 3)),
            tally,
            sum(tally.values()),
        )

    assert winner_of(record({2: 1, 3: 1})) == 2
    assert winner_of(record({})) == 1
    assert not decided_early(record({2: 2}))  # two ballots: keep waiting
    assert decided_early(record({2: 2, 1: 1})) and not decided_early(record({1: 1, 2: 1, 3: 1}))


async def test_a_busy_pool_refuses_the_vote_and_leaves_nothing(
    make_pool, store: Store, genres
) -> None:  # type: ignore[no-untyped-def]
    async with make_pool(gated=True, max_queue=1, max_batch=1) as pool:
        service = StoryService(store, pool, genres, user_max_active=5)
        parent = await first_part(service)
        pool.backend.hold()
        with pytest.raises(Busy):
            await service.votes.start(parent, ALICE, SHORT)  # three never fit: 1 running, 1 waiting
        pool.backend.release()
        await wait_for(lambda: service.in_flight == 0)
        assert [p.id for p in await store.story_parts(1)] == [1, parent]
        assert service._claims == {}
        runs = await store._all("SELECT kind, state FROM runs ORDER BY id")
        assert [tuple(r) for r in runs] == [("start", "done")]  # no cancelled candidates left
        # The part can be continued (or voted on) as if nothing happened.
        await (await service.continue_from(parent, BOB, SHORT)).run.outcome()
        await service.wait_idle()


async def test_a_restart_closes_decides_or_fails_what_was_left(
    make_pool,
    tmp_path: Path,
    genres,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "votes.sqlite3"
    async with await Store.open(path) as store, make_pool() as pool:
        service = StoryService(store, pool, genres, user_max_active=5)
        await vote_seconds(service, 3600)
        parent = await first_part(service)
        vote = await service.votes.start(parent, ALICE, SHORT, count=2)
        await asyncio.wait_for(asyncio.shield(vote.opened), 60)
        await service.votes.cast(vote.id, BOB, 2)
        await service.wait_idle()  # shutting down: the vote stays open
    async with await Store.open(path) as store:
        votes = VoteStore(store)
        assert (await votes.get(vote.id)).state == "open"
        await store._conn.execute("UPDATE votes SET closes_at = 0")  # its time passed
    async with await Store.open(path) as store, make_pool() as pool:
        service = StoryService(store, pool, genres)
        await service.recover_interrupted()
        record = await VoteStore(store).get(vote.id)
        assert record.state == "closed" and record.winner == 2
        await service.wait_idle()
