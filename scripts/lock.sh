#!/usr/bin/env bash
# Compile the lock files requirements*.txt (every package, exact version, hashes)
# from what we ask for, requirements*.in. Run after editing a .in file:
#   scripts/lock.sh              keep the versions locked now where they still fit
#   scripts/lock.sh --upgrade    take the newest versions the .in files allow
# Each lock is compiled against the one below it (slim < runtime < dev), so a
# package shared by two has one version in both.
#
# torch stays out of the hashed set: the build we install is the CPU one
# (PyTorch's CPU index, or the wheel on our machines' disk), whose hash is not
# PyPI's (a CUDA build, with 3 GB of nvidia-* packages) and differs by
# architecture. The locks are compiled against the CPU build's metadata, so its
# own dependencies are locked and hashed; scripts/setup.sh and the Dockerfile
# install torch==2.13.0 itself by name, before the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
# uv comes with the dev tools (scripts/setup.sh dev), or from PATH.
uv=(.venv/bin/uv)
[[ -x .venv/bin/uv ]] || uv=(uv)
compile=(pip compile --quiet --generate-hashes --python-version 3.11
         --python-platform x86_64-manylinux_2_28 --no-strip-extras
         --custom-compile-command "scripts/lock.sh" "$@")
# The CPU build of torch, from PyTorch's CPU index or a local folder of wheels.
cpu=$(mktemp); trap 'rm -f "$cpu"' EXIT
echo "torch==2.13.0+cpu" > "$cpu"
torch_from=(--override "$cpu" --index-url https://pypi.org/simple
            --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
[[ -d /opt/wheels ]] && torch_from=(--override "$cpu" --find-links /opt/wheels)

lock() {  # lock IN OUT [CONSTRAINT]
  local in=$1 out=$2; shift 2
  # uv keeps the versions already in its output file where they still fit: start
  # it from the current lock, or every run would be an --upgrade.
  [[ -f "$out" ]] && cp "$out" "$out.tmp"
  "${uv[@]}" "${compile[@]}" "${torch_from[@]}" "$@" "$in" -o "$out.tmp"
  # Drop torch's own entry (a block of lines up to the next package).
  awk '/^torch==/{skip=1; next} skip && /^[^ #]/{skip=0} !skip' "$out.tmp" > "$out"
  rm -f "$out.tmp"
  echo "locked $in -> $out ($(grep -c '^[a-z0-9].*==' "$out") packages, torch installed by name)"
}
lock requirements-slim.in requirements-slim.txt
lock requirements.in requirements.txt -c requirements-slim.txt
lock requirements-dev.in requirements-dev.txt -c requirements.txt
