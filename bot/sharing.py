"""Share links in Discord: the Share button on a story, and Share in /mystories.

Both answer privately with the link (which Discord previews from the page's
Open Graph tags) and a Revoke button. The buttons are story buttons
(`story:share:<part id>`, `story:unshare:<story id>`), so they keep working
after a restart. The rules (who may share, the server's setting) are the story
service's (`stories.sharing`).

The page shows who wrote each part by name, without asking Discord: the bot
remembers the display name of whoever asks it for a part or a link
(`remember`), and /forgetme deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import discord

from bot.i18n import for_person
from bot.views import ErrorHandler, buttons
from storage.errors import StorageError
from stories.service import Requester, StoryService
from stories.sharing import Sharing

log = logging.getLogger(__name__)


class ShareHandlers:
    def __init__(
        self,
        service: StoryService,
        *,
        public_base_url: str,
        on_error: ErrorHandler,
        requester: Callable[[discord.Interaction], Requester],
    ) -> None:
        self.service = service
        self.sharing = Sharing(service)
        self.base_url = public_base_url  # where people open the links
        self.on_error = on_error
        self._requester = requester

    async def remember(self, user: Any) -> None:
        """Keep the person's display name for share pages. Never in the way of
        what they asked for: a failure is logged, and the page says "someone"."""
        name = getattr(user, "display_name", None)
        if user is None or not name:
            return
        try:
            await self.sharing.remember_name(user.id, str(name))
        except StorageError as error:
            log.warning("could not remember the display name of %s: %s", user.id, error)

    async def share_part(self, interaction: discord.Interaction, part_id: int) -> None:
        """The Share button under a part: the link to its story."""
        part = await self.service.store.get_part(part_id)
        await self.share_story(interaction, part.story_id)

    async def share_story(self, interaction: discord.Interaction, story_id: int) -> None:
        await self.remember(interaction.user)
        shared = await self.sharing.share(story_id, self._requester(interaction))
        url = shared.url(self.base_url)
        t = for_person(interaction)
        text = (
            t._(
                "Story #{story} has a web page now; anyone with the link can read it:\n{link}\n"
                "-# Revoke the link to take the page down.",
                story=story_id,
                link=url,
            )
            if shared.new
            else t._(
                "Story #{story} is shared already; anyone with the link can read it:\n{link}",
                story=story_id,
                link=url,
            )
        )
        await interaction.response.send_message(
            text, view=buttons(t, ("unshare", story_id)), ephemeral=True
        )

    async def unshare(self, interaction: discord.Interaction, story_id: int) -> None:
        """The Revoke button: the page is gone from now on."""
        revoked = await self.sharing.revoke_story(story_id, self._requester(interaction))
        t = for_person(interaction)
        text = (
            t._(
                "Link revoked: story #{story}'s page is gone. Share it again for a new link.",
                story=story_id,
            )
            if revoked
            else t._("Story #{story} has no live link (it was revoked already).", story=story_id)
        )
        await interaction.response.edit_message(content=text, view=None)
