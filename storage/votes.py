"""Votes: the channel chooses a story's next part among candidates.

A vote's candidates are runs under one parent part, written together. While a
vote is undecided its candidates' parts are marked `candidate`, so the story's
branch never follows them; closing the vote clears the mark on the winner.
Ballots are one per person, changeable until the vote closes. Uses the
`Store`'s database, each operation in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.errors import InvalidData, NotFound
from storage.models import Status
from storage.store import Store

VoteState = str  # 'writing' | 'open' | 'closed' | 'failed'


@dataclass(frozen=True)
class Candidate:
    number: int  # 1, 2, 3 as shown
    run_id: int
    state: Status  # its run's
    part_id: int | None  # once written


@dataclass(frozen=True)
class VoteRecord:
    id: int
    story_id: int
    parent_id: int
    state: VoteState
    closes_at: float | None
    winner: int | None  # the winning number, once closed
    candidates: tuple[Candidate, ...]
    tally: dict[int, int]  # number -> ballots
    ballots: int

    @property
    def finished(self) -> bool:
        return self.state in ("closed", "failed")

    def candidate(self, number: int) -> Candidate:
        for candidate in self.candidates:
            if candidate.number == number:
                return candidate
        raise NotFound(f"vote {self.id} has no option {number}")


class VoteStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, story_id: int, parent_id: int, run_ids: list[int]) -> VoteRecord:
        """A vote over the runs writing its candidates (their parts, written or
        not yet, are candidates until it is decided)."""
        if not 1 <= len(run_ids) <= 9:
            raise InvalidData("a vote has 1 to 9 candidates")
        now = time.time()
        async with self._store._transaction() as conn:
            row = await conn.one(
                "INSERT INTO votes (story_id, parent_id, created_at) VALUES (?, ?, ?) RETURNING id",
                (story_id, parent_id, now),
            )
            assert row is not None
            vote_id = int(row[0])
            for number, run_id in enumerate(run_ids, 1):
                await conn.execute(
                    "INSERT INTO vote_candidates (vote_id, number, run_id) VALUES (?, ?, ?)",
                    (vote_id, number, run_id),
                )
            # A candidate written before the vote existed is marked now.
            marks = ",".join("?" * len(run_ids))
            await conn.execute(
                f"UPDATE parts SET candidate = 1 WHERE id IN"
                f" (SELECT part_id FROM runs WHERE id IN ({marks}) AND part_id IS NOT NULL)",
                tuple(run_ids),
            )
        return await self.get(vote_id)

    async def get(self, vote_id: int) -> VoteRecord:
        async with self._store._transaction(write=False) as conn:
            row = await conn.one("SELECT * FROM votes WHERE id = ?", (vote_id,))
            if row is None:
                raise NotFound(f"vote {vote_id} does not exist")
            candidates = await conn.all(
                "SELECT c.number, c.run_id, r.state, r.part_id FROM vote_candidates c"
                " JOIN runs r ON r.id = c.run_id WHERE c.vote_id = ? ORDER BY c.number",
                (vote_id,),
            )
            counted = await conn.all(
                "SELECT number, COUNT(*) FROM vote_ballots WHERE vote_id = ? GROUP BY number",
                (vote_id,),
            )
        tally = {int(number): int(n) for number, n in counted}
        return VoteRecord(
            id=row["id"],
            story_id=row["story_id"],
            parent_id=row["parent_id"],
            state=row["state"],
            closes_at=row["closes_at"],
            winner=row["winner"],
            candidates=tuple(Candidate(int(c[0]), int(c[1]), c[2], c[3]) for c in candidates),
            tally=tally,
            ballots=sum(tally.values()),
        )

    async def of_part(self, part_id: int) -> tuple[int, int] | None:
        """(vote id, option number) of a part written as a vote's option."""
        async with self._store._transaction(write=False) as conn:
            row = await conn.one(
                "SELECT c.vote_id, c.number FROM vote_candidates c"
                " JOIN runs r ON r.id = c.run_id WHERE r.part_id = ?",
                (part_id,),
            )
        return (int(row[0]), int(row[1])) if row else None

    async def of_run(self, run_id: int) -> int | None:
        """The vote a run writes a candidate for, if any."""
        async with self._store._transaction(write=False) as conn:
            row = await conn.one("SELECT vote_id FROM vote_candidates WHERE run_id = ?", (run_id,))
        return int(row[0]) if row else None

    async def open(self, vote_id: int, closes_at: float) -> VoteRecord:
        async with self._store._transaction() as conn:
            changed = await conn.execute(
                "UPDATE votes SET state = 'open', closes_at = ? WHERE id = ? AND state = 'writing'",
                (closes_at, vote_id),
            )
            if changed == 0:
                raise NotFound(f"vote {vote_id} is not being written")
        return await self.get(vote_id)

    async def cast(self, vote_id: int, user_id: int, number: int) -> VoteRecord:
        """One person's ballot (replacing their earlier one); refused once closed
        (the vote's row is locked, so a ballot never lands after the close)."""
        async with self._store._transaction() as conn:
            row = await conn.one(
                "SELECT state FROM votes WHERE id = ?" + conn.for_update, (vote_id,)
            )
            if row is None:
                raise NotFound(f"vote {vote_id} does not exist")
            if row["state"] != "open":
                raise InvalidData(f"vote {vote_id} is {row['state']}")
            exists = await conn.one(
                "SELECT 1 FROM vote_candidates WHERE vote_id = ? AND number = ?",
                (vote_id, number),
            )
            if exists is None:
                raise NotFound(f"vote {vote_id} has no option {number}")
            await conn.execute(
                "INSERT INTO vote_ballots (vote_id, user_id, number, cast_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (vote_id, user_id) DO UPDATE SET number = excluded.number,"
                " cast_at = excluded.cast_at",
                (vote_id, user_id, number, time.time()),
            )
        return await self.get(vote_id)

    async def ballot_of(self, vote_id: int, user_id: int) -> int | None:
        async with self._store._transaction(write=False) as conn:
            row = await conn.one(
                "SELECT number FROM vote_ballots WHERE vote_id = ? AND user_id = ?",
                (vote_id, user_id),
            )
        return int(row[0]) if row else None

    async def close(self, vote_id: int, winner: int | None) -> VoteRecord:
        """Decide the vote: the winner's part becomes the story's next part
        (its candidate mark cleared); no winner: the vote failed."""
        async with self._store._transaction() as conn:
            state = "closed" if winner is not None else "failed"
            changed = await conn.execute(
                "UPDATE votes SET state = ?, winner = ? WHERE id = ?"
                " AND state IN ('writing', 'open')",
                (state, winner, vote_id),
            )
            if changed == 0:
                raise NotFound(f"vote {vote_id} is decided already")
            if winner is not None:
                await conn.execute(
                    "UPDATE parts SET candidate = 0 WHERE id = (SELECT r.part_id FROM"
                    " vote_candidates c JOIN runs r ON r.id = c.run_id"
                    " WHERE c.vote_id = ? AND c.number = ?)",
                    (vote_id, winner),
                )
        return await self.get(vote_id)

    async def unfinished(self) -> list[VoteRecord]:
        """Votes being written or open (at start-up: to close, fail or resume).
        On a database several processes share, only the votes whose options
        this instance wrote (or nobody owns): another process's votes are its own."""
        mine = (
            " AND EXISTS (SELECT 1 FROM vote_candidates c JOIN runs r ON r.id = c.run_id"
            " WHERE c.vote_id = votes.id AND (r.owner = ? OR r.owner IS NULL))"
            if self._store.shared
            else ""
        )
        args = (self._store.instance,) if self._store.shared else ()
        async with self._store._transaction(write=False) as conn:
            rows = await conn.all(
                f"SELECT id FROM votes WHERE state IN ('writing', 'open'){mine} ORDER BY id",
                args,
            )
        return [await self.get(int(row[0])) for row in rows]
