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
    """The disk is full, the file is read-only, or it cannot be opened."""

    code = "storage_unavailable"


class SchemaTooNew(StorageError):
    code = "schema_too_new"
