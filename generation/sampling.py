"""Per-request token choice, shared by every local backend.

Each request gets its own `RowSampler` with its own seeded generator, so the
text for a seed does not depend on which other requests shared its batch, and
every backend (torch, or a faster engine) samples identically from the same
logits. The order follows transformers: repetition penalty and the n-gram ban
first, then temperature, top-k and top-p.

Sampling uses the inverse CDF with one uniform draw per token: a draw maps to
the same token even when logits differ in the last bits (batched vs. alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from generation.types import GenerationParams


class RowSampler:
    def __init__(
        self, params: GenerationParams, prompt_ids: Sequence[int], eos_token_id: int | None = None
    ) -> None:
        if params.seed is None:
            raise ValueError("RowSampler needs a concrete seed (params.with_seed())")
        self.params = params
        self._rng = np.random.Generator(np.random.PCG64(params.seed))
        self._history: list[int] = []
        self._seen: set[int] = set()
        self._seen_arr = np.empty(0, dtype=np.int64)
        self._n = params.no_repeat_ngram_size
        # (n-1)-token prefix -> tokens that followed it, for the n-gram ban.
        self._ngrams: dict[tuple[int, ...], set[int]] = {}
        for token in prompt_ids:
            self.append(token)
        self._eos = eos_token_id
        self._generated = 0

    def append(self, token: int) -> None:
        self._history.append(token)
        if token not in self._seen:
            self._seen.add(token)
            self._seen_arr = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
        n = self._n
        if n > 0 and len(self._history) >= n:
            prefix = tuple(self._history[-n:-1])
            self._ngrams.setdefault(prefix, set()).add(token)

    def _banned(self) -> set[int]:
        n = self._n
        if n <= 0 or len(self._history) < n - 1:
            return set()
        prefix = tuple(self._history[len(self._history) - (n - 1) :]) if n > 1 else ()
        return self._ngrams.get(prefix, set())

    def choose(self, logits: npt.NDArray[np.floating]) -> int:
        """Pick the next token from one row of logits and record it."""
        x = np.array(logits, dtype=np.float64)
        if self._eos is not None and self._generated < self.params.min_new_tokens:
            x[self._eos] = -np.inf
        token = self._choose(x)
        self.append(token)
        self._generated += 1
        return token

    def _choose(self, x: npt.NDArray[np.float64]) -> int:
        p = self.params
        if p.repetition_penalty != 1.0 and self._seen_arr.size:
            ids = self._seen_arr[self._seen_arr < x.shape[0]]
            seen = x[ids]
            x[ids] = np.where(seen < 0, seen * p.repetition_penalty, seen / p.repetition_penalty)
        banned = self._banned()
        if banned:
            x[np.fromiter(banned, dtype=np.int64, count=len(banned))] = -np.inf
        if not np.isfinite(x).any():  # every token banned: fall back to the raw argmax
            return int(np.argmax(np.nan_to_num(x, neginf=0.0)))
        if not p.do_sample:
            return int(np.argmax(x))

        x /= p.temperature
        vocab = x.shape[0]
        if 0 < p.top_k < vocab:
            candidates = np.argpartition(-x, p.top_k - 1)[: p.top_k]
        else:
            candidates = np.arange(vocab)
        order = candidates[np.argsort(-x[candidates], kind="stable")]
        logits = x[order]
        keep = np.isfinite(logits)
        order, logits = order[keep], logits[keep]
        probs = np.exp(logits - logits[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            cumulative = np.cumsum(probs)
            cutoff = int(np.searchsorted(cumulative, p.top_p)) + 1
            order, probs = order[:cutoff], probs[:cutoff]
        cumulative = np.cumsum(probs)
        draw = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, draw, side="right")), len(order) - 1)
        return int(order[index])
