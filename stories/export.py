"""A story rendered for taking away: Markdown, plain text, JSON."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from storage.models import Part, Story


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# What makes a line something other than text: a heading, a quote, a list item,
# a code fence (``` or ~~~), a thematic break or a setext underline.
_LINE_MARKUP = re.compile(
    r"^([ \t]{0,3})(#{1,6}(?=\s|$)|>|[-*+](?=\s)|\d{1,9}[.)](?=\s)"
    r"|~{3,}|`{3,}|={2,}\s*$|[-*_](?:\s*[-*_]){2,}\s*$)",
    re.M,
)


def _escape_md(text: str) -> str:
    """Keep the author's words, but stop them from turning into headings, quotes,
    lists or code: a backslash before each line's markup, and inline ``` broken."""
    escaped = _LINE_MARKUP.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
    return escaped.replace("```", "`\u200b``")


def to_text(path: list[Part]) -> str:
    return "".join(part.text for part in path).strip() + "\n"


def to_markdown(story: Story, path: list[Part]) -> str:
    prompt, rest = (path[0].text, path[1:]) if path else ("", [])
    seeds = ", ".join(str(part.seed) for part in rest if part.seed is not None) or "none"
    lines = [
        f"# {_escape_md(story.title)}",
        "",
        f"*{story.genre} · {_date(story.created_at)} · story #{story.id} · seeds: {seeds}*",
        "",
        f"**{_escape_md(prompt.strip())}**" + _escape_md("".join(p.text for p in rest)),
        "",
    ]
    notes = [
        (label, text)
        for label, text in (("Memory", story.memory), ("Author's note", story.authors_note))
        if text
    ]
    if notes:
        lines += ["---", ""]
        lines += [f"*{label}:* {_escape_md(text)}" for label, text in notes]
        lines.append("")
    return "\n".join(lines)


def to_json(story: Story, parts: list[Part], path: list[Part]) -> dict[str, Any]:
    return {
        "story": story.as_dict(),
        "text": "".join(part.text for part in path),
        "path": [part.id for part in path],
        "parts": [part.as_dict() for part in parts],
    }


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
