"""Share links over HTTP: POST /stories/{id}/share, the page at GET /s/{token}
(no key, any Host, HTML with no script, everything escaped), DELETE /s/{token}.
Stories are written by hand into a real SQLite file: no model is needed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.openapi import spec
from api.share_page import CSS, render
from generation.pool import GenerationPool
from storage.models import GeneratedPart
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import StoryService
from stories.sharing import PagePart, SharePage

KEY = "share-test-key-0123456789"
BASE = "https://stories.example.org"
HOSTILE = 'A <script>alert("x")</script> and <img src=x onerror="alert(1)"> & "quotes"'
SPEC = spec()


def no_model() -> None:
    raise AssertionError("these stories are written by hand: no model is loaded")


@pytest.fixture
def service(store: Store, genres: GenreRegistry) -> StoryService:
    return StoryService(store, GenerationPool(no_model), genres)  # type: ignore[arg-type]


@pytest.fixture
async def client_for(service: StoryService) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**kwargs: Any) -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(service, public_base_url=BASE, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def write(store: Store, prompt: str = HOSTILE, *parts: str, guild: int | None = None) -> int:
    story, root, _ = await store.create_story(
        prompt=prompt, genre="crime", author_id=None, source="api", guild_id=guild
    )
    parent = root.id
    for text in parts:
        parent = (await store.add_part(story.id, parent, GeneratedPart(text))).id
    return story.id


class Page(HTMLParser):
    """What a browser would build from the page: elements, attributes, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def meta(self, name: str) -> str | None:
        for tag, attrs in self.tags:
            if tag == "meta" and name in (attrs.get("property"), attrs.get("name")):
                return attrs.get("content")
        return None


def check(body: Any, path: str, method: str, status: int) -> None:
    schema = SPEC["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    jsonschema.validate(body, {**schema["schema"], "components": SPEC["components"]})


async def test_share_then_read_the_page_then_revoke(store: Store, client_for: Any) -> None:
    client = await client_for()
    story_id = await write(store, HOSTILE, " It went on.\n\nA new paragraph.")
    response = await client.post(f"/stories/{story_id}/share")
    assert response.status == 201, await response.text()
    shared = await response.json()
    check(shared, "/stories/{id}/share", "post", 201)
    token = shared["token"]
    assert shared["url"] == f"{BASE}/s/{token}" and shared["new"] is True
    again = await client.post(f"/stories/{story_id}/share", json={})
    assert again.status == 200 and (await again.json())["token"] == token

    page = await client.get(f"/s/{token}")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["ETag"]
    html = await page.text()
    parsed = Page(html)
    tags = [tag for tag, _ in parsed.tags]
    # The prompt is shown as text: no element, attribute or handler came from it.
    assert "script" not in tags and "img" not in tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert HOSTILE in "".join(parsed.text)
    assert "&lt;script&gt;" in html and "<script" not in html.lower()
    assert parsed.meta("og:title") == HOSTILE
    assert parsed.meta("og:type") == "article"
    assert parsed.meta("og:url") == f"{BASE}/s/{token}"
    assert parsed.meta("og:description") == f"{HOSTILE} It went on. A new paragraph."
    assert parsed.meta("viewport") == "width=device-width, initial-scale=1"
    assert "<p>It went on.</p>\n<p>A new paragraph.</p>" in html
    # The one style sheet is the one the policy allows by its hash.
    assert f"<style>{CSS}</style>" in html and html.count("<style") == 1

    unchanged = await client.get(f"/s/{token}", headers={"If-None-Match": page.headers["ETag"]})
    assert unchanged.status == 304
    head = await client.head(f"/s/{token}")
    assert head.status == 200

    revoked = await client.delete(f"/s/{token}")
    assert revoked.status == 204
    gone = await client.get(f"/s/{token}")
    assert gone.status == 404 and gone.headers["Content-Type"].startswith("text/html")
    assert gone.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in gone.headers["Content-Security-Policy"]
    assert "This story is not shared" in await gone.text()
    again = await client.delete(f"/s/{token}")
    assert again.status == 404 and (await again.json())["error"]["code"] == "not_found"
    # Sharing again makes a new link; the old one stays dead.
    fresh = await (await client.post(f"/stories/{story_id}/share")).json()
    assert fresh["token"] != token and fresh["new"] is True
    assert (await client.get(f"/s/{fresh['token']}")).status == 200
    assert (await client.get(f"/s/{token}")).status == 404


async def test_the_page_needs_no_key_and_answers_any_host(store: Store, client_for: Any) -> None:
    client = await client_for(api_key=KEY)
    story_id = await write(store, "Once", " upon a time.")
    keyed = {"Authorization": f"Bearer {KEY}"}
    assert (await client.post(f"/stories/{story_id}/share")).status == 401
    response = await client.post(f"/stories/{story_id}/share", headers=keyed)
    token = (await response.json())["token"]
    elsewhere = {"Host": "stories.example.org"}
    for method in ("GET", "HEAD"):
        page = await client.request(method, f"/s/{token}", headers=elsewhere)
        assert page.status == 200, method
    # Everything else still needs the key, and a Host the server answers to.
    assert (await client.get(f"/stories/{story_id}")).status == 401
    assert (await client.delete(f"/s/{token}")).status == 401
    misdirected = await client.delete(f"/s/{token}", headers={**keyed, **elsewhere})
    assert misdirected.status == 421
    cross = await client.delete(f"/s/{token}", headers={**keyed, "Origin": "https://evil.test"})
    assert cross.status == 403
    assert (await client.get(f"/s/{token}")).status == 200
    assert (await client.delete(f"/s/{token}", headers=keyed)).status == 204
    assert (await client.get(f"/s/{token}", headers=elsewhere)).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/s/" + "a" * 24,  # well formed, never made
        "/s/short",
        "/s/" + "a" * 65,
        "/s/" + "%D9%A4" * 16,  # Arabic-Indic digits
        "/s/" + "a" * 23 + "%20",
        "/s/" + "a" * 23 + "%00",
    ],
)
async def test_anything_but_a_live_token_is_404(client_for: Any, path: str) -> None:
    client = await client_for()
    response = await client.get(path)
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")


async def test_sharing_a_story_that_does_not_exist_or_in_a_server_that_said_no(
    store: Store, service: StoryService, client_for: Any
) -> None:
    client = await client_for()
    response = await client.post("/stories/999/share")
    assert response.status == 404
    story_id = await write(store, "Once", guild=5)
    token = (await (await client.post(f"/stories/{story_id}/share")).json())["token"]
    await service.servers.update(5, 1, sharing=False)
    refused = await client.post(f"/stories/{story_id}/share")
    assert refused.status == 403
    body = await refused.json()
    assert body["error"]["code"] == "sharing_disabled"
    check(body, "/stories/{id}/share", "post", 403)
    assert (await client.get(f"/s/{token}")).status == 404
    await service.servers.update(5, 1, sharing=True)
    assert (await client.get(f"/s/{token}")).status == 200
    not_json = await client.post(
        f"/stories/{story_id}/share", data="x", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status == 415


def test_every_piece_of_text_is_escaped() -> None:
    """Title, genre, names and parts: whatever they hold is text on the page."""
    page = SharePage(
        token="t" * 24,
        story_id=1,
        title=HOSTILE,
        genre='<b onmouseover="x">Crime</b>',
        parts=(
            PagePart(0, HOSTILE, author='<img src=x onerror="alert(2)">'),
            PagePart(1, ' "</p><script>alert(3)</script>', "Bob & Co", version=2, versions=3),
        ),
        created_at=0,
        updated_at=0,
        shared_at=0,
    )
    html = render(page, 'https://x.test/s/"><script>alert(4)</script>')
    parsed = Page(html)
    assert {tag for tag, _ in parsed.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "article", "header",
        "p", "h1", "time", "section", "div", "b", "br", "footer",
    }  # fmt: skip
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    text = "".join(parsed.text)
    for shown in (HOSTILE, '<b onmouseover="x">Crime</b>', '<img src=x onerror="alert(2)">'):
        assert shown in text
    assert '"</p><script>alert(3)</script>' in text and "Bob & Co" in text
    assert "Part 1 (version 2 of 3)" in text
    assert parsed.meta("og:url") == 'https://x.test/s/"><script>alert(4)</script>'
    assert re.search(r"<script", html, re.IGNORECASE) is None
