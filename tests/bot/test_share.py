"""Share links through the real discord.py client and the fake Discord: the
Share button and /mystories answer privately with a link that serves the story's
page (from the HTTP interface, as a browser would fetch it); Revoke makes it 404."""

from __future__ import annotations

import re
import sqlite3
from html.parser import HTMLParser
from typing import Any

from tests.bot.conftest import BotEnv
from tests.bot.helpers import button, buttons, is_story, start_story
from tests.fakediscord.server import User

LINK = re.compile(r"(http://\S+/s/([A-Za-z0-9_-]+))")


class Page(HTMLParser):
    """The page as a reader sees it: its text, and who each part is by."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.authors: list[str] = []
        self._in_b = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_b = tag == "b"

    def handle_endtag(self, tag: str) -> None:
        self._in_b = False

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self._in_b:
            self.authors.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


async def serve_pages(env: BotEnv) -> None:
    """The HTTP interface on the bot's service; links point at it."""
    client = await env.http()
    assert env.bot is not None
    env.bot.handlers.shares.base_url = str(client.make_url("/")).rstrip("/")


async def fetch(env: BotEnv, url: str) -> tuple[int, str]:
    """GET the link itself, as whoever it was sent to would."""
    client = await env.http()
    async with client.session.get(url) as response:
        return response.status, await response.text()


async def click_share(env: BotEnv, message: dict[str, Any], user: User) -> dict[str, Any]:
    """`user` presses Share under a part: their private answer."""
    handle = await env.fake.click(message, button(message, "Share"), user=user)
    answer = await handle.reply(lambda m: bool(m["content"]))
    assert answer["flags"] & 64, "the answer is private"
    return answer


def link_in(answer: dict[str, Any]) -> tuple[str, str]:
    found = LINK.search(answer["content"])
    assert found is not None, answer["content"]
    return found.group(1), found.group(2)


def path_texts(env: BotEnv, story_id: int) -> list[str]:
    with sqlite3.connect(env.db_path) as conn:
        rows = conn.execute("SELECT text FROM parts WHERE story_id = ? ORDER BY id", (story_id,))
        return [" ".join(text.split()) for (text,) in rows]


async def continued_by(env: BotEnv, message: dict[str, Any], user: User) -> dict[str, Any]:
    """`user` presses Continue; the next part's final message (with its buttons)."""
    fake = env.fake
    click = await fake.click(message, button(message, "Continue"), user=user)
    await click.followup(lambda m: "next part" in m["content"])
    return await fake.wait_for_message(
        lambda m: is_story(m) and "part 2" in m["content"] and "Share" in str(m["components"])
    )


async def test_the_share_button_answers_with_a_link_that_serves_the_page_until_revoked(
    env: BotEnv,
) -> None:
    fake = env.fake
    await serve_pages(env)
    story = await start_story(env, prompt="The <script>alert(1)</script> detective")
    second = await continued_by(env, story, fake.bob)

    refused = await click_share(env, second, fake.bob)  # not his story
    assert refused["content"] == "Only the story's author can share it."
    answer = await click_share(env, second, fake.alice)
    url, token = link_in(answer)
    assert "anyone with the link can read it" in answer["content"]
    story_id = int(re.findall(r"Story #(\d+)", answer["content"])[0])
    assert buttons(answer) == [f"story:unshare:{story_id}"]

    status, html = await fetch(env, url)
    assert status == 200
    page = Page(html)
    assert "The <script>alert(1)</script> detective" in page.text  # shown as text
    assert "<script>" not in html
    # Who wrote each part, by their display names: the prompt and part 1 are
    # Alice's, part 2 Bob's; and every part of the story, in order.
    assert page.authors == ["Alice", "Alice", "Bob"]
    texts = path_texts(env, story_id)
    assert len(texts) == 3
    position = 0
    for text in texts:
        position = page.text.index(text, position) + len(text)

    again = await click_share(env, story, fake.alice)  # any part's button: the same link
    assert link_in(again)[1] == token and "shared already" in again["content"]

    revoke = await fake.click(answer, f"story:unshare:{story_id}", user=fake.alice)
    await revoke.deferred()
    assert answer["content"].startswith("Link revoked") and not buttons(answer)
    status, html = await fetch(env, url)
    assert status == 404 and "This story is not shared" in html

    fresh = await click_share(env, second, fake.alice)
    new_url, new_token = link_in(fresh)
    assert new_token != token and (await fetch(env, new_url))[0] == 200
    assert (await fetch(env, url))[0] == 404


async def test_mystories_shares_and_revokes(env: BotEnv) -> None:
    fake = env.fake
    await serve_pages(env)
    await start_story(env, prompt="Alice's own story")
    handle = await fake.invoke("mystories", user=fake.alice)
    listing = await handle.reply(lambda m: "Your stories" in m["content"])
    story_id = re.findall(r"`#(\d+)`", listing["content"])[0]
    opened = await fake.select(
        listing, button(listing, "Open a story"), [story_id], user=fake.alice
    )
    await opened.deferred()
    share = await fake.click(listing, button(listing, "Share"), user=fake.alice)
    answer = await share.reply(lambda m: "/s/" in m["content"])
    assert answer["flags"] & 64
    url, _ = link_in(answer)
    status, html = await fetch(env, url)
    assert status == 200 and "Alice&#x27;s own story" in html
    assert listing["content"].startswith("**Alice's own story**")  # the detail view stays
    revoke = await fake.click(answer, button(answer, "Revoke link"), user=fake.alice)
    await revoke.deferred()
    assert (await fetch(env, url))[0] == 404


async def test_a_server_can_turn_sharing_off(env: BotEnv) -> None:
    fake = env.fake
    await serve_pages(env)
    story = await start_story(env, prompt="Shared, then not")
    url, _ = link_in(await click_share(env, story, fake.alice))

    async def storyadmin(subcommand: str, **options: Any) -> str:
        handle = await fake.invoke(
            "storyadmin", user=fake.dana, subcommand=subcommand, options=options
        )
        return str((await handle.reply(lambda m: bool(m["content"])))["content"])

    assert "Share links (a story's web page): on" in await storyadmin("show")
    assert "Sharing is off here now" in await storyadmin("sharing", enabled=False)
    assert "Share links (a story's web page): off" in await storyadmin("show")
    refused = await click_share(env, story, fake.alice)
    assert refused["content"] == "This server's admins have turned sharing stories off."
    assert (await fetch(env, url))[0] == 404
    assert "can share" in await storyadmin("sharing", enabled=True)
    assert (await fetch(env, url))[0] == 200


async def test_only_the_author_revokes_and_forgetme_forgets_the_name(env: BotEnv) -> None:
    fake = env.fake
    await serve_pages(env)
    story = await start_story(env, prompt="Names on the page")
    second = await continued_by(env, story, fake.bob)
    answer = await click_share(env, second, fake.alice)
    url, _ = link_in(answer)
    assert Page((await fetch(env, url))[1]).authors == ["Alice", "Alice", "Bob"]

    # Bob forgets himself: his part goes, and so does the name pages showed.
    handle = await fake.invoke("forgetme", user=fake.bob)
    ask = await handle.reply(lambda m: "cannot be undone" in m["content"])
    confirm = await fake.click(ask, button(ask, "Delete everything"), user=fake.bob)
    await confirm.deferred()
    status, html = await fetch(env, url)
    assert status == 200 and "Bob" not in html
    assert Page(html).authors == ["Alice", "Alice"]
    with sqlite3.connect(env.db_path) as conn:
        names = dict(conn.execute("SELECT user_id, name FROM display_names").fetchall())
    assert names == {int(fake.alice.id): "Alice"}

    # The Revoke button is on Alice's private answer; were it pressed by anyone
    # else (an admin too), the link would stay.
    for someone in (fake.carol, fake.dana):
        stranger = await fake.click(answer, button(answer, "Revoke link"), user=someone)
        said = await stranger.reply(lambda m: bool(m["content"]))
        assert said["content"] == "Only the story's author can revoke its link."
        assert (await fetch(env, url))[0] == 200
    revoke = await fake.click(answer, button(answer, "Revoke link"), user=fake.alice)
    await revoke.deferred()
    assert (await fetch(env, url))[0] == 404
