"""Showing a run in a channel: queued, streaming, final.

The story is an ordinary channel message owned by the bot (interaction tokens
die after 15 minutes; a queued story can take longer). It shows the queue
position with a Cancel button, then the text as it streams (edited at most
once per `edit_interval`), then the final text split at sentence boundaries,
with Continue and Reroll buttons and a ➕ reaction. A message deleted meanwhile
is posted again; a missing permission costs the reaction, not the story.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import discord

from bot import render
from bot.views import cancel_view, retry_view, story_view
from generation.errors import Cancelled, GenerationError, PoolClosed
from storage.store import Store
from stories.service import Run

log = logging.getLogger(__name__)

CONTINUE_EMOJI = "➕"


class Publisher:
    def __init__(self, store: Store, *, edit_interval: float = 1.0) -> None:
        self.store = store
        self.edit_interval = edit_interval
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(
        self,
        run: Run,
        channel: discord.abc.Messageable,
        message: discord.Message,
        *,
        show_prompt: bool,
        part_number: int,
        old_messages: list[discord.PartialMessage] | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._logged(
                self._run(run, channel, message, show_prompt, part_number, old_messages or []),
                run.story.id,
            ),
            name=f"publish-{run.story.id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ begin
    def queued_text(self, run: Run, show_prompt: bool, position: int) -> str:
        head = render.story_body(run.previous_text, "") if show_prompt else ""
        if position > 0:
            status = f"⏳ {run.genre.title} · queued, position {position}"
        else:
            status = f"✍️ {run.genre.title} · writing…"
        return render.progress(head, status)

    async def begin(
        self,
        run: Run,
        channel: discord.abc.Messageable,
        *,
        show_prompt: bool,
        reply_to: discord.PartialMessage | discord.Message | None = None,
        existing: discord.Message | discord.PartialMessage | None = None,
    ) -> discord.Message:
        """Post (or take over) the message that will show this run."""
        content = self.queued_text(run, show_prompt, run.position)
        view = cancel_view(run.story.id)
        message: discord.Message | None = None
        if existing is not None:
            message = await self._edit(existing, content=content, view=view)
        if message is None:
            reference = reply_to.to_reference(fail_if_not_exists=False) if reply_to else None
            message = await channel.send(content, view=view, reference=reference)  # type: ignore[arg-type]
        await self.store.link_pending(run.story.id, message.id, message.channel.id)
        return message

    # ----------------------------------------------------------------- follow
    @staticmethod
    async def _logged(work: Awaitable[None], story_id: int) -> None:
        try:
            await work
        except Exception:
            log.exception("story %d: could not show the story in Discord", story_id)

    async def _run(
        self,
        run: Run,
        channel: discord.abc.Messageable,
        message: discord.Message,
        show_prompt: bool,
        part_number: int,
        old_messages: list[discord.PartialMessage],
    ) -> None:
        last_edit = time.monotonic()
        shown = run.position
        async for position in run.positions():
            if (
                position > 0
                and position != shown
                and time.monotonic() - last_edit >= self.edit_interval
            ):
                message = await self._edit_or_repost(
                    message, channel, run, content=self.queued_text(run, show_prompt, position)
                )
                shown, last_edit = position, time.monotonic()
        head = run.previous_text if show_prompt else None
        text = ""
        last_edit = 0.0
        async for delta in run.stream():
            text += delta
            if time.monotonic() - last_edit >= self.edit_interval:
                content = render.progress(
                    render.story_body(head, text), f"✍️ {run.genre.title} · writing…"
                )
                message = await self._edit_or_repost(message, channel, run, content=content)
                last_edit = time.monotonic()
        try:
            outcome = await run.outcome()
        except Cancelled:
            await self._settle(message, run, head, "🚫 Cancelled.", None)
            return
        except PoolClosed:
            await self._settle(
                message, run, head, "⚠️ Interrupted by a restart.", retry_view(run.story.id)
            )
            return
        except GenerationError as error:
            await self._settle(message, run, head, f"⚠️ {error}", retry_view(run.story.id))
            return
        result = outcome.result
        extra = " · cut short (time limit)" if result.finish_reason == "timeout" else ""
        body = render.story_body(head, outcome.part.text)
        chunks = render.final_chunks(
            body,
            render.footer(run.genre.title, run.story.author_id, part_number, result.seed, extra),
        )
        await self.store.clear_pending(message.id)
        posted = await self._show_final(message, channel, chunks, outcome.part.id, old_messages)
        for sent in posted:
            await self.store.link_message(outcome.part.id, sent.id, sent.channel.id)
        await self._react(posted[-1])

    async def _settle(
        self,
        message: discord.Message,
        run: Run,
        head: str | None,
        status: str,
        view: discord.ui.View | None,
    ) -> None:
        content = render.progress(render.story_body(head, "") if head else "", status).replace(
            " ▌", ""
        )
        settled = await self._edit(message, content=content, view=view)
        await self.store.clear_pending(message.id)
        if settled is not None and view is not None:
            await self.store.link_pending(run.story.id, settled.id, settled.channel.id)

    async def _show_final(
        self,
        message: discord.Message,
        channel: discord.abc.Messageable,
        chunks: list[str],
        part_id: int,
        old_messages: list[discord.PartialMessage],
    ) -> list[discord.Message]:
        posted: list[discord.Message] = []
        view = story_view(part_id)
        targets: list[Any] = [message, *old_messages]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            target = targets[index] if index < len(targets) else None
            sent: discord.Message | None = None
            if target is not None:
                sent = await self._edit(target, content=chunk, view=view if last else None)
            if sent is None:
                reference = posted[-1].to_reference(fail_if_not_exists=False) if posted else None
                sent = await channel.send(
                    chunk,
                    view=view if last else discord.utils.MISSING,  # type: ignore[arg-type]
                    reference=reference,
                )  # type: ignore[arg-type]
            posted.append(sent)
        for surplus in targets[len(chunks) :]:  # a reroll that came out shorter
            with contextlib.suppress(discord.HTTPException):
                await surplus.delete()
            await self.store.forget_message(surplus.id)
        return posted

    async def _react(self, message: discord.Message) -> None:
        try:
            await message.add_reaction(CONTINUE_EMOJI)
        except discord.Forbidden:
            log.info(
                "no permission to add reactions in channel %s; buttons still work",
                message.channel.id,
            )
        except discord.HTTPException as error:
            log.warning("could not add the continue reaction: %s", error)

    # ---------------------------------------------------------------- editing
    async def _edit(
        self,
        message: discord.Message | discord.PartialMessage,
        **fields: Any,
    ) -> discord.Message | None:
        """Edit; None when the message is gone (deleted) or cannot be edited."""
        try:
            return await message.edit(**fields)
        except discord.NotFound:  # 10008: deleted by someone
            await self.store.forget_message(message.id)
            return None
        except discord.HTTPException as error:
            log.warning("could not edit message %s: %s", message.id, error)
            return message if isinstance(message, discord.Message) else None

    async def _edit_or_repost(
        self, message: discord.Message, channel: discord.abc.Messageable, run: Run, content: str
    ) -> discord.Message:
        edited = await self._edit(message, content=content)
        if edited is not None:
            return edited
        fresh = await channel.send(content, view=cancel_view(run.story.id))
        await self.store.link_pending(run.story.id, fresh.id, fresh.channel.id)
        return fresh
