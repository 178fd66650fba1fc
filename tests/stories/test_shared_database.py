"""Two story services on one PostgreSQL database, as two storybot processes
are: a part is continued once, whichever process each request reaches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from generation.pool import GenerationPool
from storage.store import Store
from stories.errors import Conflict, WritingElsewhere
from stories.genres import GenreRegistry
from stories.service import Requester, Started, StoryOptions, StoryService
from tests.conftest import GatedBackend

ALICE = Requester(user_id=1, guild_id=10, channel_id=20)
BOB = Requester(user_id=2, guild_id=10, channel_id=20)
CAROL = Requester(user_id=3, guild_id=10, channel_id=20)


async def test_two_processes_continue_a_part_once(
    postgres_url: str, make_pool: Callable[..., GenerationPool], genres: GenreRegistry
) -> None:
    async with (
        await Store.open(postgres_url, instance="one") as one,
        await Store.open(postgres_url, instance="two") as two,
        make_pool(gated=True) as pool,
    ):
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        first = StoryService(one, pool, genres, user_max_active=2, user_cooldown_s=0)
        second = StoryService(two, pool, genres, user_max_active=2, user_cooldown_s=0)
        options = StoryOptions(genre="crime", max_new_tokens=8)
        written = await (await first.start("Mara walked in", options, ALICE)).outcome()
        # One reaction reaches each process at the same moment; the run that wins
        # is held, so the other cannot come after it is over (then a second
        # continuation, a branch, would be right).
        backend.hold()
        outcomes = await asyncio.gather(
            first.continue_from(written.part.id, BOB),
            second.continue_from(written.part.id, CAROL),
            return_exceptions=True,
        )
        started = [o for o in outcomes if isinstance(o, Started)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(started) == 1 and started[0].new, outcomes
        assert len(refused) == 1 and isinstance(refused[0], WritingElsewhere), outcomes
        backend.release()
        await started[0].run.outcome()
        parts = await one.story_parts(written.story.id)
        assert [p.parent_id for p in parts].count(written.part.id) == 1  # one continuation
        # Rerolling a part another process continues is refused as within one.
        backend.hold()
        run = (await first.continue_from(parts[-1].id, BOB)).run
        with pytest.raises(Conflict, match="continuing"):
            await second.reroll(parts[-1].id, ALICE)
        backend.release()
        await run.outcome()
        await first.wait_idle()
        await second.wait_idle()
