"""The decoding loop every local backend shares.

A backend supplies a `StepModel` (prefill a batch of prompts, step a batch by
one token, select rows, merge two batches); this loop does the rest: sampling
through each job's own sampler, streaming, stopping rows that are done or
cancelled (which frees their place at once), and admitting requests that
arrived while the batch ran, at the next step: continuous batching.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from generation.backend import Job
from generation.errors import GenerationError

log = logging.getLogger(__name__)

Logits = npt.NDArray[np.float32]


class StepModel(Protocol):
    forward_calls: int

    def prefill(self, rows: Sequence[Sequence[int]]) -> tuple[Any, Logits]: ...

    def step(self, state: Any, tokens: Sequence[int]) -> tuple[Any, Logits]: ...

    def select(self, state: Any, keep: Sequence[int]) -> Any: ...

    def merge(self, first: Any, second: Any) -> Any: ...

    def top_ids(self, width: int) -> Any:
        """Each row's `width` highest-scoring ids from the last logits, or None."""
        ...


def _advance(job: Job, logits: Logits, top: Any) -> None:
    """Sample, record and stream one row's next token. A failure here is that
    row's alone: it ends with an error and the rest of the batch goes on."""
    try:
        job.accept(job.choose(logits, top))
    except Exception as error:
        log.exception("one story failed while sampling or decoding; its batch goes on")
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


def _tops(model: StepModel, jobs: list[Job]) -> list[Any]:
    """Ask the engine once per step for each row's best candidates."""
    needs = [_need(job) for job in jobs]
    if not needs or min(needs) == 0:
        return [None] * len(jobs)
    top = model.top_ids(max(needs))
    return [None] * len(jobs) if top is None else list(top)


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
            new_state, logits = model.prefill([job.prompt_ids for job in pending])
            tops = _tops(model, pending)
            for row, job in enumerate(pending):
                if not job.check_stop():
                    _advance(job, logits[row], tops[row])
            state = new_state if state is None else model.merge(state, new_state)
            active += pending
            pending = []
        active, state = _drop_finished(model, active, state)
        if active:
            state, logits = model.step(state, [job.generated[-1] for job in active])
            if on_step is not None:
                on_step(len(active))
            tops = _tops(model, active)
            for row, job in enumerate(active):
                _advance(job, logits[row], tops[row])
            active, state = _drop_finished(model, active, state)
        room = max_batch - len(active)
        pending = admit(room) if room > 0 else []
        if not active and not pending:
            return


def _drop_finished(model: StepModel, active: list[Job], state: Any) -> tuple[list[Job], Any]:
    keep = [row for row, job in enumerate(active) if not job.check_stop()]
    if len(keep) == len(active):
        return active, state
    if not keep:
        return [], None
    return [active[row] for row in keep], model.select(state, keep)


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

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        run_decode_loop(self.steps, jobs, admit, self.max_batch_size, self.on_step)


def greedy_tokens(model: StepModel, rows: Sequence[Sequence[int]], count: int) -> list[list[int]]:
    """Argmax decoding of a batch, for comparing engines token for token."""
    state, logits = model.prefill(rows)
    out = [[int(np.argmax(row))] for row in logits]
    for _ in range(count - 1):
        state, logits = model.step(state, [tokens[-1] for tokens in out])
        for tokens, row in zip(out, logits, strict=True):
            tokens.append(int(np.argmax(row)))
    return out
