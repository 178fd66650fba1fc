"""Share links (a story's read-only web page) and the display names those pages show.

It uses the `Store`'s database, as `storage.guilds` does, each operation in one
transaction. Tokens are made by the caller's rules
(`stories.sharing`); here they are looked up by primary key, never compared
character by character in Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from storage.errors import NotFound
from storage.store import Store, _story

MAX_NAME_CHARS = 100  # Discord's display names are at most 32; keep what is stored small


@dataclass(frozen=True)
class ShareLink:
    token: str
    story_id: int
    created_by: int | None  # Discord user id; None over HTTP
    created_at: float
    revoked_at: float | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


def share_from_row(row: Any) -> ShareLink:
    return ShareLink(
        token=row["token"],
        story_id=row["story_id"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class ShareStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def share(
        self, story_id: int, created_by: int | None, new_token: Callable[[], str]
    ) -> tuple[ShareLink, bool]:
        """The story's live link, made with `new_token()` when it has none.
        Returns (link, made): made is False when the live link was there already.
        In one transaction, the story's row locked, so two people sharing at once
        (in one process or two) get the same link."""
        async with self._store._transaction() as conn:
            await conn.lock("stories", story_id)
            await _story(conn, story_id)  # NotFound for a story that is gone
            row = await conn.one(
                "SELECT * FROM shares WHERE story_id = ? AND revoked_at IS NULL", (story_id,)
            )
            if row is not None:
                return share_from_row(row), False
            link = ShareLink(new_token(), story_id, created_by, time.time())
            await conn.execute(
                "INSERT INTO shares (token, story_id, created_by, created_at) VALUES (?, ?, ?, ?)",
                (link.token, link.story_id, link.created_by, link.created_at),
            )
            return link, True

    async def get(self, token: str) -> ShareLink | None:
        """The link with this token, live or revoked; None when there is none."""
        async with self._store._transaction(write=False) as conn:
            row = await conn.one("SELECT * FROM shares WHERE token = ?", (token,))
        return share_from_row(row) if row else None

    async def live_link(self, story_id: int) -> ShareLink | None:
        async with self._store._transaction(write=False) as conn:
            row = await conn.one(
                "SELECT * FROM shares WHERE story_id = ? AND revoked_at IS NULL", (story_id,)
            )
        return share_from_row(row) if row else None

    async def revoke(self, token: str) -> ShareLink:
        """Revoke one link (revoking a revoked link changes nothing)."""
        async with self._store._transaction() as conn:
            await conn.execute(
                "UPDATE shares SET revoked_at = ? WHERE token = ? AND revoked_at IS NULL",
                (time.time(), token),
            )
            row = await conn.one("SELECT * FROM shares WHERE token = ?", (token,))
        if row is None:
            raise NotFound("there is no such share link")
        return share_from_row(row)

    async def revoke_story(self, story_id: int) -> int:
        """Revoke the story's live links; how many there were."""
        async with self._store._transaction() as conn:
            return await conn.execute(
                "UPDATE shares SET revoked_at = ? WHERE story_id = ? AND revoked_at IS NULL",
                (time.time(), story_id),
            )

    # ---------------------------------------------------------------- names
    async def remember_name(self, user_id: int, name: str) -> None:
        """The name to show for a person's parts (written only when it changed)."""
        name = " ".join(name.split())[:MAX_NAME_CHARS]
        if not name:
            return
        async with self._store._transaction() as conn:
            await conn.execute(
                "INSERT INTO display_names (user_id, name, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name,"
                " updated_at = excluded.updated_at WHERE display_names.name <> excluded.name",
                (user_id, name, time.time()),
            )

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        async with self._store._transaction(write=False) as conn:
            rows = await conn.all(
                f"SELECT user_id, name FROM display_names WHERE user_id IN ({marks})", wanted
            )
        return {int(row["user_id"]): str(row["name"]) for row in rows}

    async def forget_name(self, user_id: int) -> None:
        async with self._store._transaction() as conn:
            await conn.execute("DELETE FROM display_names WHERE user_id = ?", (user_id,))
