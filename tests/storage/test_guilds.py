"""A server's settings, counts and reports, on SQLite files and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from storage.errors import InvalidData, NotFound
from storage.guilds import GuildStore
from storage.models import GeneratedPart, GuildSettings
from storage.store import Store, migrations

GUILD = 4242


@pytest.fixture
async def guilds(store: Store) -> GuildStore:
    return GuildStore(store)


async def test_unconfigured_server_gets_the_defaults(guilds: GuildStore) -> None:
    assert await guilds.settings(GUILD) == GuildSettings(GUILD)


async def test_settings_change_one_at_a_time_and_persist(database: str) -> None:
    async with await Store.open(database) as store:
        guilds = GuildStore(store)
        await guilds.update(GUILD, genres=("crime", "fantasy"), cooldown_s=30.0)
        changed = await guilds.update(GUILD, channels=(11, 12), filter_terms=("zorp",))
        assert changed.genres == ("crime", "fantasy") and changed.cooldown_s == 30.0
        assert changed.channels == (11, 12) and changed.filter_terms == ("zorp",)
        await guilds.update(GUILD, genres=None)  # back to all genres
    async with await Store.open(database) as store:  # a restart keeps them
        settings = await GuildStore(store).settings(GUILD)
        assert (await GuildStore(store).settings(GUILD + 1)).channels is None  # per server
    assert settings.genres is None and settings.channels == (11, 12)
    assert settings.continue_policy == "anyone" and settings.report_threshold == 3


async def test_unknown_or_invalid_settings_are_refused(guilds: GuildStore) -> None:
    with pytest.raises(InvalidData, match="unknown guild settings: colour"):
        await guilds.update(GUILD, colour="red")
    with pytest.raises(InvalidData):  # the CHECK constraint
        await guilds.update(GUILD, continue_policy="everyone")
    assert await guilds.settings(GUILD) == GuildSettings(GUILD)  # nothing half-saved


async def test_daily_quota_is_counted_once_even_when_asked_at_once(guilds: GuildStore) -> None:
    taken = await asyncio.gather(*(guilds.take_daily_story(GUILD, 3) for _ in range(10)))
    assert taken.count(True) == 3
    assert (await guilds.counts(GUILD)).stories == 3
    await guilds.give_back_daily_story(GUILD)
    assert await guilds.take_daily_story(GUILD, 3)
    assert await guilds.take_daily_story(GUILD + 1, 3)  # another server's quota
    assert await guilds.take_daily_story(GUILD, None)  # no quota


async def test_counts_add_up_over_days(guilds: GuildStore) -> None:
    await guilds.add_count(GUILD, "refused")
    assert await guilds.add_count(GUILD, "refused", 2) == 3
    await guilds.add_count(GUILD, "masked")
    counts = await guilds.counts(GUILD, days=30)
    assert (counts.refused, counts.masked, counts.reports) == (3, 1, 0)
    with pytest.raises(InvalidData):
        await guilds.add_count(GUILD, "stories; DROP TABLE parts")


async def test_reports_hide_a_part_at_either_threshold(store: Store, guilds: GuildStore) -> None:
    story, root, _ = await store.create_story(
        prompt="P", genre="crime", author_id=1, guild_id=GUILD
    )
    first = await store.add_part(story.id, root.id, GeneratedPart(" one."))
    second = await store.add_part(story.id, root.id, GeneratedPart(" two."))

    def report(part_id: int, user: int, admin: bool = False):  # type: ignore[no-untyped-def]
        return guilds.report(part_id, user, admin=admin, members_hide=3, admins_hide=1)

    assert not (await report(first.id, 10)).hidden
    again = await report(first.id, 10)  # the same person twice counts once
    assert not again.new and again.members == 1
    assert not (await report(first.id, 11)).hidden
    assert (await report(first.id, 12)).hidden  # the third member
    assert (await store.get_part(first.id)).hidden
    assert (await report(second.id, 20, admin=True)).hidden  # one admin is enough
    hidden = await guilds.hidden_parts(GUILD)
    assert [(h.part.id, h.reports) for h in hidden] == [(second.id, 1), (first.id, 3)]
    assert await guilds.hidden_parts(GUILD + 1) == []
    await guilds.restore(first.id)
    assert not (await store.get_part(first.id)).hidden
    assert not (await report(first.id, 10)).hidden  # reports start over after a restore
    with pytest.raises(NotFound):
        await report(99_999, 1)


async def test_deleting_a_part_takes_what_came_after_it(store: Store, guilds: GuildStore) -> None:
    story, root, _ = await store.create_story(prompt="P", genre="crime", author_id=1)
    first = await store.add_part(story.id, root.id, GeneratedPart(" a."))
    await store.add_part(story.id, first.id, GeneratedPart(" b."))
    other = await store.add_part(story.id, root.id, GeneratedPart(" c."))
    assert await guilds.delete_part(first.id) == 2
    assert [p.id for p in await store.story_parts(story.id)] == [root.id, other.id]
    assert await guilds.delete_part(root.id) == 2  # the prompt: the whole story
    with pytest.raises(NotFound):
        await store.get_story(story.id)


async def test_a_server_left_long_ago_is_forgotten(guilds: GuildStore) -> None:
    await guilds.update(GUILD, cooldown_s=5.0)
    await guilds.update(GUILD + 1, cooldown_s=6.0)
    await guilds.add_count(GUILD, "refused")
    now = time.time()
    await guilds.left(GUILD, at=now - 40 * 86_400)
    await guilds.left(GUILD + 1, at=now - 40 * 86_400)
    await guilds.joined(GUILD + 1)  # came back: kept
    assert await guilds.forget_left_before(now - 30 * 86_400) == [GUILD]
    assert await guilds.settings(GUILD) == GuildSettings(GUILD)
    assert (await guilds.counts(GUILD)).refused == 0
    assert (await guilds.settings(GUILD + 1)).cooldown_s == 6.0


async def test_schema_two_database_is_upgraded_with_its_stories(tmp_path: Path) -> None:
    """A database from before runs, servers and moderation (schema 2) opens
    as the newest schema with its stories intact and ready to moderate."""
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as conn:
        for _, schema in migrations()[:2]:
            conn.executescript(schema.read_text())
        conn.executescript(
            """
            PRAGMA user_version = 2;
            INSERT INTO stories (id, author_id, source, guild_id, genre, title, status,
                                 created_at, updated_at)
            VALUES (1, 7, 'discord', 4242, 'crime', 'old', 'done', 0, 0);
            INSERT INTO parts (id, story_id, parent_id, kind, text, created_at)
            VALUES (1, 1, NULL, 'prompt', 'P1', 0), (2, 1, 1, 'generated', ' g', 0);
            """
        )
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(migrations()) >= 5
        parts = await store.story_parts(1)
        assert [(p.text, p.masked, p.hidden) for p in parts] == [
            ("P1", False, False),
            (" g", False, False),
        ]
        guilds = GuildStore(store)
        assert await guilds.settings(GUILD) == GuildSettings(GUILD)
        tally = await guilds.report(2, 5, admin=True, members_hide=3, admins_hide=1)
        assert tally.hidden and [h.part.id for h in await guilds.hidden_parts(GUILD)] == [2]
        masked = await store.add_part(1, 2, GeneratedPart(" ███.", masked=True))
        assert (await store.get_part(masked.id)).masked
