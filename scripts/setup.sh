#!/usr/bin/env bash
# Create .venv in the repository root and install the lock file (every package
# at its locked version, checked against its hash; scripts/lock.sh makes it).
# torch, the CPU build, is installed by name first (why: scripts/lock.sh).
# Idempotent: a stamp of the requirements' hash skips pip when nothing changed.
#   scripts/setup.sh            runtime requirements
#   scripts/setup.sh dev        runtime + test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "error: storybot needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }

requirements=requirements.txt
[[ "${1:-}" == "dev" ]] && requirements=requirements-dev.txt
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

stamp=".venv/.installed-$(basename "$requirements" .txt)"
hash=$(cat requirements-slim.txt requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)
# The dev lock is compiled on top of the runtime one (scripts/lock.sh): a .venv
# set up for the tests already holds everything the runtime needs.
dev_hash=$(cat requirements-slim.txt requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [[ "$requirements" == requirements.txt && "$(cat .venv/.installed-requirements-dev 2>/dev/null)" == "$dev_hash" ]]; then
  exit 0
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]]; then
  echo "installing $requirements into .venv ..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  # --no-deps: its dependencies are in the lock, hashed. Where pip finds only
  # PyPI's CUDA build, PyTorch's CPU index has this one (the Dockerfile uses it).
  .venv/bin/python -m pip install --quiet --no-deps torch==2.13.0
  .venv/bin/python -m pip install --quiet --require-hashes -r "$requirements"
  echo "$hash" > "$stamp"
fi
