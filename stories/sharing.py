"""Share links: a read-only web page of a story that anyone with the link can read.

Both front-ends call this: the bot's Share button and /mystories, and the HTTP
interface (`POST /stories/{id}/share`, `DELETE /s/{token}`, the page at
`GET /s/{token}`). The rules, in one place:

- Only a story's author shares it (over HTTP, the API key holder may share any
  story); a story has at most one live link, so sharing again gives the same.
- The author (over HTTP, the key holder) may revoke it; from then on the page
  is gone (404), and sharing again makes a new link.
- A server's admins may turn sharing off: no new links, and the pages of the
  server's stories answer 404 while it is off (they come back when it is on).
  A part hidden after reports reads as removed on the page too.
- Stories of age-restricted (18+) genres are never shared: Discord keeps them
  behind its age gate, a public page would not.
- The page shows the story's chosen branch (the path `StoryService.story`
  returns), hidden parts as `REMOVED_TEXT`, masked text as stored, and who wrote
  each part by the name the bot last saw, or "someone" (a person who used
  /forgetme, or an HTTP client).

Tokens are `secrets.token_urlsafe(TOKEN_BYTES)`: 144 random bits, URL-safe
ASCII. Anything that is not shaped like one is refused before the database is
asked.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from generation.messages import N_
from storage.errors import NotFound
from storage.models import Story
from storage.shares import ShareLink, ShareStore
from stories.errors import AgeRestricted, NotAllowed
from stories.service import REMOVED_TEXT, Requester, StoryService

log = logging.getLogger(__name__)

TOKEN_BYTES = 18  # 144 bits; 24 characters
# What a token may look like in a URL: URL-safe base64 (ASCII only: \w would
# also take letters and digits of other scripts).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
SOMEONE = "someone"  # who wrote a part, when the page has no name for them
TITLE_CHARS = 100
DESCRIPTION_CHARS = 200


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def shorten(text: str, limit: int) -> str:
    """`text` with white space collapsed, cut at a word boundary to fit `limit`."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + "…"


def title_of(prompt: str) -> str:
    """A story's title: the first line of its prompt (shortened when long)."""
    for line in prompt.splitlines():
        if line.strip():
            return shorten(line, TITLE_CHARS)
    return "Untitled"


@dataclass(frozen=True)
class Shared:
    """What sharing a story gave: its live link's token, and whether it is new."""

    token: str
    story_id: int
    created_at: float
    new: bool  # False: the story had this live link already

    def url(self, base_url: str) -> str:
        return share_url(base_url, self.token)


def share_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/s/{token}"


@dataclass(frozen=True)
class PagePart:
    number: int  # 0 for the prompt, 1 for the first generated part
    text: str  # as stored (masked words masked); REMOVED_TEXT when hidden
    author: str  # a display name, or SOMEONE
    hidden: bool = False
    version: int = 1  # which version of this part the branch takes (rerolls)
    versions: int = 1  # how many versions of this part there are


@dataclass(frozen=True)
class SharePage:
    """Everything a share page shows; plain data, so the HTML needs no lookups."""

    token: str
    story_id: int
    title: str
    genre: str  # the genre's title
    parts: tuple[PagePart, ...]
    created_at: float  # the story's
    updated_at: float
    shared_at: float

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.parts)

    @property
    def description(self) -> str:
        """About the first DESCRIPTION_CHARS characters of the story, for previews."""
        return shorten(self.text, DESCRIPTION_CHARS)

    @property
    def authors(self) -> list[str]:
        """Who wrote it, in order of first appearance."""
        return list(dict.fromkeys(part.author for part in self.parts))


class Sharing:
    """The share-link use-cases, over the story service's store and server rules."""

    def __init__(self, service: StoryService) -> None:
        self.service = service
        self.links = ShareStore(service.store)

    async def share(self, story_id: int, who: Requester) -> Shared:
        """The story's live link (made now if it has none)."""
        story = await self.service.store.get_story(story_id)
        if who.user_id is not None and story.author_id != who.user_id:
            raise NotAllowed(N_("Only the story's author can share it."))
        if self._age_restricted(story):
            raise AgeRestricted(N_("Stories in 18+ genres cannot be shared as web pages."))
        self.service.servers.check_sharing(await self.service.servers.settings(story.guild_id))
        link, made = await self.links.share(story_id, who.user_id, new_token)
        if made:
            log.info("story %d shared by %s", story_id, who.user_id or "an HTTP client")
        return Shared(link.token, story_id, link.created_at, made)

    async def revoke(self, token: str, who: Requester) -> ShareLink:
        """Revoke a live link; NotFound when the token names none."""
        link = await self.links.get(token) if is_token(token) else None
        if link is None or not link.live:
            raise NotFound("There is no such share link (or it was revoked).")
        story = await self.service.store.get_story(link.story_id)
        self._check_may_revoke(story, who)
        revoked = await self.links.revoke(token)
        log.info("share link of story %d revoked by %s", story.id, who.user_id or "HTTP")
        return revoked

    async def revoke_story(self, story_id: int, who: Requester) -> int:
        """Revoke the story's live link; how many there were (0 or 1)."""
        story = await self.service.store.get_story(story_id)
        self._check_may_revoke(story, who)
        revoked = await self.links.revoke_story(story_id)
        if revoked:
            log.info("share link of story %d revoked by %s", story_id, who.user_id or "HTTP")
        return revoked

    def _age_restricted(self, story: Story) -> bool:
        genres = self.service.genres
        return story.genre in genres and genres.get(story.genre).age_restricted

    @staticmethod
    def _check_may_revoke(story: Story, who: Requester) -> None:
        if who.user_id is not None and who.user_id != story.author_id:
            raise NotAllowed(N_("Only the story's author can revoke its link."))

    async def remember_name(self, user_id: int, name: str) -> None:
        """The name a share page shows for this person's parts."""
        await self.links.remember_name(user_id, name)

    async def page(self, token: str) -> SharePage | None:
        """What the page at /s/{token} shows; None when there is no page there
        (no such link, revoked, the story deleted, sharing off in its server)."""
        if not is_token(token):
            return None
        link = await self.links.get(token)
        if link is None or not link.live:
            return None
        try:
            story, parts, path = await self.service.story(link.story_id)
        except NotFound:
            return None
        settings = await self.service.servers.settings(story.guild_id)
        if (settings is not None and not settings.sharing) or self._age_restricted(story):
            return None  # (18+: the genre was made so after the link)
        names = await self.links.names(p.requested_by for p in path if p.requested_by)
        siblings: dict[int | None, list[int]] = {}
        for part in parts:
            siblings.setdefault(part.parent_id, []).append(part.id)
        shown = tuple(
            PagePart(
                number=number,
                text=REMOVED_TEXT if part.hidden else part.text,
                author=names.get(part.requested_by or 0, SOMEONE),
                hidden=part.hidden,
                version=siblings[part.parent_id].index(part.id) + 1,
                versions=len(siblings[part.parent_id]),
            )
            for number, part in enumerate(path)
        )
        genres = self.service.genres
        return SharePage(
            token=token,
            story_id=story.id,
            title=title_of(path[0].text),
            genre=genres.get(story.genre).title if story.genre in genres else story.genre,
            parts=shown,
            created_at=story.created_at,
            updated_at=story.updated_at,
            shared_at=link.created_at,
        )


__all__ = [
    "SOMEONE",
    "PagePart",
    "SharePage",
    "Shared",
    "Sharing",
    "is_token",
    "new_token",
    "share_url",
    "title_of",
]
