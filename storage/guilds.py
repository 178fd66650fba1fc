"""What belongs to one Discord server: its settings, its daily counts, and the
reports that hide its stories' parts.

It uses the `Store`'s database (its transactions, its SQL dialect), each
operation in one transaction.
"""

from __future__ import annotations

import json
import time
from typing import Any

from storage.errors import InvalidData, NotFound
from storage.models import (
    GUILD_COUNTERS,
    GUILD_SETTINGS_FIELDS,
    GuildCounts,
    GuildSettings,
    HiddenPart,
    ReportTally,
    guild_settings_from_row,
    part_from_row,
)
from storage.store import Store, _part, _story

DAY_S = 86_400


def utc_day(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if at is None else at))


def _column(name: str, value: Any) -> Any:
    """A settings value as stored: tuples become JSON arrays, flags 0 or 1."""
    if isinstance(value, bool):
        return int(value)
    if name in ("genres", "channels"):
        return None if value is None else json.dumps(list(value))
    if name == "filter_terms":
        return json.dumps(list(value))
    return value


class GuildStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------- settings
    async def settings(self, guild_id: int) -> GuildSettings:
        """The server's settings; the defaults for a server nobody configured."""
        async with self._store._transaction(write=False) as conn:
            row = await conn.one("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return guild_settings_from_row(row) if row else GuildSettings(guild_id)

    async def update(self, guild_id: int, **changes: Any) -> GuildSettings:
        """Change some settings (the others stay) and return them all."""
        unknown = set(changes) - set(GUILD_SETTINGS_FIELDS)
        if unknown:
            raise InvalidData(f"unknown guild settings: {', '.join(sorted(unknown))}")
        now = time.time()
        async with self._store._transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, updated_at) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO NOTHING",
                (guild_id, now),
            )
            for name, value in changes.items():  # names checked against the columns above
                await conn.execute(
                    f"UPDATE guild_settings SET {name} = ?, updated_at = ? WHERE guild_id = ?",
                    (_column(name, value), now, guild_id),
                )
            row = await conn.one("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return guild_settings_from_row(row)

    async def left(self, guild_id: int, at: float | None = None) -> None:
        """The bot left the server: its settings are kept a while (see
        `forget_left_before`)."""
        async with self._store._transaction() as conn:
            await conn.execute(
                "UPDATE guild_settings SET left_at = ? WHERE guild_id = ?",
                (time.time() if at is None else at, guild_id),
            )

    async def joined(self, guild_id: int) -> None:
        async with self._store._transaction() as conn:
            await conn.execute(
                "UPDATE guild_settings SET left_at = NULL WHERE guild_id = ?", (guild_id,)
            )

    async def forget_left_before(self, before: float) -> list[int]:
        """Delete the settings and counts of servers the bot left before `before`."""
        async with self._store._transaction() as conn:
            rows = await conn.all(
                "SELECT guild_id FROM guild_settings WHERE left_at IS NOT NULL AND left_at < ?",
                (before,),
            )
            gone = [int(row[0]) for row in rows]
            for guild_id in gone:
                await conn.execute("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,))
                await conn.execute("DELETE FROM guild_counts WHERE guild_id = ?", (guild_id,))
        return gone

    # --------------------------------------------------------------- counts
    async def add_count(self, guild_id: int, counter: str, n: int = 1) -> int:
        """Add to today's counter; returns today's value."""
        if counter not in GUILD_COUNTERS:
            raise InvalidData(f"unknown counter {counter!r}")
        day = utc_day()
        async with self._store._transaction() as conn:
            # The column name comes from GUILD_COUNTERS (checked above), never from input.
            await conn.execute(
                f"INSERT INTO guild_counts (guild_id, day, {counter}) VALUES (?, ?, ?)"
                f" ON CONFLICT (guild_id, day) DO UPDATE"
                f" SET {counter} = guild_counts.{counter} + ?",
                (guild_id, day, n, n),
            )
            row = await conn.one(
                f"SELECT {counter} FROM guild_counts WHERE guild_id = ? AND day = ?",
                (guild_id, day),
            )
        return int(row[0]) if row else 0

    async def take_daily_story(self, guild_id: int, quota: int | None) -> bool:
        """Count one story for today unless the quota is used up (in one
        transaction, the day's row locked, so two at once, in one process or two,
        cannot both take the last one)."""
        day = utc_day()
        async with self._store._transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_counts (guild_id, day) VALUES (?, ?)"
                " ON CONFLICT (guild_id, day) DO NOTHING",
                (guild_id, day),
            )
            row = await conn.one(
                "SELECT stories FROM guild_counts WHERE guild_id = ? AND day = ?" + conn.for_update,
                (guild_id, day),
            )
            if quota is not None and row is not None and row[0] >= quota:
                return False
            await conn.execute(
                "UPDATE guild_counts SET stories = stories + 1 WHERE guild_id = ? AND day = ?",
                (guild_id, day),
            )
        return True

    async def give_back_daily_story(self, guild_id: int) -> None:
        """A story counted today that never started (refused, or not shown)."""
        async with self._store._transaction() as conn:
            await conn.execute(
                "UPDATE guild_counts"
                " SET stories = CASE WHEN stories > 0 THEN stories - 1 ELSE 0 END"
                " WHERE guild_id = ? AND day = ?",
                (guild_id, utc_day()),
            )

    async def counts(self, guild_id: int, days: int = 1) -> GuildCounts:
        """The counts of the last `days` days, today included."""
        first = utc_day(time.time() - (days - 1) * DAY_S)
        sums = ", ".join(f"COALESCE(SUM({c}), 0)" for c in GUILD_COUNTERS)
        async with self._store._transaction(write=False) as conn:
            row = await conn.one(
                f"SELECT {sums} FROM guild_counts WHERE guild_id = ? AND day >= ?",
                (guild_id, first),
            )
        values = dict(zip(GUILD_COUNTERS, row or (0,) * len(GUILD_COUNTERS), strict=True))
        return GuildCounts(days=days, **{k: int(v) for k, v in values.items()})

    # -------------------------------------------------------------- reports
    async def report(
        self, part_id: int, user_id: int, *, admin: bool, members_hide: int, admins_hide: int
    ) -> ReportTally:
        """Record one person's report of a part; hide the part when either
        threshold is reached. Reporting twice counts once. The part's row is
        locked first, so reports arriving together are counted one after another."""
        async with self._store._transaction() as conn:
            await conn.lock("parts", part_id)
            row = await conn.one("SELECT kind, hidden FROM parts WHERE id = ?", (part_id,))
            if row is None:
                raise NotFound(f"part {part_id} does not exist")
            new = (
                await conn.execute(
                    "INSERT INTO reports (part_id, user_id, admin, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (part_id, user_id) DO NOTHING",
                    (part_id, user_id, int(admin), time.time()),
                )
                > 0
            )
            counted = await conn.one(
                "SELECT COALESCE(SUM(CASE WHEN admin = 0 THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN admin <> 0 THEN 1 ELSE 0 END), 0)"
                " FROM reports WHERE part_id = ?",
                (part_id,),
            )
            members, admins = (int(counted[0]), int(counted[1])) if counted else (0, 0)
            hide = bool(row["hidden"]) or members >= members_hide or admins >= admins_hide
            if hide and not row["hidden"]:
                await conn.execute("UPDATE parts SET hidden = 1 WHERE id = ?", (part_id,))
        return ReportTally(members=members, admins=admins, new=new, hidden=hide)

    async def restore(self, part_id: int) -> None:
        """An admin brings a hidden part back; its reports are cleared."""
        async with self._store._transaction() as conn:
            if await conn.execute("UPDATE parts SET hidden = 0 WHERE id = ?", (part_id,)) == 0:
                raise NotFound(f"part {part_id} does not exist")
            await conn.execute("DELETE FROM reports WHERE part_id = ?", (part_id,))

    async def hidden_parts(self, guild_id: int, limit: int = 25) -> list[HiddenPart]:
        """The server's parts hidden after reports, newest first."""
        async with self._store._transaction(write=False) as conn:
            rows = await conn.all(
                "SELECT p.*, (SELECT COUNT(*) FROM reports r WHERE r.part_id = p.id) AS n"
                " FROM parts p JOIN stories s ON s.id = p.story_id"
                " WHERE p.hidden = 1 AND s.guild_id = ? ORDER BY p.id DESC LIMIT ?",
                (guild_id, limit),
            )
            return [
                HiddenPart(part_from_row(row), await _story(conn, row["story_id"]), int(row["n"]))
                for row in rows
            ]

    async def delete_part(self, part_id: int) -> int:
        """An admin deletes a part (and what was written after it); deleting a
        story's prompt deletes the story. Returns the number of parts deleted.
        Messages that showed them are left with nothing to show (the publisher
        says so in the channel)."""
        async with self._store._transaction() as conn:
            part = await _part(conn, part_id)
            if part.parent_id is None:
                row = await conn.one(
                    "SELECT COUNT(*) FROM parts WHERE story_id = ?", (part.story_id,)
                )
                await conn.execute("DELETE FROM stories WHERE id = ?", (part.story_id,))
                return int(row[0]) if row else 1
            row = await conn.one(
                "WITH RECURSIVE below(id) AS (SELECT id FROM parts WHERE id = ? UNION ALL"
                " SELECT p.id FROM parts p JOIN below ON p.parent_id = below.id)"
                " SELECT COUNT(*) FROM below",
                (part_id,),
            )
            await conn.execute("DELETE FROM parts WHERE id = ?", (part_id,))
            return int(row[0]) if row else 1
