"""The discord.py client: commands, listeners, start-up and shutdown.

No privileged intents: reactions arrive with the default intents, and the bot
never reads message content. Every message it sends uses
`AllowedMentions.none()`, so generated text can never ping anyone.

`DiscordApp` is the bot's life in the composition root: start it, and at
shutdown `settle` (post what finished, mark what did not, while the session is
still open) before `close`.

The client is discord.py's `AutoShardedClient`: given `shard_count` (and
`shard_ids`, the shards of this process), it runs those; without, it asks
Discord how many shards the bot needs and runs them all. Every REST request
counts against one `RequestBudget` (bot/budget.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.admin import admin_group
from bot.budget import RequestBudget
from bot.handlers import Handlers
from bot.i18n import CommandTranslator
from bot.notices import Notices
from bot.publisher import Publisher
from bot.telemetry import DiscordObserver, instrument, name_interaction
from bot.views import story_button_type
from stories.message_book import MessageBook
from stories.servers import LENGTHS
from stories.service import MAX_MEMORY_CHARS, MAX_NOTE_CHARS, MAX_PROMPT_CHARS, StoryService

log = logging.getLogger(__name__)


class DiscordLoginError(Exception):
    """The token was refused; printed as one line at start-up."""


def build_commands(
    handlers: Handlers,
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    length_choices = [
        app_commands.Choice(name=locale_str(size.label), value=key) for key, size in LENGTHS.items()
    ]

    async def genre_choices(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The genres this server enabled; 18+ ones only in age-restricted channels.
        Autocomplete also lifts Discord's limit of 25 fixed choices."""
        return await handlers.genre_choices(interaction, current)

    @app_commands.command(
        name="story", description=locale_str("Write a story with GPT-2 from your first line")
    )
    @app_commands.describe(
        genre=locale_str("What kind of story (18+ genres only work in age-restricted channels)"),
        prompt=locale_str("The first line(s) of your story"),
        length=locale_str("How much to write"),
        seed=locale_str("A number to reproduce a story exactly"),
        memory=locale_str("Who and where, kept in mind all along (up to 500 characters)"),
        authors_note=locale_str("The tone, or what should happen next (up to 200 characters)"),
    )
    @app_commands.autocomplete(genre=genre_choices)
    @app_commands.choices(length=length_choices)
    @app_commands.guild_only()
    async def story(
        interaction: discord.Interaction,
        genre: str,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],  # Discord's own check
        length: str | None = None,  # None: the server's default length
        seed: app_commands.Range[int, 0, 2**53] | None = None,
        memory: app_commands.Range[str, 1, MAX_MEMORY_CHARS] | None = None,
        authors_note: app_commands.Range[str, 1, MAX_NOTE_CHARS] | None = None,
    ) -> None:
        """Write a story with GPT-2 from your first line.

        Thin: validation by Discord (ranges) and by the service (the genre, typed
        or picked, and everything the server's admins decided).
        """
        await handlers.story(interaction, genre, prompt, length, seed, memory, authors_note)

    @app_commands.command(
        name="mystories", description=locale_str("Your stories: read, export or delete them")
    )
    async def mystories(interaction: discord.Interaction) -> None:
        await handlers.my_stories(interaction)

    @app_commands.command(
        name="forgetme", description=locale_str("Delete every story and part you wrote")
    )
    async def forgetme(interaction: discord.Interaction) -> None:
        await handlers.forget_me(interaction)

    return [story, mystories, forgetme, admin_group(handlers.admin)]


IDENTIFY_EVERY_S = 5.0  # Discord: one IDENTIFY per 5 s in each max_concurrency bucket


class StoryBot(discord.AutoShardedClient):
    def __init__(
        self,
        service: StoryService,
        book: MessageBook,
        *,
        dev_guild_id: int | None = None,
        edit_interval: float = 1.0,
        max_new_tokens_limit: int = 400,
        guild_ready_timeout: float = 2.0,
        notice_window_s: float = 10.0,
        notice_lasts_s: float = 10.0,
        retry_base_s: float = 1.0,
        public_base_url: str = "http://127.0.0.1:5000",
        observer: DiscordObserver | None = None,
        shard_count: int | None = None,
        shard_ids: list[int] | None = None,
        requests_per_s: float = 40.0,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = False  # never needed: we read reactions and interactions only
        intents.members = False
        intents.presences = False
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
            shard_count=shard_count,
            shard_ids=shard_ids,  # type: ignore[arg-type]  # None (its default): all
        )
        self.service = service
        self.dev_guild_id = dev_guild_id
        self.tree = app_commands.CommandTree(self)
        self.budget = RequestBudget(requests_per_s)
        self.http.request = self.budget.wrap(self.http.request)  # type: ignore[method-assign,assignment]
        self.publisher = Publisher(
            book,
            service,
            edit_interval=edit_interval,
            retry_base_s=retry_base_s,
            budget=self.budget,
        )
        # A vote resumed after a restart and closed on its timer has no message
        # task of ours: its ballot and options are brought up to date by a sync.
        service.votes.on_unfollowed_decision = lambda _: self.publisher.sync_soon(self)
        self._max_concurrency = 1
        self._identified_at: dict[int, float] = {}  # max_concurrency bucket -> when
        self.handlers = Handlers(
            self,
            service,
            book,
            self.publisher,
            Notices(window_s=notice_window_s, delete_after_s=notice_lasts_s),
            max_new_tokens_limit=max_new_tokens_limit,
            public_base_url=public_base_url,
        )
        self._synced_messages = False
        if observer is not None:
            instrument(self, observer)  # Discord's errors and rate limits, counted

    async def setup_hook(self) -> None:
        if self.shard_count is None or self.shard_count > 1:
            limits = await self.fetch_session_start_limits()
            self._max_concurrency = max(1, limits.max_concurrency)
        self.add_dynamic_items(story_button_type(self.handlers))
        for command in build_commands(self.handlers):
            self.tree.add_command(command)
        self.tree.on_error = self.handlers.on_error  # type: ignore[method-assign]
        self.tree.interaction_check = name_interaction  # type: ignore[method-assign]
        await self.tree.set_translator(CommandTranslator())  # descriptions in de and es
        if self.dev_guild_id:
            guild = discord.Object(id=self.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info(
            "synced %d slash commands%s",
            len(synced),
            f" to guild {self.dev_guild_id}" if self.dev_guild_id else " globally",
        )

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Discord lets `max_concurrency` shards IDENTIFY every 5 s, one per
        bucket (shard id % max_concurrency); discord.py's own hook waits 5 s
        before every IDENTIFY but the first, whatever the bucket."""
        loop = asyncio.get_running_loop()
        bucket = (shard_id or 0) % self._max_concurrency
        last = self._identified_at.get(bucket)
        if last is not None and loop.time() - last < IDENTIFY_EVERY_S:
            await asyncio.sleep(last + IDENTIFY_EVERY_S - loop.time())
        self._identified_at[bucket] = loop.time()

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("shard %d of %s ready", shard_id, self.shard_count)

    async def on_ready(self) -> None:
        log.info(
            "connected to Discord as %s in %d guild(s), shard(s) %s of %s",
            self.user,
            len(self.guilds),
            ",".join(str(i) for i in sorted(self.shards)),
            self.shard_count,
        )
        if not self._synced_messages:  # once: on_ready comes again after a reconnect
            self._synced_messages = True
            await self.handlers.bring_messages_up_to_date()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.service.servers.joined(guild.id)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        # Its settings are kept a while, in case the bot is invited back.
        await self.service.servers.left(guild.id)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.handlers.on_reaction(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.handlers.on_message_delete(payload)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py calls this inside its `except` block: the traceback is live.
        log.exception("error in Discord event %s", event_method)  # noqa: LOG004


class DiscordApp:
    """Runs a `StoryBot` in a task of its own, for the composition root."""

    def __init__(self, bot: StoryBot, token: str) -> None:
        self.bot = bot
        self._token = token
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.bot.start(self._token), name="discord-client")
        return self.task

    async def wait_until_ready(self) -> None:
        """Return once connected; raise if the client died first."""
        assert self.task is not None
        ready = asyncio.ensure_future(self.bot.wait_until_ready())
        await asyncio.wait({ready, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self.raise_failure()
            raise RuntimeError("the Discord client stopped before it was ready")

    async def settle(self, within: float) -> None:
        """Let answers in flight go out, post what finished and mark what did
        not, all while the session is still open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        await self.bot.handlers.drain(within / 2)
        await self.bot.publisher.settle(max(0.1, deadline - loop.time()))

    async def close(self) -> None:
        await self.bot.close()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 5)

    def raise_failure(self) -> None:
        """Raise what ended the client, if it ended on its own with an error."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return
        error = self.task.exception()
        if isinstance(error, discord.LoginFailure):
            raise DiscordLoginError("DISCORD_TOKEN was refused by Discord: check the token")
        if error is not None:
            raise error
