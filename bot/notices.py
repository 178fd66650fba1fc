"""Visible answers to reactions that were refused.

A reaction has no interaction to answer privately, so a refused ➕ (a
cooldown, a full queue, a part still being written) gets two visible signs: the
person's reaction is removed, and a short notice naming them (without pinging:
every message uses AllowedMentions.none()) replies to the story and deletes
itself. At most one notice per person per `window_s`, so a channel is never
spammed; the removed reaction still shows each refusal.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import discord

log = logging.getLogger(__name__)


class Notices:
    def __init__(
        self,
        *,
        window_s: float = 10.0,
        delete_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.delete_after_s = delete_after_s
        self._clock = clock
        self._last: dict[int, float] = {}  # user id -> when they last got a notice
        self.answered = 0  # refusals handled (tests wait on it)

    async def refuse(
        self,
        message: discord.PartialMessage,
        user_id: int,
        emoji: discord.PartialEmoji | str,
        reason: str,
        retry_after: float | None = None,
    ) -> bool:
        """Answer a refused reaction; returns whether a notice was posted."""
        try:
            return await self._refuse(message, user_id, emoji, reason, retry_after)
        finally:
            self.answered += 1

    async def _refuse(
        self,
        message: discord.PartialMessage,
        user_id: int,
        emoji: discord.PartialEmoji | str,
        reason: str,
        retry_after: float | None,
    ) -> bool:
        with contextlib.suppress(discord.HTTPException):  # needs Manage Messages
            await message.remove_reaction(emoji, discord.Object(id=user_id))
        now = self._clock()
        window = max(self.window_s, retry_after or 0.0)
        last = self._last.get(user_id)
        if last is not None and now - last < window:
            return False
        self._last[user_id] = now
        if len(self._last) > 256:  # forget people whose window has passed
            self._last = {u: t for u, t in self._last.items() if now - t < window}
        try:
            await message.channel.send(
                f"-# <@{user_id}> {reason}",
                reference=message.to_reference(fail_if_not_exists=False),
                delete_after=self.delete_after_s,
            )
        except discord.HTTPException as error:
            log.info("could not post a notice in channel %s: %s", message.channel.id, error)
            return False
        return True
