"""The discord.py client: commands, listeners, start-up and shutdown.

No privileged intents: reactions arrive with the default intents, and the bot
never reads message content. Every message it sends uses
`AllowedMentions.none()`, so generated text can never ping anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
from discord import app_commands

from app.errors import StartupError
from app.settings import Settings
from bot.frontend import LENGTHS, PROMPT_LIMIT, Frontend
from bot.publisher import Publisher
from bot.views import DYNAMIC_ITEMS
from stories.service import StoryService

log = logging.getLogger(__name__)


class DiscordLoginError(StartupError):
    """The token was refused; printed as one line at start-up."""


def build_commands(frontend: Frontend) -> list[app_commands.Command[Any, Any, Any]]:
    genre_choices = [
        app_commands.Choice(name=genre.title[:100], value=genre.key)
        for genre in frontend.service.genres
    ]
    length_choices = [
        app_commands.Choice(name=size.label, value=key) for key, size in LENGTHS.items()
    ]

    @app_commands.command(name="story", description="Write a story with GPT-2 from your first line")
    @app_commands.describe(
        genre="What kind of story (18+ genres only work in age-restricted channels)",
        prompt="The first line(s) of your story",
        length="How much to write",
        seed="A number to reproduce a story exactly",
    )
    @app_commands.choices(genre=genre_choices, length=length_choices)
    @app_commands.guild_only()
    async def story(
        interaction: discord.Interaction,
        genre: str,
        prompt: app_commands.Range[str, 1, PROMPT_LIMIT],
        length: str = "medium",
        seed: app_commands.Range[int, 0, 2**53] | None = None,
    ) -> None:
        """Write a story with GPT-2 from your first line.

        Thin: validation by Discord (choices, ranges) and again by the service.
        """
        await frontend.story(interaction, genre, prompt, length, seed)

    @app_commands.command(name="mystories", description="Your stories: read, export or delete them")
    async def mystories(interaction: discord.Interaction) -> None:
        await frontend.my_stories(interaction)

    @app_commands.command(name="forgetme", description="Delete every story and part you wrote")
    async def forgetme(interaction: discord.Interaction) -> None:
        await frontend.forget_me(interaction)

    return [story, mystories, forgetme]


class StoryBot(discord.Client):
    def __init__(
        self,
        service: StoryService,
        *,
        dev_guild_id: int | None = None,
        edit_interval: float = 1.0,
        max_new_tokens_limit: int = 400,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = False  # never needed: we read reactions and interactions only
        intents.members = False
        intents.presences = False
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
        )
        self.service = service
        self.dev_guild_id = dev_guild_id
        self.tree = app_commands.CommandTree(self)
        self.publisher = Publisher(service.store, edit_interval=edit_interval)
        self.frontend = Frontend(
            self, service, self.publisher, max_new_tokens_limit=max_new_tokens_limit
        )
        self._announced = False

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        for command in build_commands(self.frontend):
            self.tree.add_command(command)
        self.tree.on_error = self.frontend.on_error  # type: ignore[method-assign]
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

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s in %d guild(s)", self.user, len(self.guilds))
        if not self._announced:
            self._announced = True
            await self.frontend.announce_interrupted()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.frontend.on_reaction(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.frontend.on_message_delete(payload)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py calls this inside its `except` block: the traceback is live.
        log.exception("error in Discord event %s", event_method)  # noqa: LOG004

    async def close(self) -> None:
        await super().close()
        await self.publisher.wait_idle()


async def run_bot(service: StoryService, settings: Settings, stop: asyncio.Event) -> None:
    """Run the bot until `stop` is set; used by `python -m bot`."""
    assert settings.discord_token is not None
    bot = StoryBot(
        service,
        dev_guild_id=settings.discord_dev_guild_id,
        max_new_tokens_limit=settings.max_new_tokens_limit,
    )
    runner = asyncio.create_task(
        bot.start(settings.discord_token.get_secret_value()), name="discord-client"
    )
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            error = runner.exception()
            if isinstance(error, discord.LoginFailure):
                raise DiscordLoginError(
                    "DISCORD_TOKEN was refused by Discord: check the token"
                ) from None
            if error is not None:
                raise error
    finally:
        stopper.cancel()
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
