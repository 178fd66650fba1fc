"""A story rendered for taking away: Markdown, plain text, JSON."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from storage.models import Part, Story


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _escape_md(text: str) -> str:
    # Keep the author's words, but stop them from turning into headings or code.
    return text.replace("```", "`\u200b``")


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
