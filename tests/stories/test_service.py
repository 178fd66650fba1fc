"""The story use-cases with the real pool (tiny model) and a real SQLite file."""

from __future__ import annotations

import asyncio
import json

import pytest

from generation.errors import Cancelled, InvalidRequest
from storage.errors import NotFound
from storage.store import Store
from stories.errors import (
    AgeRestricted,
    EmptyPrompt,
    NotAllowed,
    OverlongPrompt,
    StoryDeleted,
    UserLimit,
)
from stories.genres import UnknownGenre
from stories.service import Requester, StoryOptions, StoryService, join_text
from tests.conftest import GatedBackend, wait_for

ALICE = Requester(user_id=1, guild_id=10, channel_id=20)
BOB = Requester(user_id=2, guild_id=10, channel_id=20)


def opts(**kwargs: object) -> StoryOptions:
    return StoryOptions(genre="crime", max_new_tokens=12, **kwargs)  # type: ignore[arg-type]


async def test_start_stores_prompt_and_part(service: StoryService, store: Store) -> None:
    run = await service.start("  The detective reached the crime scene  ", opts(seed=3), ALICE)
    assert run.story.status == "queued" and run.seed == 3
    outcome = await run.outcome()
    assert outcome.story.status == "done"
    parts = await store.story_parts(run.story.id)
    assert [p.kind for p in parts] == ["prompt", "generated"]
    assert parts[0].text == "The detective reached the crime scene"
    assert parts[1].seed == 3 and parts[1].requested_by == 1 and parts[1].model_id == "tiny-gpt2"
    assert parts[1].params is not None and parts[1].params["max_new_tokens"] == 12
    assert "primer" not in parts[1].text.lower()


async def test_continue_and_reroll_grow_the_tree(service: StoryService, store: Store) -> None:
    first = await (await service.start("Mara walked into the station", opts(), ALICE)).outcome()
    second = await (await service.continue_from(first.part.id, BOB)).run.outcome()
    assert second.part.parent_id == first.part.id and second.part.requested_by == 2
    path = await store.path_to(first.part.id)
    assert second.previous_text == "".join(part.text for part in path)
    reroll = await (await service.reroll(second.part.id, ALICE)).outcome()
    assert reroll.part.parent_id == first.part.id and reroll.part.seed != second.part.seed
    with pytest.raises(NotAllowed):
        await service.reroll(second.part.id, BOB)
    _, parts, path = await service.story(first.story.id)
    assert len(parts) == 4 and path[-1].id == reroll.part.id


async def test_two_continues_at_once_give_one_part(service: StoryService, store: Store) -> None:
    first = await (await service.start("Tom waited by the harbour", opts(), ALICE)).outcome()
    started = await asyncio.gather(
        service.continue_from(first.part.id, ALICE), service.continue_from(first.part.id, BOB)
    )
    assert started[0].run is started[1].run
    assert [s.new for s in started] == [True, False]  # the second joined the first
    await started[0].run.outcome()
    parts = await store.story_parts(first.story.id)
    assert len([p for p in parts if p.parent_id == first.part.id]) == 1


async def test_bad_input_is_refused_and_nothing_is_stored(
    service: StoryService, store: Store
) -> None:
    with pytest.raises(EmptyPrompt, match="empty"):
        await service.start(" \n\t ", opts(), ALICE)
    with pytest.raises(UnknownGenre):
        await service.start("hi", StoryOptions(genre="cooking"), ALICE)
    with pytest.raises(InvalidRequest):
        await service.start("hi", opts(temperature=0.0), ALICE)
    with pytest.raises(OverlongPrompt, match="too long"):
        await service.start("x" * 5000, opts(), ALICE)
    with pytest.raises(AgeRestricted):
        await service.start("hi", StoryOptions(genre="gore"), ALICE)
    assert (await store.list_stories(1)).total == 0
    nsfw = Requester(user_id=1, age_restricted_ok=True)
    await (await service.start("hi", StoryOptions(genre="gore", max_new_tokens=5), nsfw)).outcome()


async def test_per_user_limit_and_cooldown(make_pool, store: Store, genres) -> None:  # type: ignore[no-untyped-def]
    async with make_pool(gated=True) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        service = StoryService(store, pool, genres, user_max_active=1, user_cooldown_s=0)
        backend.hold()
        run = await service.start("one", opts(), ALICE)
        with pytest.raises(UserLimit, match="already have 1"):
            await service.start("two", opts(), ALICE)
        other = await service.start("bob's", opts(), BOB)  # others are not held back
        backend.release()
        await asyncio.gather(run.outcome(), other.outcome())
        await service.wait_idle()
        await service.start("three", opts(), ALICE)  # allowed again
        await service.wait_idle()
        cool = StoryService(store, pool, genres, user_max_active=5, user_cooldown_s=60)
        await (await cool.start("a", opts(), ALICE)).outcome()
        with pytest.raises(UserLimit, match="try again in") as limited:
            await cool.start("b", opts(), ALICE)
        assert limited.value.retry_after and limited.value.retry_after > 50
        await cool.wait_idle()


async def test_cancel_while_queued_marks_the_story(make_pool, store: Store, genres) -> None:  # type: ignore[no-untyped-def]
    async with make_pool(gated=True, max_batch=1) as pool:
        backend = pool.backend
        assert isinstance(backend, GatedBackend)
        service = StoryService(store, pool, genres, user_max_active=5)
        backend.hold()
        first = await service.start("first", opts(), BOB)
        await asyncio.to_thread(backend.entered.wait, 10)
        queued = await service.start("second", opts(), ALICE)
        with pytest.raises(NotAllowed):
            await service.cancel(queued.id, BOB)
        assert await service.cancel(queued.id, ALICE)
        with pytest.raises(Cancelled):
            await queued.outcome()
        backend.release()
        await first.outcome()
        await service.wait_idle()
        assert (await store.get_story(queued.story.id)).status == "cancelled"


async def test_export_formats(service: StoryService) -> None:
    outcome = await (
        await service.start("The captain looked at the map", opts(seed=9), ALICE)
    ).outcome()
    markdown = await service.export(outcome.story.id, "md")
    assert markdown.startswith("# The captain looked at the map")
    assert "**The captain looked at the map**" in markdown and "seeds: 9" in markdown
    text = await service.export(outcome.story.id, "txt")
    assert text.startswith("The captain looked at the map")
    data = json.loads(await service.export(outcome.story.id, "json"))
    assert data["story"]["genre"] == "crime" and len(data["parts"]) == 2
    with pytest.raises(InvalidRequest):
        await service.export(outcome.story.id, "pdf")


async def test_list_delete_and_forget(service: StoryService, store: Store) -> None:
    for n in range(3):
        await (await service.start(f"Story {n}", opts(), ALICE)).outcome()
    bob_story = await (await service.start("Bob's", opts(), BOB)).outcome()
    await (await service.continue_from(bob_story.part.id, ALICE)).run.outcome()
    page = await service.list_stories(1, per_page=2)
    assert page.total == 3 and len(page.items) == 2
    with pytest.raises(UnknownGenre):
        await service.list_stories(1, genre="cooking")
    with pytest.raises(NotAllowed):
        await service.delete_story(page.items[0].story.id, BOB)
    await service.delete_story(page.items[0].story.id, ALICE)
    deleted = await service.forget(1)
    assert (deleted.stories, deleted.parts) == (2, 5)  # 2 stories x 2 parts + 1 part in Bob's
    assert len(await store.story_parts(bob_story.story.id)) == 2
    with pytest.raises(NotFound):
        await service.story(page.items[0].story.id)


async def test_interrupted_stories_are_recovered(service: StoryService, store: Store) -> None:
    story, _, run = await store.create_story(prompt="left behind", genre="crime", author_id=1)
    recovered = await service.recover_interrupted()
    assert [r.id for r in recovered] == [run.id]
    assert (await store.get_story(story.id)).status == "interrupted"


async def test_pool_shutdown_marks_running_stories_interrupted(
    make_pool, store: Store, genres
) -> None:  # type: ignore[no-untyped-def]
    pool = make_pool(gated=True)
    await pool.start()
    backend = pool.backend
    assert isinstance(backend, GatedBackend)
    service = StoryService(store, pool, genres)
    backend.hold()
    run = await service.start("never finished", opts(), ALICE)
    await wait_for(lambda: backend.entered.is_set())
    closing = asyncio.create_task(pool.aclose(grace_s=0.05))
    assert run.ticket is not None
    await wait_for(lambda: run.ticket._job.close_requested)  # the grace period ran out
    backend.release()
    await closing
    await service.wait_idle()
    assert (await store.get_story(run.story.id)).status == "interrupted"


def test_join_text_avoids_double_spaces() -> None:
    assert join_text("Hello ", " world") == "world"
    assert join_text("Hello", " world") == " world"


async def test_two_quick_starts_cannot_both_pass_the_limit(service: StoryService) -> None:
    service.servers.user_max_active = 1
    results = await asyncio.gather(
        service.start("one", opts(), ALICE),
        service.start("two", opts(), ALICE),
        return_exceptions=True,
    )
    assert sum(isinstance(r, UserLimit) for r in results) == 1


async def test_deleting_a_story_stops_a_part_being_written(make_pool, store, genres) -> None:  # type: ignore[no-untyped-def]
    async with make_pool() as pool:
        service = StoryService(store, pool, genres, user_max_active=5)
        first = await (await service.start("Soon deleted", opts(), ALICE)).outcome()
        long = StoryOptions(max_new_tokens=400, min_new_tokens=400)
        started = await service.continue_from(first.part.id, BOB, long)
        run = started.run
        assert run.ticket is not None
        await wait_for(lambda: len(run.ticket.text) > 0)  # it is being written
        await service.delete_story(first.story.id, ALICE)
        with pytest.raises(StoryDeleted):
            await run.outcome()
        assert isinstance(run.ticket._future.exception(), Cancelled)
        assert len(run.ticket._job.generated) < 400  # stopped, not written for nobody
        await service.wait_idle()


async def test_per_person_bookkeeping_shrinks(service: StoryService) -> None:
    service.servers.user_cooldown_s = 0.01
    for user in range(300):
        await (await service.start("hi", opts(), Requester(user_id=user))).outcome()
    await service.wait_idle()
    assert service._active == {} and service._claims == {} and service._runs == {}
    assert len(service._last_start) < 100  # people whose cooldown passed are forgotten
