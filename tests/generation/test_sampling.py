"""The per-row sampler, without a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from generation.sampling import RowSampler, choose_rows
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


def _mixed_rows(seed: int, rows: int) -> list[tuple[GenerationParams, list[int]]]:
    """Requests as a busy channel sends them: defaults, greedy, other top-k,
    top-p, temperatures and penalties, no n-gram ban, a minimum length."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rows):
        kind = r % 6
        params = GenerationParams(
            seed=int(rng.integers(2**31)),
            do_sample=kind != 1,
            top_k=[50, 50, 5, 0 if r % 12 == 3 else 200, 1, 40][kind],
            top_p=[0.95, 1.0, 0.5, 0.9, 1.0, 1.0][kind],
            temperature=[0.9, 1.0, 1.7, 0.3, 1.0, 1e-6][kind],
            repetition_penalty=[1.2, 1.3, 1.0, 2.5, 1.2, 1.1][kind],
            no_repeat_ngram_size=[3, 2, 0, 4, 3, 1][kind],
            min_new_tokens=[0, 0, 5, 0, 30, 0][kind],
        )
        prompt = rng.integers(0, 400, size=int(rng.integers(1, 60))).tolist()
        out.append((params, prompt))
    return out


def test_a_batch_samples_each_seed_as_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """`choose_rows` (the whole batch in arrays) gives every row the token
    its own `choose` gives it, step after step, whatever each row's settings:
    3,000 tokens over 12 rows, most sampled in arrays, some needing more
    candidates than the engine ranked (done one by one), with end-of-text held
    off, n-gram bans and scores tied everywhere."""
    import generation.sampling

    batched = generation.sampling._choose_batched
    done_in_arrays = 0

    def counting(*args: Any) -> dict[int, int]:
        nonlocal done_in_arrays
        found = batched(*args)
        done_in_arrays += len(found)
        return found

    monkeypatch.setattr(generation.sampling, "_choose_batched", counting)
    vocab, width, rows, steps = 4000, 384, 12, 250
    requests = _mixed_rows(7, rows)
    alone = [RowSampler(p, prompt, eos_token_id=2) for p, prompt in requests]
    together = [RowSampler(p, prompt, eos_token_id=2) for p, prompt in requests]
    rng = np.random.default_rng(11)
    batched_rows = 0
    for step in range(steps):
        logits = rng.normal(scale=3.0, size=(rows, vocab)).astype(np.float32)
        logits[:, 2] += 4.0  # end-of-text near the top: min_new_tokens matters
        if step % 50 == 7:
            logits[0] = 0.0  # ties everywhere: the token id breaks them
        top = np.argpartition(-logits, width - 1, axis=1)[:, :width]
        batched_rows += sum(0 < s.candidates_needed() <= width for s in together)
        expected = [s.choose(logits[r], top[r]) for r, s in enumerate(alone)]
        assert choose_rows(together, logits, top) == expected, step
    assert [s._history for s in alone] == [s._history for s in together]
    assert 0.3 * rows * steps < batched_rows < rows * steps  # both paths ran
    assert done_in_arrays == batched_rows


def test_a_batch_without_ranked_candidates_samples_row_by_row() -> None:
    requests = _mixed_rows(3, 4)
    alone = [RowSampler(p, prompt) for p, prompt in requests]
    together = [RowSampler(p, prompt) for p, prompt in requests]
    logits = np.random.default_rng(5).normal(size=(4, 300)).astype(np.float32)
    expected = [s.choose(row) for s, row in zip(alone, logits, strict=True)]
    assert choose_rows(together, logits, None) == expected


def test_one_rows_fault_is_its_own() -> None:
    """A row whose sampler fails gets its exception; the others their tokens,
    as they would alone."""
    requests = _mixed_rows(4, 5)
    alone = [RowSampler(p, prompt) for p, prompt in requests]
    together = [RowSampler(p, prompt) for p, prompt in requests]

    def broken(token: int) -> None:
        raise IndexError("injected")

    together[2].append = broken  # type: ignore[method-assign]
    logits = np.random.default_rng(6).normal(size=(5, 500)).astype(np.float32)
    top = np.argpartition(-logits, 199, axis=1)[:, :200]
    got = choose_rows(together, logits, top)
    assert isinstance(got[2], Exception)
    assert [t for r, t in enumerate(got) if r != 2] == [
        s.choose(logits[r], top[r]) for r, s in enumerate(alone) if r != 2
    ]


def test_a_fault_in_the_batch_arithmetic_falls_back_row_by_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the arrays fail, every row is sampled alone, with the same tokens
    (nothing of the failed attempt was drawn or recorded)."""
    import generation.sampling

    def broken(*args: object) -> dict[int, int]:
        raise FloatingPointError("injected")

    requests = _mixed_rows(8, 6)
    alone = [RowSampler(p, prompt) for p, prompt in requests]
    together = [RowSampler(p, prompt) for p, prompt in requests]
    monkeypatch.setattr(generation.sampling, "_choose_batched", broken)
    rng = np.random.default_rng(9)
    for _ in range(20):
        logits = rng.normal(size=(6, 2000)).astype(np.float32)
        top = np.argpartition(-logits, 299, axis=1)[:, :300]
        expected = [s.choose(logits[r], top[r]) for r, s in enumerate(alone)]
        assert choose_rows(together, logits, top) == expected


def test_rows_with_nan_or_infinite_scores_are_sampled_alone() -> None:
    """Scores an engine should never give (NaN, +inf) send their rows the row
    path's way: the same token, or the same error, as alone."""
    requests = _mixed_rows(12, 6)
    alone = [RowSampler(p, prompt) for p, prompt in requests]
    together = [RowSampler(p, prompt) for p, prompt in requests]
    logits = np.random.default_rng(13).normal(size=(6, 3000)).astype(np.float32)
    top = np.argpartition(-logits, 299, axis=1)[:, :300]
    logits[0, top[0, :3]] = np.nan
    logits[3, top[3, :60]] = np.inf
    logits[4, top[4, 0]] = np.inf

    def alone_choice(r: int) -> object:
        try:
            return alone[r].choose(logits[r], top[r])
        except Exception as error:
            return type(error)

    expected = [alone_choice(r) for r in range(6)]
    got = [t if isinstance(t, int) else type(t) for t in choose_rows(together, logits, top)]
    assert got == expected
