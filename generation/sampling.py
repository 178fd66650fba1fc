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
        # The same set as a flag per token id, so a candidate lookup is one index
        # (np.isin sorted both arrays: over half of a row's sampling time).
        self._seen_flags = np.zeros(0, dtype=bool)
        self._n = params.no_repeat_ngram_size
        # (n-1)-token prefix -> tokens that followed it, for the n-gram ban.
        self._ngrams: dict[tuple[int, ...], set[int]] = {}
        for token in prompt_ids:
            self.append(token)
        self._eos = eos_token_id
        self._generated = 0
        self._top: npt.NDArray[np.int64] | None = None

    def append(self, token: int) -> None:
        self._history.append(token)
        if token not in self._seen:
            self._seen.add(token)
            if token >= self._seen_flags.size:
                grown = np.zeros(max(2 * self._seen_flags.size, token + 1, 1024), dtype=bool)
                grown[: self._seen_flags.size] = self._seen_flags
                self._seen_flags = grown
            self._seen_flags[token] = True
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

    def choose(
        self, logits: npt.NDArray[np.floating], top: npt.NDArray[np.int64] | None = None
    ) -> int:
        """Pick the next token from one row of logits and record it.

        `top`, when given, holds this row's highest-scoring token ids (any order),
        computed for the whole batch at once by the engine; it is used when it is
        at least `candidates_needed()` wide.
        """
        self._top = top
        token = self._choose(np.asarray(logits))
        self.append(token)
        self._generated += 1
        return token

    def candidates_needed(self) -> int:
        """How many of the raw top tokens can still win (0: the whole vocabulary)."""
        p = self.params
        if not p.do_sample:
            k = 1
        elif p.top_k > 0:
            k = p.top_k
        else:
            return 0
        return k + len(self._seen) + len(self._banned()) + 1

    def _candidates(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        """Token ids that can win after penalties and bans.

        Penalties only lower a token's score and bans remove tokens, so the
        top k after them lie within the top (k + number of affected tokens)
        before them: a partial sort of those instead of a copy of all 50257.
        """
        p = self.params
        vocab = logits.shape[0]
        k = p.top_k if (p.do_sample and 0 < p.top_k < vocab) else (0 if p.do_sample else 1)
        if k == 0:
            return np.arange(vocab)
        affected = len(self._seen) + len(self._banned()) + 1
        wanted = min(vocab, k + affected)
        if wanted >= vocab:
            return np.arange(vocab)
        top = self._top
        if top is not None and len(top) >= wanted:
            return top
        return np.argpartition(-logits, wanted - 1)[:wanted]

    def _choose(self, logits: npt.NDArray[np.floating]) -> int:
        p = self.params
        ids = self._candidates(logits)
        x = logits[ids].astype(np.float64)
        if self._eos is not None and self._generated < p.min_new_tokens:
            x[ids == self._eos] = -np.inf
        if p.repetition_penalty != 1.0 and self._seen:
            flags = self._seen_flags
            seen = flags[np.minimum(ids, flags.size - 1)] & (ids < flags.size)
            x[seen] = np.where(
                x[seen] < 0, x[seen] * p.repetition_penalty, x[seen] / p.repetition_penalty
            )
        banned = self._banned()
        if len(banned) > 16:
            x[np.isin(ids, np.fromiter(banned, dtype=np.int64, count=len(banned)))] = -np.inf
        else:  # usually one or two: a comparison each beats sorting for np.isin
            for token in banned:
                x[ids == token] = -np.inf
        if not np.isfinite(x).any():  # every candidate banned: fall back to the raw argmax
            return int(np.argmax(logits))
        if not p.do_sample:
            return int(ids[int(np.argmax(x))])

        # Scale relative to the best score: every scaled score is <= 0, so no
        # temperature, however small (1e-320), can overflow to +inf and leave
        # nothing to sample; a tiny one just becomes greedy.
        with np.errstate(over="ignore"):  # far below the best: -inf, never drawn
            x = (x - x[np.isfinite(x)].max()) / p.temperature
        if 0 < p.top_k < len(ids):
            top = np.argpartition(-x, p.top_k - 1)[: p.top_k]
            ids, x = ids[top], x[top]
        order = np.lexsort((ids, -x))  # by score, ties by token id: deterministic
        ids, scores = ids[order], x[order]
        keep = np.isfinite(scores)
        ids, scores = ids[keep], scores[keep]
        probs = np.exp(scores - scores[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            cumulative = np.cumsum(probs)
            cutoff = int(np.searchsorted(cumulative, p.top_p)) + 1
            ids, probs = ids[:cutoff], probs[:cutoff]
        cumulative = np.cumsum(probs)
        draw = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, draw, side="right")), len(ids) - 1)
        return int(ids[index])
