"""Share links and the names share pages show, on SQLite files and on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from storage.errors import NotFound
from storage.guilds import GuildStore
from storage.models import GeneratedPart
from storage.shares import ShareStore
from storage.store import Store, migrations

ALICE, BOB = 1, 2


def tokens() -> itertools.count[int]:
    return itertools.count(1)


async def story(store: Store, author: int = ALICE) -> int:
    made, _, _ = await store.create_story(prompt="P", genre="crime", author_id=author, guild_id=7)
    return made.id


async def test_a_story_has_one_live_link_until_it_is_revoked(store: Store) -> None:
    shares = ShareStore(store)
    story_id = await story(store)
    counter = tokens()

    def token() -> str:
        return f"token-{next(counter):020d}"

    link, made = await shares.share(story_id, ALICE, token)
    assert made and link.live and link.created_by == ALICE and link.story_id == story_id
    again, made = await shares.share(story_id, BOB, token)
    assert not made and again == link  # the same link, whoever asks
    assert await shares.get(link.token) == link
    assert await shares.live_link(story_id) == link

    revoked = await shares.revoke(link.token)
    assert revoked.revoked_at is not None and not revoked.live
    assert await shares.live_link(story_id) is None
    assert (await shares.revoke(link.token)).revoked_at == revoked.revoked_at  # once
    fresh, made = await shares.share(story_id, ALICE, token)
    assert made and fresh.token != link.token  # a new link; the old stays dead
    assert not (await shares.get(link.token)).live  # type: ignore[union-attr]

    assert await shares.revoke_story(story_id) == 1
    assert await shares.revoke_story(story_id) == 0
    with pytest.raises(NotFound):
        await shares.revoke("no-such-token-0000000")
    with pytest.raises(NotFound):
        await shares.share(story_id + 100, ALICE, token)  # no such story


async def test_sharing_at_once_makes_one_link(store: Store) -> None:
    shares = ShareStore(store)
    story_id = await story(store)
    counter = tokens()
    results = await asyncio.gather(
        *(shares.share(story_id, ALICE, lambda: f"t{next(counter):030d}") for _ in range(10))
    )
    assert len({link.token for link, _ in results}) == 1
    assert [made for _, made in results].count(True) == 1


async def test_a_deleted_story_takes_its_links(store: Store) -> None:
    shares = ShareStore(store)
    story_id = await story(store)
    link, _ = await shares.share(story_id, ALICE, lambda: "x" * 24)
    await store.delete_story(story_id)
    assert await shares.get(link.token) is None


async def test_names_are_kept_updated_and_forgotten_with_the_person(store: Store) -> None:
    shares = ShareStore(store)
    await shares.remember_name(ALICE, "  Alice \n the  Great ")
    await shares.remember_name(BOB, "Bob")
    await shares.remember_name(3, "   ")  # nothing to show: nothing kept
    assert await shares.names([ALICE, BOB, 3, 4]) == {ALICE: "Alice the Great", BOB: "Bob"}
    await shares.remember_name(BOB, "Robert")
    assert await shares.names([BOB]) == {BOB: "Robert"}
    assert await shares.names([]) == {}
    await shares.remember_name(ALICE, "A" * 500)
    assert len((await shares.names([ALICE]))[ALICE]) == 100

    # Bob shares his own story and continues Alice's; /forgetme forgets his name.
    bobs = await story(store, BOB)
    alices = await story(store, ALICE)
    await shares.share(bobs, BOB, lambda: "b" * 24)
    alice_link, _ = await shares.share(alices, BOB, lambda: "a" * 24)
    root = await store.latest_part(alices)
    await store.add_part(alices, root.id, GeneratedPart(" more.", requested_by=BOB))
    await store.delete_user(BOB)
    assert await shares.names([ALICE, BOB]) == {ALICE: "A" * 100}
    assert await shares.get("b" * 24) is None  # went with his story
    kept = await shares.get(alice_link.token)
    assert kept is not None and kept.live and kept.created_by is None


async def test_sharing_is_a_server_setting_on_by_default(store: Store) -> None:
    guilds = GuildStore(store)
    assert (await guilds.settings(7)).sharing is True
    assert (await guilds.update(7, sharing=False)).sharing is False
    assert (await guilds.settings(7)).sharing is False
    assert (await guilds.update(7, report_threshold=4)).sharing is False  # kept


async def test_a_schema_five_database_is_upgraded_with_sharing_on(tmp_path: Path) -> None:
    """Servers configured before share links (schema 5) allow them."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for number, schema in migrations()[:5]:
            conn.executescript(schema.read_text())
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute(
            "INSERT INTO guild_settings (guild_id, daily_quota, updated_at) VALUES (7, 3, 0)"
        )
    async with await Store.open(path) as store:
        settings = await GuildStore(store).settings(7)
        assert settings.daily_quota == 3 and settings.sharing is True
        story_id = await story(store)
        link, made = await ShareStore(store).share(story_id, ALICE, lambda: "c" * 24)
        assert made and link.live
