#!/usr/bin/env bash
# Set everything up and run the checks: ruff, mypy, then the test suite.
# pytest's "no tests collected" (exit 5) is a failure here, like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
