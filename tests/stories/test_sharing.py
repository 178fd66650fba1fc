"""stories.sharing: who may share and revoke, and what a share page shows, on a
real SQLite file (stories written by hand: nothing here needs the model)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from generation.pool import GenerationPool
from storage.errors import NotFound
from storage.guilds import GuildStore
from storage.models import GeneratedPart
from storage.store import Store
from stories.errors import AgeRestricted, NotAllowed, SharingOff
from stories.genres import GenreRegistry
from stories.servers import Member
from stories.service import REMOVED_TEXT, Requester, StoryService
from stories.sharing import SOMEONE, Sharing, is_token, new_token, shorten, title_of

GUILD, OTHER_GUILD = 10, 11
ALICE_ID, BOB_ID, ADMIN_ID = 1, 2, 99


def member(user_id: int, guild: int = GUILD, admin: bool = False) -> Requester:
    return Requester(user_id=user_id, guild_id=guild, member=Member(admin=admin))


ALICE, BOB = member(ALICE_ID), member(BOB_ID)
ADMIN = member(ADMIN_ID, admin=True)
HTTP = Requester(user_id=None, source="api")


def no_model() -> None:
    raise AssertionError("these stories are written by hand: no model is loaded")


@pytest.fixture
async def sharing(store: Store, genres: GenreRegistry) -> AsyncIterator[Sharing]:
    yield Sharing(StoryService(store, GenerationPool(no_model), genres))  # type: ignore[arg-type]


async def write(
    store: Store,
    prompt: str,
    *parts: tuple[str, int | None],
    guild: int | None = GUILD,
    genre: str = "crime",
) -> int:
    """Alice's story with `parts` (text, requester) one after the other."""
    story, root, _ = await store.create_story(
        prompt=prompt, genre=genre, author_id=ALICE_ID, guild_id=guild
    )
    parent = root.id
    for text, who in parts:
        parent = (await store.add_part(story.id, parent, GeneratedPart(text, requested_by=who))).id
    return story.id


async def test_only_the_author_shares_and_sharing_again_gives_the_same_link(
    store: Store, sharing: Sharing
) -> None:
    story_id = await write(store, "Once", (" upon a time.", ALICE_ID))
    with pytest.raises(NotAllowed, match="Only the story's author"):
        await sharing.share(story_id, BOB)
    with pytest.raises(NotAllowed):
        await sharing.share(story_id, ADMIN)  # admins revoke; they do not publish
    first = await sharing.share(story_id, ALICE)
    assert first.new and is_token(first.token) and len(first.token) >= 22
    again = await sharing.share(story_id, ALICE)
    assert not again.new and again.token == first.token
    assert (await sharing.share(story_id, HTTP)).token == first.token  # the key may share
    assert first.url("https://stories.example.org/") == (
        f"https://stories.example.org/s/{first.token}"
    )
    with pytest.raises(NotFound):
        await sharing.share(story_id + 1, ALICE)


async def test_stories_of_18_plus_genres_are_never_shared(
    store: Store, sharing: Sharing, genres: GenreRegistry
) -> None:
    adult = next(genre.key for genre in genres if genre.age_restricted)
    story_id = await write(store, "Once", genre=adult)
    for who in (ALICE, HTTP):
        with pytest.raises(AgeRestricted, match="18\\+ genres cannot be shared"):
            await sharing.share(story_id, who)
    # A link made before its genre became 18+ shows nothing.
    link, _ = await sharing.links.share(story_id, ALICE_ID, lambda: "z" * 24)
    assert await sharing.page(link.token) is None


async def test_who_may_revoke(store: Store, sharing: Sharing) -> None:
    story_id = await write(store, "Once")
    token = (await sharing.share(story_id, ALICE)).token
    # Not another member, nor an admin (they have the server's setting, and reports).
    for stranger in (BOB, ADMIN):
        with pytest.raises(NotAllowed, match="Only the story's author can revoke"):
            await sharing.revoke(token, stranger)
        with pytest.raises(NotAllowed):
            await sharing.revoke_story(story_id, stranger)
    assert await sharing.page(token) is not None
    await sharing.revoke(token, ALICE)
    assert await sharing.page(token) is None
    with pytest.raises(NotFound):
        await sharing.revoke(token, ALICE)  # no live link by that token any more
    assert await sharing.revoke_story(story_id, ALICE) == 0
    token = (await sharing.share(story_id, ALICE)).token
    assert await sharing.revoke_story(story_id, ALICE) == 1
    assert await sharing.page(token) is None
    token = (await sharing.share(story_id, ALICE)).token
    await sharing.revoke(token, HTTP)
    assert await sharing.page(token) is None


async def test_a_server_can_turn_sharing_off_and_on(store: Store, sharing: Sharing) -> None:
    story_id = await write(store, "Once")
    elsewhere = await write(store, "Twice", guild=OTHER_GUILD)
    direct = await write(store, "Thrice", guild=None)  # a direct message, or HTTP
    token = (await sharing.share(story_id, ALICE)).token
    other = (await sharing.share(elsewhere, ALICE)).token
    rules = sharing.service.servers
    await rules.update(GUILD, ADMIN_ID, sharing=False)
    with pytest.raises(SharingOff, match="turned sharing stories off"):
        await sharing.share(story_id, ALICE)
    with pytest.raises(SharingOff):
        await sharing.share(story_id, HTTP)
    assert await sharing.page(token) is None  # its page is gone while sharing is off
    assert await sharing.page(other) is not None  # another server's is not
    assert (await sharing.share(direct, ALICE)).new  # no server, no server rule
    await rules.update(GUILD, ADMIN_ID, sharing=True)
    assert await sharing.page(token) is not None
    assert (await sharing.share(story_id, ALICE)).token == token


async def test_the_page_shows_the_chosen_branch_with_who_wrote_it(
    store: Store, sharing: Sharing
) -> None:
    links = sharing.links
    await links.remember_name(ALICE_ID, "Alice")
    await links.remember_name(BOB_ID, "Bob")
    story_id = await write(
        store,
        "The detective reached the crime scene\nIt was late.",
        (" She knelt.", ALICE_ID),
        (" Bob's turn.", BOB_ID),
        (" ███ was there.", 3),  # masked by the filter; nobody the bot knows by name
        (" Over HTTP.", None),
    )
    parts = await store.story_parts(story_id)
    # A second version of Bob's part (a reroll): the branch shown ends at the newest part.
    await store.add_part(story_id, parts[1].id, GeneratedPart(" An old try.", requested_by=BOB_ID))
    token = (await sharing.share(story_id, ALICE)).token
    page = await sharing.page(token)
    assert page is not None
    assert page.title == "The detective reached the crime scene"
    assert page.genre == "Crime" and page.story_id == story_id and page.token == token
    assert [(p.number, p.text, p.author) for p in page.parts] == [
        (0, "The detective reached the crime scene\nIt was late.", "Alice"),
        (1, " She knelt.", "Alice"),
        (2, " An old try.", "Bob"),
    ]
    assert (page.parts[2].version, page.parts[2].versions) == (2, 2)
    assert page.authors == ["Alice", "Bob"]

    # The newest part is at the end of the first branch now: that branch is shown.
    tip = (await store.story_parts(story_id))[4]
    await store.add_part(story_id, tip.id, GeneratedPart(" The end.", requested_by=ALICE_ID))
    page = await sharing.page(token)
    assert page is not None
    assert [(p.text, p.author) for p in page.parts[2:]] == [
        (" Bob's turn.", "Bob"),
        (" ███ was there.", SOMEONE),
        (" Over HTTP.", SOMEONE),
        (" The end.", "Alice"),
    ]
    assert (page.parts[2].version, page.parts[2].versions) == (1, 2)
    assert page.description.startswith("The detective reached the crime scene It was late.")

    # A part hidden after reports reads as removed; /forgetme's names go.
    await GuildStore(store).report(tip.id, 5, admin=True, members_hide=3, admins_hide=1)
    await links.forget_name(BOB_ID)
    page = await sharing.page(token)
    assert page is not None
    assert (page.parts[4].text, page.parts[4].hidden) == (REMOVED_TEXT, True)
    assert page.parts[2].author == SOMEONE

    await store.delete_story(story_id)
    assert await sharing.page(token) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "short",
        "a" * 65,
        "٤" * 24,  # Arabic-Indic digits: word characters, not ASCII
        "ａ" * 24,  # fullwidth letters
        "a" * 23 + "/",
        "a" * 23 + ".",
        "a" * 23 + "\n",
        "a" * 23 + "=",
    ],
)
async def test_tokens_that_are_not_shaped_like_one_are_never_looked_up(
    sharing: Sharing, token: str
) -> None:
    assert not is_token(token)
    assert await sharing.page(token) is None
    with pytest.raises(NotFound):
        await sharing.revoke(token, HTTP)


def test_tokens_are_long_random_and_url_safe() -> None:
    made = {new_token() for _ in range(1000)}
    assert len(made) == 1000
    assert all(is_token(token) and len(token) == 24 for token in made)


def test_titles_and_descriptions() -> None:
    assert title_of("\n  \nFirst line  \nsecond") == "First line"
    assert title_of("   ") == "Untitled"
    long = title_of("word " * 60)
    assert len(long) <= 100 and long.endswith("word…")
    assert shorten("a  b\n\nc", 10) == "a b c"
    assert shorten("x" * 300, 200) == "x" * 199 + "…"  # no space to cut at
