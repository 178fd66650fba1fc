"""The per-row sampler, without a model."""

from __future__ import annotations

import numpy as np

from generation.sampling import RowSampler
from generation.types import GenerationParams


def _sampler(**kwargs: object) -> RowSampler:
    params = GenerationParams(seed=1, **kwargs)  # type: ignore[arg-type]
    return RowSampler(params, prompt_ids=[])


def test_top_k_one_is_argmax_and_greedy_is_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert _sampler(top_k=1, repetition_penalty=1.0, no_repeat_ngram_size=0).choose(logits) == 1
    assert _sampler(do_sample=False, repetition_penalty=1.0).choose(logits) == 1


def test_sampling_stays_inside_top_k() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=200).astype(np.float32)
    top = set(np.argsort(-logits)[:5].tolist())
    sampler = _sampler(top_k=5, repetition_penalty=1.0, no_repeat_ngram_size=0, temperature=2.0)
    assert {sampler.choose(logits) for _ in range(100)} <= top


def test_no_repeat_ngram_bans_a_repeated_trigram() -> None:
    sampler = RowSampler(
        GenerationParams(seed=0, do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=3),
        prompt_ids=[1, 2, 3, 1, 2],
    )
    logits = np.zeros(10, dtype=np.float32)
    logits[3] = 10.0  # would complete "1 2 3" again
    logits[4] = 5.0
    assert sampler.choose(logits) == 4


def test_repetition_penalty_lowers_seen_tokens() -> None:
    sampler = RowSampler(
        GenerationParams(seed=0, do_sample=False, repetition_penalty=2.0, no_repeat_ngram_size=0),
        prompt_ids=[0],
    )
    logits = np.array([3.0, 2.0], dtype=np.float32)  # token 0 seen: 3/2 = 1.5 < 2
    assert sampler.choose(logits) == 1


def test_min_new_tokens_holds_off_end_of_text() -> None:
    params = GenerationParams(
        seed=0, do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=2
    )
    sampler = RowSampler(params, prompt_ids=[], eos_token_id=0)
    logits = np.array([9.0, 1.0, 0.5], dtype=np.float32)
    assert [sampler.choose(logits) for _ in range(3)] == [1, 1, 0]


def test_same_seed_same_draws() -> None:
    logits = np.random.default_rng(3).normal(size=500).astype(np.float32)
    first = _sampler(top_k=0, top_p=1.0, no_repeat_ngram_size=0)
    second = _sampler(top_k=0, top_p=1.0, no_repeat_ngram_size=0)
    assert [first.choose(logits) for _ in range(20)] == [second.choose(logits) for _ in range(20)]
