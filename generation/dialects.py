"""Each serving engine's names for the sampling controls GPT-2 stories need.

OpenAI's Completions API has temperature, top_p, seed, max_tokens and stop.
GPT-2 also needs top_k, a repetition penalty and a ban on repeated n-grams
(`GenerationParams` says why), and long stories need a minimum length. Every
engine names these its own way, and most ignore a field they do not know
without a word, so the wrong names cost the story its repetition controls and
nobody notices. One row per engine says how to recognise it, what it calls
each control, and which controls it has no field for.

Where each fact comes from (read in the engines' own sources and documents):

- llama.cpp `llama-server`: tools/server/README.md (`GET /props`, the
  `/completion` options, which `/v1/completions` also reads) and
  tools/server/server-task.cpp `params_from_json_cmpl` (each field read with a
  default, so an unknown one is ignored; no minimum length), and in newer
  servers tools/server/server-schema.cpp, which reads the same names but
  refuses a `repeat_last_n` or `dry_penalty_last_n` below 0 (older ones took
  -1 for "the whole context", so the context's size is sent instead);
  src/llama-sampling.cpp (the DRY penalty is multiplier * base^(repeat -
  allowed_length) once a repeat reaches allowed_length tokens; sequence
  breakers end a repeat); server-context.cpp feeds the prompt's tokens to the
  samplers, so penalties see the prompt as transformers' do.
- vLLM: vllm/entrypoints/openai/protocol.py `CompletionRequest` (top_k,
  repetition_penalty, min_tokens; no n-gram ban) and `OpenAIBaseModel`
  (extra="allow": an unknown field is only logged); api_server.py
  `GET /version` answers {"version": ...}; /v1/models says owned_by "vllm".
- text-generation-inference: router/src/lib.rs `CompletionRequest` (serde,
  unknown fields ignored; repetition_penalty but no top_k, n-gram ban or
  minimum length) and `Info` (`GET /info`, with max_total_tokens);
  router/src/server.rs `completions` sets top_k to None; validation.rs refuses
  top_p outside (0, 1).
- `transformers serve` (transformers 5.24, cli/serving): refuses unknown
  top-level fields with 422 and takes a JSON `generation_config`, which holds
  every control under transformers' own names; it answers none of the paths
  above, so the start-up probe recognises it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from generation.types import GenerationParams

# How sampling fields are sent: an engine's own dialect, `extra` (the common
# names, for an engine not in the table), `none`, or `auto` (find the engine at
# start-up). `generation_config` is the old name of `transformers`.
SamplingFields = Literal[
    "auto", "llamacpp", "vllm", "tgi", "transformers", "extra", "generation_config", "none"
]
ALIASES: dict[str, str] = {"generation_config": "transformers"}

# The controls beyond OpenAI's standard fields, by their GenerationParams names.
CONTROLS = ("top_k", "repetition_penalty", "no_repeat_ngram_size", "min_new_tokens")

# llama.cpp's DRY penalty, subtracted from a logit, at the shortest repeat it
# fires on. GPT-2's logits differ by tens at most, so this much makes a token
# that would repeat an n-gram as unlikely as transformers' ban (-inf) does.
DRY_BAN_MULTIPLIER = 1000.0
DRY_BASE = 1.75  # llama.cpp's default; with the multiplier above it hardly matters


@dataclass(frozen=True)
class Dialect:
    key: str  # the OPENAI_SAMPLING_FIELDS value
    engine: str  # for the start-up log
    # The fields for one request; the int is the context in tokens (prompt + new).
    fields: Callable[[GenerationParams, int], dict[str, Any]]
    # Controls it has no field for: the start-up warning names them.
    unhonoured: tuple[str, ...] = ()
    # Controls it takes only approximately, and how (for the start-up log).
    approximated: str = ""
    # How to recognise it: a GET at the server root (the API root without its
    # /v1) that only it answers, and what its JSON answer holds.
    detect_path: str | None = None
    recognise: Callable[[Any], bool] = lambda answer: False
    # The `owned_by` its /v1/models gives, a second sign of it.
    owned_by: str | None = None
    # The context (prompt + new tokens) its detection answer reports.
    context: Callable[[Any], int | None] = lambda answer: None


def _standard(params: GenerationParams, context: int = 0) -> dict[str, Any]:
    """OpenAI's own fields: every engine reads these under these names."""
    fields: dict[str, Any] = {"temperature": params.temperature if params.do_sample else 0.0}
    if params.do_sample:
        fields["top_p"] = params.top_p
    if params.seed is not None:
        fields["seed"] = params.seed
    return fields


def _llamacpp(params: GenerationParams, context: int) -> dict[str, Any]:
    fields = _standard(params) | {
        # Always sent: left out, llama.cpp's own default (40) would apply; 0 is off.
        "top_k": params.top_k,
        # llama.cpp trims tokens under 5 % of the likeliest by default (min_p
        # 0.05), a filter no other engine and not our own sampler applies.
        "min_p": 0.0,
        "repeat_penalty": params.repetition_penalty,
        "repeat_last_n": context,  # the whole context, prompt included, as transformers does
    }
    n = params.no_repeat_ngram_size
    if n:
        # A token that would complete a repeated n-gram follows a repeat of
        # n - 1 tokens: that is where DRY starts to penalise.
        fields |= {
            "dry_multiplier": DRY_BAN_MULTIPLIER,
            "dry_base": DRY_BASE,
            "dry_allowed_length": n - 1,
            "dry_penalty_last_n": context,
        }
    else:
        fields["dry_multiplier"] = 0.0  # off, whatever the server was started with
    return fields


def _vllm(params: GenerationParams, context: int) -> dict[str, Any]:
    fields = _standard(params) | {"repetition_penalty": params.repetition_penalty}
    if params.top_k:  # left out: off (older vLLM refuses 0, newer takes 0 or -1 as off)
        fields["top_k"] = params.top_k
    if params.min_new_tokens:
        fields["min_tokens"] = params.min_new_tokens
    return fields


def _tgi(params: GenerationParams, context: int) -> dict[str, Any]:
    fields = _standard(params) | {"repetition_penalty": params.repetition_penalty}
    if fields.get("top_p", 0.0) >= 1.0:
        del fields["top_p"]  # TGI refuses 1.0 (422), which means "off" anyway
    return fields


def _transformers(params: GenerationParams, context: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "do_sample": params.do_sample,
        "max_new_tokens": params.max_new_tokens,
        "repetition_penalty": params.repetition_penalty,
        "no_repeat_ngram_size": params.no_repeat_ngram_size,
        "min_new_tokens": params.min_new_tokens,
    }
    if params.do_sample:
        config |= {"temperature": params.temperature, "top_k": params.top_k}
        config["top_p"] = params.top_p
    return _standard(params) | {"generation_config": json.dumps(config)}


def _extra(params: GenerationParams, context: int) -> dict[str, Any]:
    """The names vLLM and transformers use, for an engine not in the table."""
    fields = _standard(params) | {"repetition_penalty": params.repetition_penalty}
    if params.top_k:
        fields["top_k"] = params.top_k
    if params.no_repeat_ngram_size:
        fields["no_repeat_ngram_size"] = params.no_repeat_ngram_size
    if params.min_new_tokens:
        fields["min_tokens"] = params.min_new_tokens
    return fields


def _dig(answer: Any, *keys: str) -> Any:
    for key in keys:
        answer = answer.get(key) if isinstance(answer, dict) else None
    return answer


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


DIALECTS: dict[str, Dialect] = {
    d.key: d
    for d in (
        Dialect(
            "llamacpp",
            "llama.cpp",
            _llamacpp,
            unhonoured=("min_new_tokens",),
            approximated="no_repeat_ngram_size goes to its DRY sampler, a steep penalty that "
            "stops at its sequence breakers (by default newlines, colons, quotes and "
            "asterisks) rather than a strict ban",
            detect_path="/props",
            recognise=lambda answer: isinstance(_dig(answer, "default_generation_settings"), dict),
            owned_by="llamacpp",
            # Each slot's context: with --parallel N it is the whole context / N.
            context=lambda answer: _positive(_dig(answer, "default_generation_settings", "n_ctx")),
        ),
        Dialect(
            "tgi",
            "text-generation-inference",
            _tgi,
            unhonoured=("top_k", "no_repeat_ngram_size", "min_new_tokens"),
            detect_path="/info",
            recognise=lambda answer: (
                _positive(_dig(answer, "max_total_tokens")) is not None
                and isinstance(_dig(answer, "model_id"), str)
            ),
            context=lambda answer: _positive(_dig(answer, "max_total_tokens")),
        ),
        Dialect(
            "vllm",
            "vLLM",
            _vllm,
            unhonoured=("no_repeat_ngram_size",),
            detect_path="/version",
            # A version string is all it says: the weakest sign, so it is tried last.
            recognise=lambda answer: isinstance(_dig(answer, "version"), str),
            owned_by="vllm",
        ),
        Dialect("transformers", "transformers serve", _transformers),
        Dialect("extra", "an engine storybot does not know", _extra),
        Dialect("none", "an engine that takes no extra fields", _standard, unhonoured=CONTROLS),
    )
}

# Tried in this order at start-up, each by its own path; after them, the probe.
DETECTABLE = [d for d in DIALECTS.values() if d.detect_path is not None]
# What the probe tries on an engine no path identified, in order.
PROBED = ["extra", "transformers", "none"]


def dialect(key: str) -> Dialect:
    return DIALECTS[ALIASES.get(key, key)]
