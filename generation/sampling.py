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

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from generation.types import GenerationParams

log = logging.getLogger(__name__)
_fell_back = False  # logged once: the fall-back costs only speed


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
        order = np.lexsort((ids, -x))  # by score, ties by token id: deterministic
        if 0 < p.top_k < len(ids):  # (also at the k-th place: the lowest ids)
            order = order[: p.top_k]
        ids, scores = ids[order], x[order]
        keep = np.isfinite(scores)
        ids, scores = ids[keep], scores[keep]
        probs = np.exp(scores - scores[0])
        probs /= np.cumsum(probs)[-1]  # a sequential sum: the batched path's, to the last bit
        if p.top_p < 1.0:
            cumulative = np.cumsum(probs)
            cutoff = int(np.searchsorted(cumulative, p.top_p)) + 1
            ids, probs = ids[:cutoff], probs[:cutoff]
        cumulative = np.cumsum(probs)
        draw = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, draw, side="right")), len(ids) - 1)
        return int(ids[index])


def choose_rows(
    samplers: Sequence[RowSampler],
    logits: npt.NDArray[np.floating],
    top: npt.NDArray[np.int64] | None,
) -> list[int | Exception]:
    """Each row's next token, as `samplers[r].choose(logits[r], top[r])` picks
    and records it, with the same rules applied to the batch at once: a step
    costs a few array operations instead of a few dozen per row (56 µs a row).
    A seed's tokens are the same either way (a test draws thousands).

    Rows that need more candidates than `top` holds (or the whole vocabulary)
    are done one by one. A row whose sampling fails gets its exception in its
    place and the other rows their tokens."""
    vocab = logits.shape[1]
    batched: list[int] = []
    if top is not None and top.shape[1] < vocab:
        for r, sampler in enumerate(samplers):
            try:
                need = sampler.candidates_needed()
            except Exception:
                continue  # one by one: the row's own sampling reports the fault
            if 0 < need <= top.shape[1]:
                batched.append(r)
    chosen: dict[int, int] = {}
    if batched and top is not None:
        try:  # changes no sampler unless it returns
            found = _choose_batched([samplers[r] for r in batched], logits, batched, top[batched])
        except Exception:
            found = {}  # one by one below, where a fault is its row's alone
            global _fell_back
            if not _fell_back:
                _fell_back = True
                log.warning("sampling a batch at once failed; sampling row by row", exc_info=True)
        chosen = {batched[i]: token for i, token in found.items()}
    tokens: list[int | Exception] = []
    for r, sampler in enumerate(samplers):
        try:
            if r in chosen:
                token = chosen[r]
                sampler.append(token)
                sampler._generated += 1
            else:
                token = sampler.choose(logits[r], top[r] if top is not None else None)
        except Exception as error:
            tokens.append(error)
        else:
            tokens.append(token)
    return tokens


def _choose_batched(
    samplers: Sequence[RowSampler],
    logits: npt.NDArray[np.floating],
    rows: list[int],
    ids: npt.NDArray[np.int64],
) -> dict[int, int]:
    """`RowSampler._choose` for `logits`' rows `rows`, whose candidates are
    `ids` (each row's top ids), in arrays; the keys are indices into `rows`.
    Draws each sampling row's uniform number last, after everything that
    could raise."""
    x = np.asarray(logits)[np.asarray(rows)[:, None], ids].astype(np.float64)
    odd = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1)
    if odd.any():  # NaN or +inf from the engine: those rows go one by one
        keep = np.flatnonzero(~odd).tolist()
        if not keep:
            return {}
        found = _choose_batched(
            [samplers[i] for i in keep], logits, [rows[i] for i in keep], ids[keep]
        )
        return {keep[i]: token for i, token in found.items()}
    width = ids.shape[1]
    params = [s.params for s in samplers]
    seen = np.zeros(x.shape, dtype=bool)
    penalty = np.ones((len(rows), 1))
    ban_rows: list[int] = []
    ban_tokens: list[int] = []
    for r, s in enumerate(samplers):
        p = params[r]
        if s._eos is not None and s._generated < p.min_new_tokens:
            ban_rows.append(r)
            ban_tokens.append(s._eos)
        if p.repetition_penalty != 1.0 and s._seen:
            flags = s._seen_flags
            seen[r] = flags[np.minimum(ids[r], flags.size - 1)] & (ids[r] < flags.size)
            penalty[r] = p.repetition_penalty
        banned = s._banned()
        ban_rows += [r] * len(banned)
        ban_tokens += banned
    x = np.where(seen, np.where(x < 0, x * penalty, x / penalty), x)
    if ban_rows:  # one comparison per (row, banned token) pair
        at = np.asarray(ban_rows)
        hit, column = np.nonzero(ids[at] == np.asarray(ban_tokens)[:, None])
        x[at[hit], column] = -np.inf
    finite = np.isfinite(x)
    out: dict[int, int] = {}
    sampling = np.array([p.do_sample for p in params])
    live = finite.any(axis=1)
    for r in np.flatnonzero(~live).tolist():  # every candidate banned: the raw argmax
        out[r] = int(np.argmax(logits[rows[r]]))
    for r in np.flatnonzero(live & ~sampling).tolist():
        out[r] = int(ids[r, int(np.argmax(x[r]))])
    picked = np.flatnonzero(live & sampling).tolist()
    if not picked:
        return out
    x, ids, finite = x[picked], ids[picked], finite[picked]
    params = [params[r] for r in picked]
    temperature = np.array([p.temperature for p in params])[:, None]
    best = np.where(finite, x, -np.inf).max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):  # far below the best: -inf, never drawn
        x = (x - best) / temperature
    top_k = np.array([p.top_k if 0 < p.top_k < width else width for p in params])[:, None]
    most = int(top_k.max())
    if most < width:  # only the best `most` of each row can be kept: sort just those
        part = np.argpartition(-x, most - 1, axis=1)
        edge = np.take_along_axis(x, part[:, most - 1 : most], 1)  # the most-th best score
        # Safe unless a score equal to that edge was left out (a tie across it,
        # which the token ids must settle): then sort the rows whole.
        if not ((np.take_along_axis(x, part[:, most:], 1) == edge) & np.isfinite(edge)).any():
            ids, x = (
                np.take_along_axis(ids, part[:, :most], 1),
                np.take_along_axis(x, part[:, :most], 1),
            )
            width = most
    # By score, ties by token id (as `np.lexsort` orders a row, but 2-D
    # lexsort took 4x as long as these two sorts): by id, then stably by score.
    by_id = np.argsort(ids, axis=1)
    ids, x = np.take_along_axis(ids, by_id, 1), np.take_along_axis(x, by_id, 1)
    order = np.argsort(-x, axis=1, kind="stable")
    ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(x, order, 1)
    scores[np.arange(width)[None, :] >= top_k] = -np.inf
    count = np.isfinite(scores).sum(axis=1)  # the kept ones are first
    probs = np.exp(scores - scores[:, :1])
    # Each row's sum as the row path takes it: sequentially over its kept scores
    # (numpy's pairwise sum would group a padded row differently).
    probs /= np.take_along_axis(np.cumsum(probs, axis=1), (count - 1)[:, None], 1)
    cumulative = np.cumsum(probs, axis=1)
    top_p = np.array([p.top_p for p in params])[:, None]
    cutoff = np.where(top_p[:, 0] < 1.0, (cumulative < top_p).sum(axis=1) + 1, count)
    cutoff = np.minimum(cutoff, count)
    draws = np.array([samplers[r]._rng.random() for r in picked])  # nothing raises after this
    total = cumulative[np.arange(len(picked)), cutoff - 1]
    below = (cumulative <= (draws * total)[:, None]) & (np.arange(width)[None, :] < cutoff[:, None])
    index = np.minimum(below.sum(axis=1), cutoff - 1)
    for i, r in enumerate(picked):
        out[r] = int(ids[i, index[i]])
    return out
