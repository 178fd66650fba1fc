"""bench/results.py: each benchmark rewrites its own section of RESULTS.md only."""

from __future__ import annotations

from pathlib import Path

from bench.results import write_section


def test_a_section_is_replaced_in_place_or_added_at_the_end(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    write_section("## Store writes", "## Store writes\n\nfirst\n", results)
    assert results.read_text() == "## Store writes\n\nfirst\n"
    results.write_text("# Top\n\n## HTTP load (100 at once)\n\nold\n\n## Store writes\n\nold\n")
    write_section("## HTTP load", "## HTTP load (200 at once)\n\nnew\n", results)
    write_section("## Metrics cost", "## Metrics cost\n\nadded\n", results)
    assert results.read_text() == (
        "# Top\n\n## HTTP load (200 at once)\n\nnew\n\n## Store writes\n\nold\n\n"
        "## Metrics cost\n\nadded\n"
    )
