#!/usr/bin/env bash
# Set everything up and run storybot: the bot with DISCORD_TOKEN, else the HTTP
# service alone on HTTP_HOST:HTTP_PORT (127.0.0.1:5000).
# Uses models/gpt2 when present; tries to download it when absent; without a
# network, falls back to the tiny offline model, loudly. With BACKEND=openai it
# fetches no model: generation happens on the remote engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# A setting as the bot will see it: the environment, else the last KEY= line of
# .env (surrounding quotes and a trailing comment removed), else empty.
setting() {
  local name=$1 value
  if [[ -n "${!name:-}" ]]; then echo "${!name}"; return; fi
  value=$( (sed -n "s/^[[:space:]]*$name[[:space:]]*=//p" .env 2>/dev/null || true) | tail -n 1)
  value=$(sed -E 's/[[:space:]]+#.*$//; s/^[[:space:]]+//; s/[[:space:]]+$//' <<<"$value")
  value=${value#[\"\']}; value=${value%[\"\']}
  echo "$value"
}
# BACKEND=openai generates on a remote engine: no local model to fetch.
backend=$(setting BACKEND)
# Decide by whether the model folder holds a model, not by what .env mentions:
# .env.example names the default folder, and copying it must not skip the
# download.
model_dir=$(setting MODEL_DIR)
model_dir="${model_dir:-models/gpt2}"
if [[ "$backend" != "openai" && ! -f "$model_dir/storybot.json" ]]; then
  if [[ "$model_dir" == "models/gpt2" ]] && ! .venv/bin/python download_model.py; then
    [[ -f models/tiny-gpt2/storybot.json ]] || .venv/bin/python download_model.py --tiny
    echo "WARNING: GPT-2 could not be downloaded; running the TINY test model." >&2
    echo "WARNING: stories will be nonsense until you run: .venv/bin/python download_model.py" >&2
    export MODEL_DIR=models/tiny-gpt2
  fi
fi
exec .venv/bin/python -m bot
