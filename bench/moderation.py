"""The content filter's cost (not a test): `python -m bench.moderation [--runs N] [--write]`.

Times one check of a story part of about 400 GPT-2 tokens (1,700 characters of
English prose), clean and with one listed term in the middle, against the
built-in list and against the built-in list plus a server's 200 terms:

- `matches`: what a prompt check costs (normalise, one Aho-Corasick pass);
- `mask`: what a generated part costs (the same, plus spans and masking);
- streamed: the whole part pushed through a `StreamMasker` in 4-character
  deltas (about one GPT-2 token each), per part and per push.

Each figure is the median of `--runs` timed calls after a warm-up, in
microseconds. The issue's target: under 1 ms per check. `--write` puts the
table in bench/RESULTS.md as the section "## Content filter", replacing an
earlier one.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from bench.results import RESULTS, write_section
from stories.moderation import ContentFilter

HEADING = "## Content filter"
TARGET_US = 1000.0
DELTA = 4  # characters per streamed piece: about one GPT-2 token of English

# About 400 GPT-2 tokens of the kind of prose the bot writes.
PART = (
    "The detective reached the crime scene a little after dawn, when the fog still "
    "lay thick over the harbour and the gulls had not yet begun to argue over the "
    "fishing boats. She had been awake since four o'clock, and the coffee in her "
    "flask had gone cold an hour ago. Nobody in the small crowd behind the tape "
    "wanted to talk to her, but the old man who sold newspapers at the corner kept "
    "glancing at the warehouse door, as if he expected it to open on its own. "
    "Inside, the air smelled of diesel and wet rope. A single bulb swung from a "
    "beam, and its light moved across the floor like a slow tide. The body lay near "
    "the far wall, half hidden behind a stack of crates marked with the name of a "
    "shipping company that had gone bankrupt in 1998. Sergeant Hale was already "
    'there, writing in a notebook with a pencil he kept licking. "Found by the '
    'night watchman," he said without looking up. "Says he heard nothing, saw '
    "nothing, and drank nothing, which makes him the first honest watchman in the "
    'history of this port." She crouched beside the crates and studied the dust. '
    "There were two sets of footprints: one heavy and careless, the other light, "
    "placed with care, as if the second person had known exactly where the boards "
    "would creak. A torn ticket for the evening ferry lay under the nearest crate, "
    "and beside it a brass button that did not belong to any coat she could see. "
    "She turned the button over in her gloved fingers. It carried an anchor and "
    'three letters, worn almost smooth. "Whoever left this," she said quietly, '
    '"wanted to be somewhere else by midnight, and wanted us to know it." Hale '
    "closed his notebook and asked whether she wanted the harbour master woken. She "
    "said no, not yet: first she wanted the ferry's passenger list, and a map."
)
HIT = "nigger"  # one listed term, in the middle of the part


def server_terms(count: int, seed: int = 20) -> list[str]:
    """Made-up terms a server might add: single words and a few two-word phrases."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 11)))

    return [word() if i % 5 else f"{word()} {word()}" for i in range(count)]


def median_us(call: Callable[[], object], runs: int) -> float:
    for _ in range(min(runs, 50)):  # warm-up: caches, branch predictors
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def streamed(content_filter: ContentFilter, text: str) -> str:
    stream = content_filter.stream()
    shown = [stream.push(text[i : i + DELTA]) for i in range(0, len(text), DELTA)]
    return "".join(shown) + stream.finish()


def measure(runs: int) -> tuple[list[tuple[str, str, float, float, float]], dict[str, float]]:
    builtin = ContentFilter.builtin()
    terms = server_terms(200)
    start = time.perf_counter()
    server = ContentFilter(builtin.terms | set(terms), builtin.allowed)
    build_ms = (time.perf_counter() - start) * 1000
    assert builtin.with_terms(terms).terms == server.terms
    middle = PART.index(" ", len(PART) // 2)
    texts = {"clean": PART, "with a hit": f"{PART[:middle]} {HIT}{PART[middle:]}"}
    rows = []
    for filter_name, content_filter in [("built-in", builtin), ("built-in + 200", server)]:
        for text_name, text in texts.items():
            # The figures are worthless if the filter is wrong: check it first.
            assert content_filter.matches(text) == (text_name != "clean")
            assert streamed(content_filter, text) == content_filter.mask(text)[0]
            pushes = -(-len(text) // DELTA) + 1
            rows.append(
                (
                    filter_name,
                    text_name,
                    median_us(partial(content_filter.matches, text), runs),
                    median_us(partial(content_filter.mask, text), runs),
                    median_us(partial(streamed, content_filter, text), runs // 10 or 1) / pushes,
                )
            )
    facts = {
        "chars": len(PART),
        "build_ms": build_ms,
        "terms": len(builtin.terms),
        "pushes": -(-len(PART) // DELTA) + 1,
    }
    return rows, facts


def report(
    rows: list[tuple[str, str, float, float, float]], facts: dict[str, float], runs: int
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"{when} · {platform.platform()} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · medians of {runs} calls "
        f"(streamed: {max(runs // 10, 1)} parts).",
        "",
        "`python -m bench.moderation --write`",
        "",
        f"One story part of {facts['chars']:.0f} characters of English prose (the "
        f"issue's 400-token part), clean and with one listed term; the built-in list has "
        f"{facts['terms']:.0f} terms, the server list 200 more (building that filter "
        f"took {facts['build_ms']:.1f} ms, once per change of the list). "
        f"Streamed: the part in {DELTA}-character deltas ({facts['pushes']:.0f} pushes).",
        "",
        "| list | part | `matches` µs | `mask` µs | streamed µs per push |",
        "|---|---|---|---|---|",
    ]
    for filter_name, text_name, check, mask, push in rows:
        lines.append(f"| {filter_name} | {text_name} | {check:.0f} | {mask:.0f} | {push:.1f} |")
    worst = max(max(row[2], row[3]) for row in rows)
    verdict = "meets" if worst < TARGET_US else "MISSES"
    lines += ["", f"Worst check {worst:.0f} µs: {verdict} the target of 1 ms per check.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.moderation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=2000, help="timed calls per figure")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args()
    rows, facts = measure(max(args.runs, 1))
    text = report(rows, facts, max(args.runs, 1))
    print(text)
    if args.write:
        write_section(HEADING, text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
