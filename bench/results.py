"""bench/RESULTS.md, where each benchmark keeps one section of its own."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def write_section(heading: str, text: str, results: Path = RESULTS) -> None:
    """Put `text` (which starts with its `## ` heading) in place of the earlier
    section whose heading line starts with `heading`, or at the end."""
    old = results.read_text(encoding="utf-8") if results.exists() else ""
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text if old.strip() else text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        after = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + after if after else "")
    results.write_text(new, encoding="utf-8")
