"""A share page in a real browser: headless Chromium (Debian's `chromium`, which
.ci/run installs) loads it from a running HTTP interface, the DOM it built is
checked, and screenshots at a phone's and a desktop's width are kept as CI
artefacts in test-artifacts/share/ (the README says where).

No Selenium: `chromium --headless --dump-dom` prints the DOM after parsing (and
after any script, of which there must be none), `--screenshot` writes a PNG.
Skipped, saying why, where `chromium` is not on the PATH.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from generation.pool import GenerationPool
from storage.models import GeneratedPart
from storage.shares import ShareStore
from storage.store import Store
from stories.genres import GenreRegistry
from stories.service import Requester, StoryService
from stories.sharing import Sharing
from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts" / "share"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not on the PATH: install Debian's chromium package "
    "(apt-get install chromium; .ci/run does) to run the browser test",
)

ALICE, BOB, GONE = 1, 2, 3
PROMPT = 'The note said <script>alert("owned")</script> and <img src=x onerror="alert(1)">'
PARTS = [
    (
        " It was pinned to the door of the lighthouse, where nobody had lived for "
        "eleven years. Mara read it twice, then folded it into her coat and climbed "
        "the stairs, counting them the way her father had taught her.\n\nAt the top "
        "the lamp was warm.",
        ALICE,
    ),
    (
        " Someone had been here tonight. A cup of tea, still steaming, sat on the "
        "chart table beside a logbook open at a page dated tomorrow. She turned it "
        "towards the window and read the first line aloud: “The keeper returns at "
        "dawn.”",
        BOB,
    ),
    (
        " Below, the tide was coming in faster than it should, and the rocks that "
        "marked the old channel had already gone under.",
        GONE,  # a person the bot has no name for (say, they used /forgetme)
    ),
]
# name: (width, height, extra flags)
SHOTS = {
    "phone": (390, 844, ()),
    "desktop": (1280, 900, ()),
    "phone-dark": (390, 844, ("--force-dark-mode",)),  # prefers-color-scheme: dark
}


def no_model() -> None:
    raise AssertionError("this story is written by hand: no model is loaded")


class Dom(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self._open: list[str] = []
        self.h1 = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[self._open.index(tag) :]

    def handle_data(self, data: str) -> None:
        if "style" not in self._open and "title" not in self._open:
            self.chunks.append(data)
        if "h1" in self._open:
            self.h1 += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def meta(self, name: str) -> str | None:
        for tag, attrs in self.tags:
            if tag == "meta" and name in (attrs.get("property"), attrs.get("name")):
                return attrs.get("content")
        return None


async def chromium(*args: str) -> tuple[bytes, bytes]:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as root in CI's container
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--enable-logging=stderr",  # the console, where a refused style would show
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out, err


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.fixture
async def page_url(store: Store, genres: GenreRegistry) -> AsyncIterator[str]:
    service = StoryService(store, GenerationPool(no_model), genres)  # type: ignore[arg-type]
    story, root, _ = await store.create_story(
        prompt=PROMPT, genre="mystery", author_id=ALICE, guild_id=None
    )
    parent = root.id
    for text, who in PARTS:
        parent = (await store.add_part(story.id, parent, GeneratedPart(text, requested_by=who))).id
    names = ShareStore(store)
    await names.remember_name(ALICE, "Alice")
    await names.remember_name(BOB, "Bob")
    token = (await Sharing(service).share(story.id, Requester(user_id=ALICE))).token
    server = TestServer(create_app(service), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(f"/s/{token}"))
    finally:
        await server.close()


async def test_a_share_page_in_a_real_browser(page_url: str) -> None:
    out, err = await chromium("--dump-dom", page_url)
    dom = Dom(out.decode())
    tags = {tag for tag, _ in dom.tags}
    # The prompt's markup is text on the page: no script, no image, no handler.
    assert "script" not in tags and "img" not in tags, tags
    assert not any(name.startswith("on") for _, attrs in dom.tags for name in attrs)
    assert dom.h1 == PROMPT
    assert dom.meta("og:title") == PROMPT and dom.meta("og:type") == "article"
    assert (dom.meta("og:description") or "").startswith(PROMPT + " It was pinned")
    for text, _ in PARTS:
        assert " ".join(text.split()) in dom.text
    assert "By Alice, Bob and someone · 3 parts" in dom.text
    for label in ("The beginning · Alice", "Part 1 · Alice", "Part 2 · Bob", "Part 3 · someone"):
        assert label in dom.text
    # The inline style sheet was applied, not refused by the page's own policy.
    console = err.decode(errors="replace").splitlines()
    refused = [line for line in console if "Content Security Policy" in line]
    assert not refused, refused

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, (width, height, flags) in SHOTS.items():
        shot = ARTIFACTS / f"{name}-{width}x{height}.png"
        shot.unlink(missing_ok=True)
        await chromium(*flags, f"--screenshot={shot}", f"--window-size={width},{height}", page_url)
        assert png_size(shot) == (width, height)
