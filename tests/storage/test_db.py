"""storage.db's small pieces: placeholders, URLs, schema file numbering."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import is_postgres_url, migrations, numbered, redacted, sqlite_path
from storage.errors import StorageError, StorageUnavailable


def test_placeholders_are_numbered_outside_quotes_only() -> None:
    sql = "SELECT '?', ? FROM t WHERE a = ? AND b IN (?, ?) AND c = 'it''s?'"
    assert numbered(sql) == (
        "SELECT '?', $1 FROM t WHERE a = $2 AND b IN ($3, $4) AND c = 'it''s?'"
    )


def test_urls_say_which_database_and_hide_the_password() -> None:
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("sqlite:///x.sqlite3") and not is_postgres_url(Path("x"))
    assert (
        redacted("postgresql://u:s3cret@db.example:5432/x")
        == "postgresql://u:***@db.example:5432/x"
    )
    assert redacted("postgresql://u@h/x") == "postgresql://u@h/x"
    assert sqlite_path("sqlite:///data/s.sqlite3") == Path("data/s.sqlite3")
    assert sqlite_path("sqlite:////srv/s.sqlite3") == Path("/srv/s.sqlite3")
    assert sqlite_path("plain/s.sqlite3") == Path("plain/s.sqlite3")
    with pytest.raises(StorageUnavailable, match="not a SQLite URL"):
        sqlite_path("sqlite:s.sqlite3")


def test_schema_files_follow_each_other(tmp_path: Path) -> None:
    for name in ("0003_a.sql", "0004_b.sql", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [n for n, _ in migrations(tmp_path, baseline=True)] == [3, 4]  # a baseline first
    with pytest.raises(StorageError, match="without gaps"):
        migrations(tmp_path)  # SQLite's start at 0001
    (tmp_path / "0006_c.sql").write_text("")
    with pytest.raises(StorageError, match="without gaps"):
        migrations(tmp_path, baseline=True)
