#!/usr/bin/env bash
# Set everything up and run the checks: ruff (lint and format), mypy, then the
# test suite (which also runs hadolint and the Compose schema check).
# pytest's "no tests collected" (exit 5) is a failure here, like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
