"""The decoding loop every local backend shares.

A backend supplies a `StepModel` (prefill a batch of prompts, step a batch by
one token, select rows, merge two batches); this loop does the rest: sampling
through each job's own sampler, streaming, stopping rows that are done or
cancelled (which frees their place at once), and admitting requests that
arrived while the batch ran, at the next step: continuous batching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from generation.errors import GenerationError
from generation.job import Job
from generation.sampling import choose_rows
from generation.types import GenerationParams, GenerationRequest

log = logging.getLogger(__name__)

# The story `LocalBackend.rehearse` starts at load.
REHEARSAL = "The rain had stopped by the time the ferry reached the harbour."

Logits = npt.NDArray[np.float32]


class StepModel(Protocol):
    forward_calls: int

    def prefill(self, rows: Sequence[Sequence[int]], after: Any = None) -> tuple[Any, Logits]:
        """Start these prompts; `after`, the running batch's state, if any (an
        engine that keeps rows in place puts the new ones after its rows)."""
        ...

    def step(self, state: Any, tokens: Sequence[int]) -> tuple[Any, Logits]: ...

    def select(self, state: Any, keep: Sequence[int]) -> Any: ...

    def merge(self, first: Any, second: Any) -> Any: ...

    def expect_top(self, width: int) -> None:
        """The next prefill or step will be asked for `top_ids(width)` (0: not at
        all): an engine that ranks inside its own run can do it there."""
        ...

    def top_ids(self, width: int) -> Any:
        """Each row's `width` highest-scoring ids from the last logits, or None."""
        ...


def distinct_rows(rows: Sequence[Sequence[int]]) -> tuple[list[Sequence[int]], list[int]]:
    """The distinct prompts among `rows`, in order of first appearance, and for
    each row the index of its prompt among them (never more than the row's own
    index). A vote's candidates share one prompt: an engine prefills it once."""
    first: dict[tuple[int, ...], int] = {}
    distinct: list[Sequence[int]] = []
    index: list[int] = []
    for row in rows:
        key = tuple(row)
        if key not in first:
            first[key] = len(distinct)
            distinct.append(row)
        index.append(first[key])
    return distinct, index


def _advance(jobs: list[Job], logits: Logits, top: Any) -> None:
    """Sample every row's next token (the batch at once: `choose_rows`), then
    record and stream each. A failure is its row's alone: that story ends with
    an error and the rest of the batch goes on."""
    samplers = [job.sampler for job in jobs]
    if all(samplers):
        tokens = choose_rows(samplers, logits, top)  # type: ignore[arg-type]
    else:  # a job without a sampler (not prepared) fails in its own `choose`
        tokens = [
            _choose(job, logits[row], top[row] if top is not None else None)
            for row, job in enumerate(jobs)
        ]
    for job, token in zip(jobs, tokens, strict=True):
        _accept(job, token)


def _choose(job: Job, logits: Logits, top: Any) -> int | Exception:
    try:
        return job.choose(logits, top)
    except Exception as error:
        return error


def _accept(job: Job, token: int | Exception) -> None:
    try:
        if isinstance(token, Exception):
            raise token
        job.accept(token)
    except Exception as error:
        job.log(
            log,
            logging.ERROR,
            "one story failed while sampling or decoding; its batch goes on",
            exc_info=True,
        )
        job.fail(
            GenerationError(
                f"This story could not be written ({type(error).__name__}); please try again."
            )
        )


def _need(job: Job) -> int:
    try:
        return job.sampler.candidates_needed() if job.sampler else 0
    except Exception:
        return 0  # the whole vocabulary; the row's own sampling reports the fault


def _width(model: StepModel, jobs: list[Job]) -> int:
    """How many best candidates every row needs (0: some row needs them all);
    told to the engine before its run."""
    needs = [_need(job) for job in jobs]
    width = 0 if not needs or min(needs) == 0 else max(needs)
    model.expect_top(width)
    return width


def _top(model: StepModel, width: int) -> Any:
    """Ask the engine once per step for each row's best candidates (None: none)."""
    return model.top_ids(width) if width else None


def run_decode_loop(
    model: StepModel,
    jobs: list[Job],
    admit: Callable[[int], list[Job]],
    max_batch: int,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Generate until every job, admitted ones included, is done; `on_step` is
    told the rows of each decoding step (the batch size, for metrics)."""
    active: list[Job] = []
    state: Any = None
    pending = list(jobs)
    while True:
        if pending:
            for job in pending:
                job.start()
            width = _width(model, pending)
            new_state, logits = model.prefill([job.prompt_ids for job in pending], state)
            top = _top(model, width)
            going = [row for row, job in enumerate(pending) if not job.check_stop()]
            if going:
                _advance(
                    [pending[row] for row in going],
                    logits[going],
                    top[going] if top is not None else None,
                )
            state = new_state if state is None else model.merge(state, new_state)
            active += pending
            pending = []
        active, state = _drop_finished(model, active, state)
        if active:
            width = _width(model, active)
            state, logits = model.step(state, [job.generated[-1] for job in active])
            if on_step is not None:
                on_step(len(active))
            _advance(active, logits, _top(model, width))
            active, state = _drop_finished(model, active, state)
        room = max_batch - len(active)
        pending = admit(room) if room > 0 else []
        if not active and not pending:
            return


def fill_holes(keep: Sequence[int]) -> list[int]:
    """The order the rows in `keep` (increasing) take from row 0: each stays
    where it is if it can, and the last rows move into the places of rows that
    finished. An engine that keeps rows in place then moves at most one row
    per finished one, not every row after it (which cost 41 ms a finished story at
    18 rows of GPT-2 small)."""
    count = len(keep)
    kept = set(keep)
    movers = iter(row for row in keep if row >= count)
    return [row if row in kept else next(movers) for row in range(count)]


def _drop_finished(model: StepModel, active: list[Job], state: Any) -> tuple[list[Job], Any]:
    keep = [row for row, job in enumerate(active) if not job.check_stop()]
    if len(keep) == len(active):
        return active, state
    order = fill_holes(keep)
    state = model.select(state, order)  # also when none is kept: the engine may free memory
    return [active[row] for row in order] if order else [], state if order else None


class LocalBackend:
    """What the local backends share: a Hugging Face tokenizer and a StepModel
    run by `run_decode_loop`. Subclasses set these attributes in __init__."""

    name: str
    model_id: str
    context_size: int
    max_batch_size: int
    eos_token_id: int | None
    tokenizer: Any
    steps: StepModel
    # Told the rows of each decoding step, on the worker thread (app/metrics.py
    # sets it): must be quick and must not raise.
    on_step: Callable[[int], None] | None = None

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    @property
    def forward_calls(self) -> int:
        return self.steps.forward_calls

    def wake(self) -> None:
        """Nothing to do: the decoding loop looks at the queue every token."""

    def close(self) -> None:
        """Nothing to release (subclasses that hold more say so)."""

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        run_decode_loop(self.steps, jobs, admit, self.max_batch_size, self.on_step)

    def rehearse(self) -> None:
        """A story of two tokens at load, through all the code a story runs:
        the tokenizer both ways, the sampler and numpy's generators, the
        decoding loop, the step model. Code is read from disk on first use,
        and where the system had dropped it from its page cache (numpy.random
        alone is a dozen libraries) the first person's first token waited for
        it: 39-56 ms against 32-34. Not counted in `forward_calls`."""
        now = time.monotonic()
        params = GenerationParams(max_new_tokens=2, seed=0)
        job = Job(
            request=GenerationRequest(REHEARSAL, params),
            params=params,
            submitted_at=now,
            deadline=now + 600,
            on_text=lambda _: None,
            on_start=lambda: None,
            on_finish=lambda _: None,
            eos_token_id=self.eos_token_id,
        )
        job.prepare(self)
        calls, on_step = self.steps.forward_calls, self.on_step
        self.on_step = None  # a story nobody asked for: not in the metrics
        try:
            self.generate([job], lambda _: [])  # the engine's own way (torch: inference mode)
        finally:
            self.steps.forward_calls, self.on_step = calls, on_step
        if job.error is not None:
            raise job.error


def greedy_tokens(model: StepModel, rows: Sequence[Sequence[int]], count: int) -> list[list[int]]:
    """Argmax decoding of a batch, for comparing engines token for token."""
    state, logits = model.prefill(rows)
    out = [[int(np.argmax(row))] for row in logits]
    for _ in range(count - 1):
        state, logits = model.step(state, [tokens[-1] for tokens in out])
        for tokens, row in zip(out, logits, strict=True):
            tokens.append(int(np.argmax(row)))
    return out
