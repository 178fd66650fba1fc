"""What a story costs in Discord requests (not a test):
`python -m bench.discord_budget [--stories 1,10,50] [--write]`.

Discord allows a bot token about 50 REST requests a second over all routes,
however fast generation is behind it. This runs the real bot (`StoryBot`,
discord.py included) against the fake Discord of tests/fakediscord, with the
fake's global limit at Discord's 50 a second and the bot's budget at its
default (DISCORD_REQUESTS_PER_S=40, EDIT_INTERVAL 1 s), on the tiny model made
to take `--step-ms` per decoding step (a real model's pace). For each count of
stories started at the same moment (by as many members), it counts what the
fake received until every story was complete:

- REST requests per story under the global limit (the channel message, its
  edits, its ➕) and those outside it (the interaction's answer and followup);
- stream edits per message (queue places and text while written, the final
  edit not counted) and how many the budget skipped for want of room;
- 429s the fake answered (the goal: none), and the wall time;
- with `--compare` (the default), the most stories once more with the budget
  off (DISCORD_REQUESTS_PER_S=1000000), as discord.py alone would send them.

`--write` puts the table in bench/RESULTS.md as the section
"## Discord requests per story", replacing an earlier one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import RESULTS, write_section
from bot.budget import exempt
from bot.client import DiscordApp, StoryBot
from generation.pool import GenerationPool
from generation.tiny import build_tiny_model
from generation.torch_backend import TransformersBackend
from storage.store import Store
from stories.genres import GenreRegistry
from stories.message_book import MessageBook
from stories.service import StoryService
from tests.fakediscord.harness import FakeDiscord

HEADING = "## Discord requests per story"
REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "out"
DISCORD_LIMIT = 50  # requests a second, all routes but the interaction ones


@dataclass
class Round:
    label: str
    stories: int
    seconds: float
    limited: int  # requests under the global limit
    exempt: int  # interaction answers and followups
    edits: list[int]  # stream edits of each story's message
    skipped: int
    rate_limited: int

    def row(self) -> str:
        n = self.stories
        edits = sum(self.edits) / n
        return (
            f"| {self.label} | {(self.limited + self.exempt) / n:.1f} | {self.limited / n:.1f} | "
            f"{self.exempt / n:.1f} | {edits:.1f} ({min(self.edits)} to {max(self.edits)}) | "
            f"{self.skipped} | {self.rate_limited} | {self.limited / self.seconds:.1f} | "
            f"{self.seconds:.1f} |"
        )


async def one_round(
    model_dir: Path, count: int, step_s: float, length: str, per_s: float = 40.0
) -> Round:
    fake = FakeDiscord()
    await fake.start()
    fake.server.global_limit = DISCORD_LIMIT
    folder = Path(tempfile.mkdtemp(prefix="discord-budget-"))
    store = await Store.open(folder / "bench.sqlite3")
    backend = TransformersBackend(model_dir, max_batch_size=32, threads=1)
    backend.on_step = lambda rows: time.sleep(step_s)
    pool = GenerationPool(lambda: backend, max_batch=32, max_queue=max(64, count))
    await pool.start()
    service = StoryService(store, pool, GenreRegistry.load(REPO / "genres.toml"), user_cooldown_s=0)
    bot = StoryBot(
        service,
        MessageBook(store),
        dev_guild_id=int(fake.server.guild_id),
        edit_interval=1.0,
        requests_per_s=per_s,
    )
    app = DiscordApp(bot, "bench-token")
    app.start()
    try:
        await asyncio.wait_for(app.wait_until_ready(), 30)
        await fake.wait_until(bot.budget.idle, 10)  # start-up's requests are done with
        before = len(fake.server.requests)
        people = [fake.server.add_user(f"reader{i}") for i in range(count)]
        prompts = [f"The harbour at dawn, told by reader {i}" for i in range(count)]
        me = fake.server.bot_user.id
        started = time.monotonic()
        for person, prompt in zip(people, prompts, strict=True):
            await fake.invoke("story", user=person, genre="crime", prompt=prompt, length=length)

        def finished() -> list[dict[str, Any]] | None:
            """Each story's final message, once every one has its ➕."""
            found = []
            for prompt in prompts:
                message = next((m for m in fake.messages() if prompt in m["content"]), None)
                if message is None or (me, "➕") not in message.get("reactions_by", []):
                    return None
                found.append(message)
            return found

        messages: list[dict[str, Any]] = await fake.wait_until(finished, timeout=600)
        seconds = time.monotonic() - started
        requests = fake.server.requests[before:]
        return Round(
            label=str(count) if per_s == 40.0 else f"{count}, budget off",
            stories=count,
            seconds=seconds,
            limited=sum(not exempt(r.path) for r in requests),
            exempt=sum(exempt(r.path) for r in requests),
            edits=[len(m.get("edits", [])) - 1 for m in messages],
            skipped=bot.budget.skipped,
            rate_limited=len(fake.server.rate_limited),
        )
    finally:
        await bot.publisher.settle(5)
        await app.close()
        await pool.aclose(1)
        await store.close()
        await fake.stop()


def report(rounds: list[Round], args: argparse.Namespace, took: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"`python -m bench.discord_budget --stories {args.stories} --step-ms {args.step_ms:g}`, "
        f"{when}, {platform.platform()}; the real bot (discord.py) against the fake Discord "
        f"with its global limit at {DISCORD_LIMIT} requests/s, DISCORD_REQUESTS_PER_S=40 "
        f"(the default), an edit every second at most; tiny model at {args.step_ms:g} ms a "
        f"step, {args.length} stories, all started at the same moment; {took:.0f} s in all.",
        "",
        "| stories at once | requests/story | under the global limit | interaction answers "
        "| stream edits/message (range) | stream edits skipped | 429s | requests/s | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *(r.row() for r in rounds),
        "",
        "A story costs its message (one POST), its stream edits, its final edit and its ➕ "
        "under the global limit, and two requests outside it (the deferred interaction and "
        "its followup). As stories pile up, each message gets fewer stream edits (they are "
        "spaced by the number of stories streaming, and only sent with room to spare), so "
        "the requests that must go out (messages, final text, ➕) keep the budget and no "
        "429 is provoked. With the budget off, discord.py alone sends every edit as it "
        "comes, meets Discord's limit and waits out each 429 (`retry_after`), holding up "
        "every request behind it.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.discord_budget", description=__doc__)
    parser.add_argument("--stories", default="1,10,50", help="counts of stories at once")
    parser.add_argument("--step-ms", type=float, default=20.0, help="time a decoding step takes")
    parser.add_argument("--length", default="medium", choices=["short", "medium", "long"])
    parser.add_argument("--model-dir", type=Path, help="default: the tiny model, built once")
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the most stories with the budget off (DISCORD_REQUESTS_PER_S=1000000)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model_dir = args.model_dir or OUT / "tiny-gpt2"
    if not (model_dir / "config.json").is_file():
        print(f"building the tiny model in {model_dir}", file=sys.stderr)
        build_tiny_model(model_dir, train_steps=150)
    started = time.monotonic()
    rounds = []
    for count in (int(n) for n in args.stories.split(",")):
        print(f"{count} stories at once...", file=sys.stderr, flush=True)
        rounds.append(asyncio.run(one_round(model_dir, count, args.step_ms / 1000, args.length)))
    if args.compare:
        most = rounds[-1].stories
        print(f"{most} stories at once without the budget...", file=sys.stderr, flush=True)
        step_s = args.step_ms / 1000
        rounds.append(asyncio.run(one_round(model_dir, most, step_s, args.length, per_s=1e6)))
    text = report(rounds, args, time.monotonic() - started)
    print(text)
    if args.write:
        write_section(HEADING, text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
