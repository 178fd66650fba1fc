"""bot.render: how story text is cut into Discord messages and decorated.

Discord counts a message's length in code points (the API is Python and
measures `len(str)`: discord/discord-api-docs#1315), so Python's `len` is the
right measure here and an emoji is one character, never half of one.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import render
from bot.i18n import messages

EN = messages()  # the bot's English, its source language

EMBED_DESCRIPTION_LIMIT = 4096


def non_space(text: str) -> str:
    """The text without its whitespace: what no split may lose or reorder."""
    return "".join(text.split())


def sentences(count: int, words: int = 12) -> str:
    return " ".join(
        " ".join(f"w{n}x{i}" for i in range(words)).capitalize() + "." for n in range(count)
    )


# ------------------------------------------------------------------ split_text
@pytest.mark.parametrize("text", ["", "One line.", "x" * render.CHUNK])
def test_text_within_the_limit_is_one_chunk(text: str) -> None:
    assert render.split_text(text) == [text]


def test_splits_after_the_last_sentence_end_in_reach() -> None:
    text = sentences(60)  # about 4 500 characters
    chunks = render.split_text(text)
    assert len(chunks) == 3
    for chunk in chunks:
        assert len(chunk) <= render.CHUNK
        assert chunk.endswith(".") and chunk[0].isupper(), chunk[-30:]
    assert non_space("".join(chunks)) == non_space(text)
    # The last sentence end in reach, not an earlier one: the next one did not fit.
    first_rest = text[len(chunks[0]) :].lstrip()
    next_sentence = first_rest[: first_rest.index(".") + 1]
    assert len(chunks[0]) + 1 + len(next_sentence) > render.CHUNK


def test_a_closing_quote_stays_with_its_sentence() -> None:
    text = "a" * 50 + ' He said "stop!" Then ' + "b" * 80
    first, second = render.split_text(text, limit=100)
    assert first.endswith('"stop!"')
    assert second == "Then " + "b" * 80


def test_a_line_break_is_a_boundary_and_does_not_start_the_next_chunk() -> None:
    text = "a" * 40 + "\n\n" + "b" * 40
    assert render.split_text(text, limit=60) == ["a" * 40, "b" * 40]


def test_without_a_sentence_end_it_breaks_at_the_last_space() -> None:
    words = [f"word{i}" for i in range(1000)]
    text = " ".join(words)
    chunks = render.split_text(text)
    assert len(chunks) > 1
    assert all(len(chunk) <= render.CHUNK for chunk in chunks)
    assert [w for chunk in chunks for w in chunk.split(" ")] == words  # no word was cut


def test_a_sentence_end_too_early_in_the_window_gives_way_to_a_space() -> None:
    """A chunk of three words and then a full one would waste a message."""
    text = "Yes. " + " ".join(["word"] * 100)
    first, *_ = render.split_text(text, limit=100)
    assert len(first) > 90 and first.startswith("Yes. word")


def test_a_word_longer_than_the_limit_is_cut_hard_and_kept_whole() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(5000))
    chunks = render.split_text(word)
    assert [len(c) for c in chunks] == [render.CHUNK, render.CHUNK, 5000 - 2 * render.CHUNK]
    assert "".join(chunks) == word


def test_a_long_word_between_words_loses_nothing() -> None:
    text = "Before it came " + "x" * 4000 + " and after it went."
    chunks = render.split_text(text)
    assert all(len(chunk) <= render.CHUNK for chunk in chunks)
    assert non_space("".join(chunks)) == non_space(text)
    assert chunks[0] == "Before it came"  # the space before the long word


@pytest.mark.parametrize("character", ["😀", "é", "中", "👩\u200d🚀"])
def test_multibyte_characters_at_the_boundary_count_once(character: str) -> None:
    """Code points, not bytes or UTF-16 units: a chunk of 1 899 letters and an
    emoji is 1 900 long, and the emoji is not split by the hard cut."""
    filler = "a" * (render.CHUNK - len(character))
    first, second = render.split_text(filler + character + "b" * 10)
    assert first == filler + character
    assert len(first) == render.CHUNK
    assert second == "b" * 10
    # One more letter in front, and the character moves whole to the next chunk.
    if len(character) == 1:
        first, second = render.split_text("a" + filler + character + "b" * 10)
        assert first == "a" + filler and second == character + "b" * 10


def test_a_sentence_end_right_at_the_limit_is_used() -> None:
    head = "a" * (render.CHUNK - 2) + "!"
    text = head + " " + "b" * 100
    assert render.split_text(text) == [head, "b" * 100]


@pytest.mark.parametrize(
    "limit", [render.CHUNK, render.MESSAGE_LIMIT, EMBED_DESCRIPTION_LIMIT], ids=str
)
def test_every_chunk_fits_the_limit_it_was_given(limit: int) -> None:
    text = sentences(150) + " " + "y" * (limit + 7) + " " + sentences(20)
    chunks = render.split_text(text, limit)
    assert len(chunks) > 2
    assert max(len(chunk) for chunk in chunks) <= limit
    assert non_space("".join(chunks)) == non_space(text)


# Words (some longer than the limit), sentence ends, quotes, emoji and accents,
# separated by single spaces or line breaks. (Not tabs: the fallback looks for a
# space only, so a tab between two words is cut through like a letter.)
_words = st.text(alphabet="abcdé中😀.!?…\"')*_#", min_size=1, max_size=40)
_gaps = st.sampled_from([" ", " ", " ", "\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_words, _gaps), max_size=60), st.integers(min_value=8, max_value=120))
def test_split_text_properties(pieces: list[tuple[str, str]], limit: int) -> None:
    text = "".join(word + gap for word, gap in pieces).strip()
    chunks = render.split_text(text, limit)
    assert chunks and all(len(chunk) <= limit for chunk in chunks)
    # A chunk that would begin with line markdown ("* ", "# ") gets a backslash.
    unescaped = [
        chunk[1:] if index and re.match(r"\\(#{1,3}|-#|[-*+]|>>>|>|\d+\.)(\s|$)", chunk) else chunk
        for index, chunk in enumerate(chunks)
    ]
    assert non_space("".join(unescaped)) == non_space(text)  # nothing lost or reordered
    if text and all(len(word) <= limit // 2 for word, _ in pieces):
        # Words of at most half the limit always leave a boundary in the last two
        # thirds of a window: no chunk is empty and no word is cut. (Longer ones
        # can be: the fallback looks for a space only, so a line break early in
        # the window, then a long word, gets a hard cut; and a hard cut right
        # before a space, then a word that fills a window, leaves an empty chunk.)
        assert all(chunk.strip() for chunk in chunks), chunks
        words = [word for word, _ in pieces]
        assert [w for chunk in unescaped for w in chunk.split()] == [
            w for word in words for w in word.split()
        ]


# --------------------------------------------------------- bodies and messages
def test_story_body_bolds_the_prompt_and_escapes_markdown() -> None:
    body = render.story_body("  A *bold* _move_  ", " then `code` and ~~gone~~ || x ||")
    assert body == r"**A \*bold\* \_move\_** then \`code\` and \~\~gone\~\~ \|\| x \|\|"


def test_a_prompt_cannot_close_the_bold_early() -> None:
    body = render.story_body("end** now **start", ".")
    assert body.startswith("**end\\*\\* now \\*\\*start**")
    assert body.count("**") == 2  # only the two that are ours are unescaped
    assert len(re.findall(r"(?<!\\)\*\*", body)) == 2


def test_a_very_long_prompt_is_not_bold() -> None:
    prompt = "p" * 1501
    assert render.story_body(prompt, " more") == prompt + " more"
    assert render.story_body("p" * 1500, " more").startswith("**p")


def test_a_later_part_has_no_prompt_and_no_leading_space() -> None:
    assert render.story_body(None, "  \nThe next day. # not a heading") == (
        "The next day. # not a heading"
    )


def test_line_start_markdown_is_escaped() -> None:
    body = render.story_body(None, "Start.\n# Heading\n> quote\n- item\n-# small")
    assert body.splitlines()[1:] == [r"\# Heading", r"\> quote", r"\- item", r"\-# small"]


def test_mentions_are_left_as_text() -> None:
    """Escaping a mention would show backslashes; pings are stopped by the client's
    AllowedMentions.none(), which the bot tests check against the fake Discord."""
    text = " @everyone @here <@123> <@&456> <#789>"
    assert render.story_body(None, text) == text.lstrip()


def test_final_chunks_put_the_footer_on_the_last_chunk_only() -> None:
    foot = render.footer(EN, "Crime", 123, 2, 42)
    assert foot == "-# Crime · by <@123> · part 2 · seed 42"
    chunks = render.final_chunks(render.story_body("Prompt", " " + sentences(80)), foot)
    assert len(chunks) > 1
    assert chunks[-1].endswith("\n" + foot)
    assert not any(foot in chunk for chunk in chunks[:-1])
    assert all(len(chunk) <= render.MESSAGE_LIMIT for chunk in chunks)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab *_~`|>#-\n.😀", max_size=6000))
def test_final_chunks_always_fit_a_message(text: str) -> None:
    """Escaping can double the text; the footer is added after splitting."""
    foot = render.footer(EN, "Science fiction", 2**63 - 1, 999, 2**32 - 1, " · edited")
    chunks = render.final_chunks(render.story_body("A prompt", text), foot)
    assert all(len(chunk) <= render.MESSAGE_LIMIT for chunk in chunks)
    assert chunks[-1].endswith(foot)


def test_footer_without_an_author() -> None:
    assert render.footer(EN, "Fantasy", None, 1, 7) == "-# Fantasy · part 1 · seed 7"


@pytest.mark.parametrize("marker", ["# ", "- ", "> ", "-# "])
def test_a_chunk_never_starts_with_unescaped_line_markdown(marker: str) -> None:
    # The last sentence end in reach of the first chunk is right before the marker,
    # which is mid-line (so escape_markdown leaves it alone).
    continuation = (
        " " + "word " * 369 + f"end. {marker}Who is there in the" + " dark room" * 9 + "?"
    )
    body = render.story_body(None, continuation)
    assert f"end. {marker}Who" in body  # not escaped: it is not at the start of a line
    first, second = render.final_chunks(body, "-# foot")
    assert first.endswith("end.")
    assert not re.match(r"(#{1,3} |-# |- |> )", second), second[:20]


# ------------------------------------------------------------------ progress
@pytest.mark.parametrize("length", [0, 10, 1900, 1980, 5000])
@pytest.mark.parametrize("cursor", [True, False])
def test_progress_fits_a_message_and_shows_the_newest_text(length: int, cursor: bool) -> None:
    body = "".join(chr(ord("a") + i % 26) for i in range(length))
    status = render.waiting_status(EN, "Crime", 0)
    message = render.progress(body, status, cursor=cursor)
    assert len(message) <= render.MESSAGE_LIMIT
    shown = message.removesuffix("\n-# " + status).removesuffix(" ▌")
    if length == 0:
        assert message == "-# " + status
        return
    assert message.endswith("\n-# " + status)
    if len(shown) == length:
        assert shown == body
    else:
        assert shown.startswith("…") and body.endswith(shown[1:])
    assert ("▌" in message) == (cursor and length > 0)


def test_waiting_and_ended_status_lines() -> None:
    assert render.waiting_status(EN, "Crime", 3) == "⏳ Crime · queued, position 3"
    assert render.waiting_status(EN, "Crime", 0) == "✍️ Crime · writing…"
    assert render.waiting_status(EN, "Crime", 2, reroll_of=4) == (
        "🎲 Crime · new version of part 4 · queued, position 2"
    )
    assert render.ended(EN, "cancelled", "ignored") == "🚫 Cancelled."
    assert "Retry" in render.ended(EN, "interrupted", None)
    assert render.ended(EN, "failed", "The disk is full.") == "⚠️ The disk is full."
    assert "Retry" in render.ended(EN, "failed", None)


def test_tombstones_and_links() -> None:
    assert "story" in render.tombstone(EN, whole_story=True)
    assert "part" in render.tombstone(EN, whole_story=False)
    assert render.jump_url(1, 2, 3) == "https://discord.com/channels/1/2/3"
    assert render.jump_url(None, 2, 3) == "https://discord.com/channels/@me/2/3"
