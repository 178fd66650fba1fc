"""Arrows point down: front-ends (bot, api) -> stories -> generation, storage.

Read from the source with `ast`, so an import inside a function (the lazy
imports that keep start-up light) counts as much as one at the top. app/ is
the composition root and the home of command-line tools that need several
layers; nothing below it may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("api", "app", "bench", "bot", "generation", "storage", "stories")

# package -> the first-party packages it must never import
FORBIDDEN = {
    "generation": {"storage", "stories", "bot", "api", "app", "bench"},
    "storage": {"generation", "stories", "bot", "api", "app", "bench"},
    "stories": {"bot", "api", "app", "bench"},
    "bot": {"api", "app", "bench"},
    "api": {"bot", "app", "bench"},
}


# `python -m bot` is the program's entry point (DESIGN.md, the README, the
# Dockerfile's CMD), not part of the Discord layer: it parses its arguments and
# hands over to the composition root. That one import is the exception.
ENTRY_POINTS = {("bot/__main__.py", "app.runtime")}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(package: str, root: Path = REPO) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        name = path.relative_to(root).as_posix()
        for line, module in imports_of(path):
            if module.split(".")[0] in FORBIDDEN[package] and (name, module) not in ENTRY_POINTS:
                found.append(f"{name}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    assert upward_imports(package) == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself: a lazy import inside a function is found too."""
    (tmp_path / "generation").mkdir()
    (tmp_path / "generation" / "sneaky.py").write_text(
        "import os\n\ndef later():\n    from stories.genres import GenreRegistry\n"
        "    import app.settings\n    from generation import pool\n"
    )
    assert upward_imports("generation", tmp_path) == [
        "generation/sneaky.py:4 imports stories.genres",
        "generation/sneaky.py:5 imports app.settings",
    ]


def test_every_package_is_under_the_rule_or_at_the_top() -> None:
    on_disk = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} - {"tests"}
    assert on_disk == set(PACKAGES)
    assert set(FORBIDDEN) | {"app", "bench"} == set(PACKAGES)


def store_calls(package: str, root: Path = REPO) -> list[str]:
    """Every use of an attribute named `store` (the story service's storage)."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [
            f"{path.relative_to(root).as_posix()}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "store"
        ]
    return found


@pytest.mark.parametrize("front_end", ["bot", "api"])
def test_the_front_ends_talk_to_the_story_service_only(front_end: str) -> None:
    """No reaching through the service to its storage (`service.store.get_part`):
    what a front-end needs is a use-case, in stories/."""
    assert store_calls(front_end) == []
