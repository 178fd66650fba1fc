"""stories.export: a story as Markdown, plain text and JSON.

The story here has a prompt, three generated parts on the path and a rerolled
sibling that is not on it: the text formats show the path only, JSON has every
part. Markdown is read back with markdown-it (CommonMark) to see what a reader
would get.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from storage.models import Part, Story
from stories import export

CREATED = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def story(title: str = "The detective reached …") -> Story:
    return Story(7, 42, "discord", 1, 2, "crime", title, "done", CREATED, CREATED + 60)


def part(id: int, parent: int | None, text: str, seed: int | None = None) -> Part:
    return Part(
        id=id,
        story_id=7,
        parent_id=parent,
        kind="prompt" if parent is None else "generated",
        text=text,
        requested_by=42,
        params={"temperature": 0.9} if seed is not None else None,
        seed=seed,
        model_id="gpt2" if seed is not None else None,
        prompt_tokens=None,
        new_tokens=None,
        queued_s=None,
        generation_s=None,
        finish_reason=None,
        created_at=CREATED + id,
    )


PROMPT = part(1, None, "The detective reached the crime scene")
FIRST = part(2, 1, " and found the door open.", seed=11)
REROLLED = part(3, 2, " and saw nothing at all.", seed=12)  # replaced by the next one
SECOND = part(4, 2, " The lamp was still warm.", seed=13)
THIRD = part(5, 4, "\n\nShe called it in.", seed=14)
PARTS = [PROMPT, FIRST, REROLLED, SECOND, THIRD]
PATH = [PROMPT, FIRST, SECOND, THIRD]


def markdown_tokens(text: str) -> list[Any]:
    markdown_it = pytest.importorskip("markdown_it")
    return list(markdown_it.MarkdownIt("commonmark").parse(text))


def test_markdown_of_a_story_with_several_parts() -> None:
    assert export.to_markdown(story(), PATH) == (
        "# The detective reached …\n"
        "\n"
        "*crime · 2023-11-14 22:13 UTC · story #7 · seeds: 11, 13, 14*\n"
        "\n"
        "**The detective reached the crime scene** and found the door open."
        " The lamp was still warm.\n\nShe called it in.\n"
    )


def test_markdown_reads_as_a_title_a_byline_and_the_story() -> None:
    tokens = markdown_tokens(export.to_markdown(story(), PATH))
    blocks = [t.type for t in tokens if t.level == 0]
    assert blocks == ["heading_open", "heading_close"] + ["paragraph_open", "paragraph_close"] * 3
    inline = [t for t in tokens if t.type == "inline"]
    assert inline[0].content == "The detective reached …"
    first = [t for t in inline[2].children if t.content or t.type != "text"]
    assert [t.type for t in first[:3]] == ["strong_open", "text", "strong_close"]
    assert first[1].content == "The detective reached the crime scene"


def test_text_is_the_path_only() -> None:
    assert export.to_text(PATH) == (
        "The detective reached the crime scene and found the door open."
        " The lamp was still warm.\n\nShe called it in.\n"
    )
    assert "nothing at all" not in export.to_text(PATH)


def test_json_has_every_part_and_the_path_through_them() -> None:
    data = export.to_json(story(), PARTS, PATH)
    assert data["path"] == [1, 2, 4, 5]
    assert [p["id"] for p in data["parts"]] == [1, 2, 3, 4, 5]
    sibling = data["parts"][2]
    assert sibling["parent_id"] == 2 and sibling["text"] == " and saw nothing at all."
    assert data["text"] == "".join(p.text for p in PATH)  # as stored, not stripped
    assert data["story"]["id"] == 7 and data["story"]["author_id"] == "42"  # snowflakes: strings
    assert data["parts"][1]["seed"] == 11 and data["parts"][1]["params"] == {"temperature": 0.9}
    assert json.loads(export.dumps(data)) == data


def test_dumps_keeps_non_ascii_readable() -> None:
    data = export.to_json(story("Café ☕"), [PROMPT], [PROMPT])
    dumped = export.dumps(data)
    assert "Café ☕" in dumped and "\\u" not in dumped
    assert dumped.startswith('{\n  "story": {')  # indented for people


def test_a_story_of_only_a_prompt() -> None:
    markdown = export.to_markdown(story(), [PROMPT])
    assert "seeds: none" in markdown
    assert markdown.endswith("**The detective reached the crime scene**\n")
    assert export.to_text([PROMPT]) == PROMPT.text + "\n"
    data = export.to_json(story(), [PROMPT], [PROMPT])
    assert data["path"] == [1] and data["text"] == PROMPT.text


def test_empty_parts_add_nothing_but_their_seed() -> None:
    path = [PROMPT, part(2, 1, "", seed=21), part(3, 2, " It rained.", seed=22)]
    assert export.to_text(path) == "The detective reached the crime scene It rained.\n"
    markdown = export.to_markdown(story(), path)
    assert "seeds: 21, 22" in markdown
    assert "**The detective reached the crime scene** It rained." in markdown


def test_text_is_stripped_at_both_ends_and_ends_with_a_newline() -> None:
    path = [part(1, None, "  \n Hello"), part(2, 1, " world.  \n\n", seed=1)]
    assert export.to_text(path) == "Hello world.\n"
    assert export.to_text([]) == "\n"


def test_code_fences_in_titles_and_text_are_broken() -> None:
    fence = "```"
    path = [part(1, None, f"{fence}python"), part(2, 1, f"\n{fence}\nrm -rf /\n{fence}\n", seed=1)]
    markdown = export.to_markdown(story(f"{fence} a title"), path)
    assert fence not in markdown
    assert "`\u200b``" in markdown  # the author's characters are all still there
    assert markdown.replace("\u200b", "").count(fence) == 4
    assert not [t for t in markdown_tokens(markdown) if t.type in ("fence", "code_block")]


def test_plain_text_and_json_are_not_escaped() -> None:
    path = [part(1, None, "*A* ```"), part(2, 1, " # _b_", seed=1)]
    assert export.to_text(path) == "*A* ``` # _b_\n"
    assert export.to_json(story(), path, path)["text"] == "*A* ``` # _b_"


def test_a_generated_line_does_not_become_a_heading() -> None:
    path = [PROMPT, part(2, 1, "\n\n# Chapter Two\n\nIt rained.", seed=1)]
    tokens = markdown_tokens(export.to_markdown(story(), path))
    headings = [t for t in tokens if t.type == "heading_open"]
    assert len(headings) == 1  # the title


def test_a_tilde_fence_does_not_become_code() -> None:
    path = [PROMPT, part(2, 1, "\n~~~\nShe ran.\n~~~\n", seed=1)]
    tokens = markdown_tokens(export.to_markdown(story(), path))
    assert not [t for t in tokens if t.type in ("fence", "code_block")]


@pytest.mark.parametrize(
    "line",
    [
        "> a quote",
        "- a list",
        "* a list",
        "+ a list",
        "1. a list",
        "2) a list",
        "---",
        "***",
        "===",
        "   # indented heading",
        "```",
        "~~~~",
        "#",
    ],
)
def test_no_generated_line_becomes_markup(line: str) -> None:
    path = [PROMPT, part(2, 1, f"\n\nShe said:\n{line}\nThen it rained.", seed=1)]
    markdown = export.to_markdown(story(), path)
    tokens = markdown_tokens(markdown)
    kinds = {t.type for t in tokens} - {"paragraph_open", "paragraph_close", "inline"}
    assert kinds == {"heading_open", "heading_close"}, (line, kinds)  # only the title's
    visible = markdown.replace("\\", "").replace("\u200b", "")
    assert line.strip() in visible  # the words themselves are kept
