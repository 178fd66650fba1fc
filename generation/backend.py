"""The backend interface: what the pool's worker thread asks of a model.

A backend generates for a batch of `Job`s (generation/job.py). For each new
token it calls `job.accept(token)`, which streams text to the caller, and it
drops a job from its batch once `job.finished` is true (end of text, length,
cancellation or time limit). `admit(n)` hands it up to n newly queued jobs
between steps, so a backend that can, batches continuously.

Everything here runs on the pool's worker thread, which owns the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from generation.job import Job


class Backend(Protocol):
    name: str
    model_id: str
    context_size: int
    max_batch_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def generate(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> None:
        """Generate until every job, including admitted ones, is finished."""
        ...

    def wake(self) -> None:
        """Called from the event loop when a job is queued or cancelled, so a
        backend that waits on I/O can look again; local backends look each token."""
        ...

    def close(self) -> None: ...
