"""How stories look in Discord: bold prompt, continuation, a footer line.

Text is split at sentence boundaries into chunks under Discord's 2000-character
message limit, so nothing is ever cut. Markdown in prompts and generated text
is escaped, so a prompt cannot break the layout (and mentions never ping:
every message is sent with AllowedMentions.none()).
"""

from __future__ import annotations

import re

import discord

MESSAGE_LIMIT = 2000
CHUNK = 1900  # room for the footer line
_BREAK = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n+")
# What Discord reads as a heading, subtext, list item or quote at the start of a
# line. Escaping runs before splitting, so a marker that was mid-line (left
# alone) can begin the next message: it is escaped there.
_LINE_MARKDOWN = re.compile(r"(#{1,3} |-# |[-*+] |>>> |> |\d+\. )")


def escape(text: str) -> str:
    return discord.utils.escape_markdown(text)


def split_text(text: str, limit: int = CHUNK) -> list[str]:
    """Split at the last sentence end (else whitespace) before `limit`."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max((m.end() for m in _BREAK.finditer(window)), default=0)
        if cut < limit // 3:  # no sentence end in reach: break at a space
            cut = window.rfind(" ") + 1
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n")
        if _LINE_MARKDOWN.match(rest):
            rest = "\\" + rest
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def story_body(prompt: str | None, continuation: str) -> str:
    """The prompt in bold (first part only) followed by the continuation."""
    body = escape(continuation)
    if prompt is None:
        return body.lstrip()
    shown = escape(prompt.strip())
    return f"**{shown}**{body}" if len(shown) <= 1500 else f"{shown}{body}"


def notes(memory: str, authors_note: str) -> str:
    """A story's notes under its text, where a person reads them (/mystories)."""
    lines = [
        f"\n-# {label}: {escape(text)}"
        for label, text in (("📝 Memory", memory), ("📝 Author's note", authors_note))
        if text
    ]
    return "\n" + "".join(lines) if lines else ""


def footer(genre: str, author_id: int | None, part: int, seed: int, extra: str = "") -> str:
    who = f" · by <@{author_id}>" if author_id else ""
    return f"-# {genre}{who} · part {part} · seed {seed}{extra}"


def final_chunks(body: str, foot: str) -> list[str]:
    chunks = split_text(body)
    chunks[-1] = f"{chunks[-1]}\n{foot}"
    return chunks


def progress(body: str, status: str, *, cursor: bool = True) -> str:
    """A message while queued or streaming: the tail of the text and a status."""
    status_line = f"\n-# {status}"
    room = MESSAGE_LIMIT - len(status_line) - 2
    shown = body if len(body) <= room else "…" + body[-(room - 1) :]
    if not shown:
        return status_line.lstrip("\n")
    return f"{shown}{' ▌' if cursor else ''}{status_line}"


def waiting_status(genre: str, position: int, reroll_of: int | None = None) -> str:
    """The status line of a run that is queued (position >= 1) or being written."""
    what = f"{genre} · new version of part {reroll_of}" if reroll_of else genre
    if position > 0:
        return f"{'🎲' if reroll_of else '⏳'} {what} · queued, position {position}"
    return f"✍️ {what} · writing…"


def ended(state: str, error: str | None) -> str:
    """The status line of a run that ended without a part."""
    if state == "cancelled":
        return "🚫 Cancelled."
    if state == "interrupted":
        return "⚠️ This part was interrupted by a restart. Press Retry to write it again."
    return f"⚠️ {error or 'This part could not be written: press Retry to try again.'}"


def tombstone(whole_story: bool) -> str:
    """What a message shows once what it showed was deleted."""
    return "-# 🗑️ This story was deleted." if whole_story else "-# 🗑️ This part was deleted."


def ballot_writing(count: int) -> str:
    return f"🗳️ Writing {count} versions of what happens next, to vote on…"


def ballot(tally: dict[int, int], numbers: list[int], closes_at: float | None) -> str:
    """An open vote: the options' counts and when it closes."""
    counts = " · ".join(f"option {n}: {tally.get(n, 0)}" for n in numbers)
    ballots = sum(tally.values())
    closes = f"closes <t:{int(closes_at)}:R>" if closes_at else "open"
    return (
        "🗳️ **What happens next?** Read the options above and vote below "
        "(you can change your vote until it closes).\n"
        f"-# {counts} · {ballots} vote{'s' if ballots != 1 else ''} · {closes}"
    )


def vote_result(state: str, winner: int | None, tally: dict[int, int]) -> str:
    if state != "closed" or winner is None:
        return "🗳️ The vote could not be held: no option could be written. Press Vote to try again."
    ballots = sum(tally.values())
    if not ballots:
        return f"🗳️ Nobody voted: option {winner} continues the story."
    return (
        f"🗳️ Option {winner} won ({tally.get(winner, 0)} of {ballots} vote"
        f"{'s' if ballots != 1 else ''}). The other options stay in the story as alternatives."
    )


def option(number: int, body: str, chunk: int, state: str) -> str:
    """A chunk of a vote's option: headed while the vote is open, marked once
    it was not chosen."""
    if chunk:
        return body
    if state == "open":
        return f"**Option {number}**\n{body}"
    return f"-# Option {number} · not chosen\n{body}"


def removed() -> str:
    """What a message of a part hidden after reports shows instead."""
    return "-# 🚩 This part was removed after reports. The server's admins can restore it."


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"
