"""How stories look in Discord: bold prompt, continuation, a footer line.

Text is split at sentence boundaries into chunks under Discord's 2000-character
message limit, so nothing is ever cut. Markdown in prompts and generated text
is escaped, so a prompt cannot break the layout (and mentions never ping:
every message is sent with AllowedMentions.none()). Every function that says
something takes the `Messages` of the language it is said in (bot.i18n).
"""

from __future__ import annotations

import re

import discord

from bot.i18n import Messages

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


def notes(t: Messages, memory: str, authors_note: str) -> str:
    """A story's notes under its text, where a person reads them (/mystories)."""
    lines = [
        f"\n-# {label}: {escape(text)}"
        for label, text in ((t._("📝 Memory"), memory), (t._("📝 Author's note"), authors_note))
        if text
    ]
    return "\n" + "".join(lines) if lines else ""


def footer(
    t: Messages, genre: str, author_id: int | None, part: int, seed: int, extra: str = ""
) -> str:
    who = t._(" · by {author}", author=f"<@{author_id}>") if author_id else ""
    where = t._("part {part} · seed {seed}", part=part, seed=seed)
    return f"-# {genre}{who} · {where}{extra}"


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


def waiting_status(t: Messages, genre: str, position: int, reroll_of: int | None = None) -> str:
    """The status line of a run that is queued (position >= 1) or being written."""
    what = genre
    if reroll_of:
        what = f"{genre} · " + t._("new version of part {part}", part=reroll_of)
    if position > 0:
        queued = t._("queued, position {position}", position=position)
        return f"{'🎲' if reroll_of else '⏳'} {what} · {queued}"
    return f"✍️ {what} · " + t._("writing…")


def ended(t: Messages, state: str, error: str | None) -> str:
    """The status line of a run that ended without a part; `error` is the
    reason, said in the same language (or as stored, which `t.text` translates
    when it is one of the catalogues' messages)."""
    if state == "cancelled":
        return t._("🚫 Cancelled.")
    if state == "interrupted":
        return t._("⚠️ This part was interrupted by a restart. Press Retry to write it again.")
    reason = t.text(error) if error else ""
    return "⚠️ " + (reason or t._("This part could not be written: press Retry to try again."))


def tombstone(t: Messages, whole_story: bool) -> str:
    """What a message shows once what it showed was deleted."""
    return (
        t._("-# 🗑️ This story was deleted.") if whole_story else t._("-# 🗑️ This part was deleted.")
    )


def ballot_writing(t: Messages, count: int) -> str:
    return t._("🗳️ Writing {count} versions of what happens next, to vote on…", count=count)


def ballot(t: Messages, tally: dict[int, int], numbers: list[int], closes_at: float | None) -> str:
    """An open vote: the options' counts and when it closes."""
    counts = " · ".join(
        t._("option {number}: {votes}", number=n, votes=tally.get(n, 0)) for n in numbers
    )
    ballots = t.n_("{count} vote", "{count} votes", sum(tally.values()))
    closes = t._("closes {when}", when=f"<t:{int(closes_at)}:R>") if closes_at else t._("open")
    return (
        t._(
            "🗳️ **What happens next?** Read the options below and vote with these "
            "buttons (you can change your vote until it closes)."
        )
        + f"\n-# {counts} · {ballots} · {closes}"
    )


def vote_result(t: Messages, state: str, winner: int | None, tally: dict[int, int]) -> str:
    if state != "closed" or winner is None:
        return t._(
            "🗳️ The vote could not be held: no option could be written. Press Vote to try again."
        )
    ballots = sum(tally.values())
    if not ballots:
        return t._("🗳️ Nobody voted: option {number} continues the story.", number=winner)
    return t.n_(
        "🗳️ Option {number} won ({votes} of {count} vote). "
        "The other options stay in the story as alternatives.",
        "🗳️ Option {number} won ({votes} of {count} votes). "
        "The other options stay in the story as alternatives.",
        ballots,
        number=winner,
        votes=tally.get(winner, 0),
    )


def option(t: Messages, number: int, body: str, chunk: int, state: str) -> str:
    """A chunk of a vote's option: headed while the vote is open, marked once
    it was not chosen."""
    if chunk:
        return body
    if state == "open":
        return t._("**Option {number}**", number=number) + f"\n{body}"
    return t._("-# Option {number} · not chosen", number=number) + f"\n{body}"


def removed(t: Messages) -> str:
    """What a message of a part hidden after reports shows instead."""
    return t._("-# 🚩 This part was removed after reports. The server's admins can restore it.")


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"
