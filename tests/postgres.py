"""The tests' PostgreSQL server: bench/pg_server.py (the benchmark starts one
the same way), re-exported for tests/conftest.py's fixtures."""

from bench.pg_server import (
    MISSING,
    PostgresServer,
    binaries,
    create_database,
    running_server,
)

__all__ = ["MISSING", "PostgresServer", "binaries", "create_database", "running_server"]
