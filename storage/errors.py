"""Typed storage errors; messages are fit to show an operator or a user."""

from __future__ import annotations


class StorageError(Exception):
    code = "storage_error"


class NotFound(StorageError):
    code = "not_found"


class InvalidData(StorageError):
    """Refused input: a part under another story's part, an unknown status..."""

    code = "invalid_data"


class StorageUnavailable(StorageError):
    """The disk is full, the file is read-only, it cannot be opened, or the
    database server cannot be reached."""

    code = "storage_unavailable"


class SchemaTooNew(StorageError):
    code = "schema_too_new"


class Claimed(StorageError):
    """Someone acts on this part already: an unfinished run continues or rerolls
    it, or a vote on what follows it is undecided (in this process or another
    one sharing the database)."""

    code = "claimed"

    def __init__(
        self, part_id: int, by: str, *, run_id: int | None = None, vote_id: int | None = None
    ) -> None:
        super().__init__(f"part {part_id} is claimed already (by a {by})")
        self.part_id = part_id
        self.by = by  # 'continue', 'reroll' or 'vote'
        self.run_id = run_id
        self.vote_id = vote_id
