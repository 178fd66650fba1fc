"""The HTML of a share page (`GET /s/{token}`): a story, read-only, for anyone.

Server-rendered with f-strings; every piece of text that came from a person or
the model passes through `_e` (html.escape, quotes too), so a prompt holding
`<script>` or `<img onerror=...>` is shown as those characters. The page has no
script and loads nothing: its one style sheet is inline and allowed by its hash
in the Content-Security-Policy, which forbids everything else.

Typography: a serif text face at 17 to 20 px (growing with the window), about
65 characters a line, 1.65 line spacing, a light and a dark scheme; long
unbroken strings (the model writes some) wrap instead of widening the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import time

from stories.sharing import PagePart, SharePage

SITE = "storybot"
_UI = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif'
_TEXT = (
    '"Iowan Old Style", "Palatino Linotype", Palatino, "Book Antiqua", Georgia, '
    '"Noto Serif", "DejaVu Serif", serif'
)
CSS = f"""
:root {{
  color-scheme: light dark;
  --ink: #1f1b16; --muted: #6a6157; --paper: #fbf8f3; --rule: #e2d9cb; --accent: #8f4a1d;
}}
@media (prefers-color-scheme: dark) {{
  :root {{
    --ink: #e8e2d9; --muted: #a59b8f; --paper: #1a1816; --rule: #38332d; --accent: #e3a56a;
  }}
}}
*, *::before, *::after {{ box-sizing: border-box; }}
html {{ -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }}
body {{
  margin: 0; background: var(--paper); color: var(--ink);
  font-family: {_TEXT};
  font-size: clamp(1.0625rem, 0.98rem + 0.35vw, 1.25rem); line-height: 1.65;
  font-kerning: normal; text-rendering: optimizeLegibility;
}}
main, footer {{ max-width: 38rem; margin: 0 auto; padding-left: 1.25rem; padding-right: 1.25rem; }}
main {{ padding-top: clamp(1.75rem, 1rem + 4vw, 4.5rem); }}
header {{ margin-bottom: 2.25rem; padding-bottom: 1.5rem; border-bottom: 1px solid var(--rule); }}
.genre {{
  margin: 0 0 0.6rem; color: var(--accent);
  font: 600 0.75rem/1.2 {_UI}; letter-spacing: 0.12em; text-transform: uppercase;
}}
h1 {{
  margin: 0; font-size: clamp(1.625rem, 1.2rem + 1.9vw, 2.375rem); line-height: 1.2;
  font-weight: 700; letter-spacing: -0.01em; overflow-wrap: anywhere; text-wrap: balance;
}}
.byline {{ margin: 0.9rem 0 0; color: var(--muted); font: 0.875rem/1.5 {_UI}; }}
.byline time {{ white-space: nowrap; }}
.part {{ margin: 0 0 1.9rem; }}
.who {{
  margin: 0 0 0.3rem; color: var(--muted);
  font: 500 0.75rem/1.3 {_UI}; letter-spacing: 0.06em; text-transform: uppercase;
}}
.who b {{ font-weight: 600; text-transform: none; letter-spacing: 0.01em; color: var(--ink); }}
.text p {{ margin: 0 0 1em; overflow-wrap: anywhere; hyphens: auto; text-wrap: pretty; }}
.prompt .text {{ font-weight: 600; }}
.removed .text {{ font-style: italic; color: var(--muted); }}
footer {{ margin-top: 1rem; padding-bottom: 3rem; color: var(--muted); font: 0.8125rem/1.5 {_UI}; }}
footer p {{ margin: 0; padding-top: 1.25rem; border-top: 1px solid var(--rule); }}
""".strip()
_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# Sent with every share page and its 404.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",  # a link shared with some people is not for search engines
}
_BLANK_LINE = re.compile(r"\n[ \t]*\n+")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _paragraphs(text: str) -> str:
    """Text as paragraphs: a blank line ends one, a single line break is kept."""
    blocks = [block.strip() for block in _BLANK_LINE.split(text.replace("\r\n", "\n"))]
    return "\n".join(
        "<p>" + "<br>".join(_e(line) for line in block.split("\n")) + "</p>"
        for block in blocks
        if block
    )


def _names(names: list[str], most: int = 4) -> str:
    if len(names) > most:
        rest = len(names) - most + 1
        names = [*names[: most - 1], f"{rest} others"]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _date(at: float) -> str:
    day = time.gmtime(at)
    return f"{day.tm_mday} {time.strftime('%B %Y', day)}"


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _part(part: PagePart) -> str:
    label = "The beginning" if part.number == 0 else f"Part {part.number}"
    if part.versions > 1:
        label += f" (version {part.version} of {part.versions})"
    classes = "part prompt" if part.number == 0 else "part"
    if part.hidden:
        classes += " removed"
    return (
        f'<section class="{classes}" id="part-{part.number}">\n'
        f'<p class="who">{_e(label)} · <b>{_e(part.author)}</b></p>\n'
        f'<div class="text">\n{_paragraphs(part.text)}\n</div>\n'
        "</section>"
    )


def render(page: SharePage, url: str) -> str:
    """The share page. `url`: its own address, for Open Graph."""
    title, description = _e(page.title), _e(page.description)
    parts = len(page.parts) - 1
    count = f"{parts} part{'s' if parts != 1 else ''}"
    body = "\n".join(_part(part) for part in page.parts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title} · {SITE}</title>
<meta name="description" content="{description}">
<meta property="og:type" content="article">
<meta property="og:site_name" content="{SITE}">
<meta property="og:title" content="{title}">
<meta property="og:description" content="{description}">
<meta property="og:url" content="{_e(url)}">
<meta property="article:section" content="{_e(page.genre)}">
<meta property="article:published_time" content="{_iso(page.created_at)}">
<meta property="article:modified_time" content="{_iso(page.updated_at)}">
<meta name="twitter:card" content="summary">
<style>{CSS}</style>
</head>
<body>
<main>
<article>
<header>
<p class="genre">{_e(page.genre)}</p>
<h1>{title}</h1>
<p class="byline">By {_e(_names(page.authors))} · {count} ·
<time datetime="{_iso(page.created_at)}">{_date(page.created_at)}</time></p>
</header>
{body}
</article>
</main>
<footer>
<p>A story written with GPT-2 on {SITE}, a part at a time, by the people named above
and the model. This is a read-only copy, shared by its author.</p>
</footer>
</body>
</html>
"""


def not_found() -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Not shared · {SITE}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<p class="genre">{SITE}</p>
<h1>This story is not shared</h1>
<p class="byline">The link is wrong, or its author stopped sharing the story.</p>
</header>
</main>
</body>
</html>
"""
