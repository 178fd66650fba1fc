"""Which channel messages show which part or run, and whether they are up to date.

A front-end that shows stories in messages (the Discord bot) records here each
message it posts or takes over, and what Discord confirmed it displays. The
database knows what each message *should* show (its part; else its run's part
once written, or the run's state; else nothing), so a message whose update
failed, or that a crash left behind, is found by `stale()` and brought up to
date later. Keys name what a message displays: `part:12:0` (chunk 0 of part
12), `run:7:queued`, `gone` (nothing: its story or part was deleted).
"""

from __future__ import annotations

from storage.errors import InvalidData
from storage.models import MessageRecord, Status
from storage.store import Store
from stories.errors import StoryDeleted

GONE = "gone"


def part_key(part_id: int, chunk: int) -> str:
    return f"part:{part_id}:{chunk}"


def vote_key(vote_id: int, state: str) -> str:
    return f"vote:{vote_id}:{state}"


def candidate_key(part_id: int, chunk: int, vote_state: str) -> str:
    """A vote's option: shown as an option while the vote is undecided, then as
    not chosen (the winner's messages show it as a part)."""
    return f"candidate:{part_id}:{chunk}:{vote_state}"


def run_key(run_id: int, state: Status) -> str:
    return f"run:{run_id}:{state}"


class MessageBook:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def showing_run(
        self, message_id: int, channel_id: int, *, story_id: int, run_id: int, state: Status
    ) -> None:
        """The message (new or taken over) shows this run, in this state.
        Raises StoryDeleted when the story or the run went meanwhile."""
        try:
            await self._store.add_message(
                message_id,
                channel_id,
                story_id=story_id,
                run_id=run_id,
                shows=run_key(run_id, state),
            )
        except InvalidData:  # a reference to a row deleted since the run began
            raise StoryDeleted() from None

    async def showing_part(
        self, message_id: int, channel_id: int, *, story_id: int, part_id: int, chunk: int
    ) -> None:
        """A message posted for one more chunk of a part."""
        await self._store.add_message(
            message_id,
            channel_id,
            story_id=story_id,
            part_id=part_id,
            chunk=chunk,
            shows=part_key(part_id, chunk),
        )

    async def showing_vote(
        self, message_id: int, channel_id: int, *, story_id: int, vote_id: int, state: str
    ) -> None:
        """The message holds a vote's ballot."""
        await self._store.add_message(
            message_id,
            channel_id,
            story_id=story_id,
            vote_id=vote_id,
            shows=vote_key(vote_id, state),
        )

    async def showing_candidate(
        self,
        message_id: int,
        channel_id: int,
        *,
        story_id: int,
        part_id: int,
        chunk: int,
        vote_state: str,
    ) -> None:
        """A message posted for a chunk of a vote's option."""
        await self._store.add_message(
            message_id,
            channel_id,
            story_id=story_id,
            part_id=part_id,
            chunk=chunk,
            shows=candidate_key(part_id, chunk, vote_state),
        )

    async def should_show_part(self, part_id: int, message_ids: list[int]) -> None:
        """From now on these messages show `part_id`, a chunk each (the link moves
        before the edits, so a failed edit is found stale, never silently wrong)."""
        await self._store.show_part_in(part_id, message_ids)

    async def confirmed(self, message_id: int, shows: str) -> None:
        await self._store.set_shown(message_id, shows)

    async def get(self, message_id: int) -> MessageRecord | None:
        return await self._store.get_message(message_id)

    async def of_part(self, part_id: int) -> list[MessageRecord]:
        return await self._store.messages_of_part(part_id)

    async def of_run(self, run_id: int) -> list[MessageRecord]:
        return await self._store.messages_of_run(run_id)

    async def forget(self, message_id: int) -> bool:
        """The message was deleted, or cleared and needs no more care."""
        return await self._store.forget_message(message_id)

    async def stale(self, limit: int = 1000) -> list[MessageRecord]:
        return await self._store.stale_messages(limit)
