"""The per-request state a backend works on: `Job`.

A job holds one request's prompt ids, its sampler, its text stream and its
timings; `prepare` assembles the context (memory, prompt, author's note) and
`accept` takes each new token. Jobs live on the pool's worker thread.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.errors import GenerationError
from generation.sampling import RowSampler
from generation.text import StreamDecoder, TextStream, trim_to_sentence
from generation.types import (
    NOTE_CLOSE,
    NOTE_DEPTH_SENTENCES,
    NOTE_OPEN,
    FinishReason,
    GenerationParams,
    GenerationRequest,
    GenerationResult,
)

if TYPE_CHECKING:
    from generation.backend import Backend


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s+")


def note_position(text: str, depth: int = NOTE_DEPTH_SENTENCES) -> int:
    """Where the author's note goes: before the last `depth` sentences of
    `text` (its start, for a shorter text)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return ends[-depth] if len(ends) >= depth else 0


@dataclass(eq=False)  # identity: a job is one request, hashed into the running set
class Job:
    """One request on the worker: prompt ids, sampler, stream state, timings."""

    request: GenerationRequest
    params: GenerationParams  # with a concrete seed
    submitted_at: float
    deadline: float
    on_text: Callable[[str], None]
    on_start: Callable[[], None]
    on_finish: Callable[[Job], None]
    prompt_ids: list[int] = field(default_factory=list)
    truncated_prompt: bool = False
    eos_token_id: int | None = None
    generated: list[int] = field(default_factory=list)
    cancel_requested: bool = False
    finish_reason: FinishReason | None = None
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    close_requested: bool = False  # the pool is shutting down: fail, not cancel
    model_id: str = ""
    backend_name: str = ""
    sampler: RowSampler | None = None
    decoder: StreamDecoder | TextStream | None = None
    remote_tokens: int = 0  # tokens a remote engine reports writing (it keeps the ids)
    error: GenerationError | None = None  # why the backend gave up on this job
    # The context of the code that asked for it, with its log ids (request,
    # story, guild): the worker thread logs about this job inside a copy of it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)

    # Story text longer than this many characters is cut to its tail before
    # tokenizing (a long story's middle is dropped anyway): far more than 1024
    # tokens ever need, and it bounds the work. Not a limit on what people type.
    MAX_CONTEXT_CHARS = 40_000

    def log(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        *args: object,
        exc_info: bool = False,
    ) -> None:
        """Log about this job with the ids of whoever asked for it, from any thread."""
        self.context.copy().run(logger.log, level, message, *args, exc_info=exc_info)

    def prepare(self, backend: Backend) -> None:
        """Tokenize and fit the context; the worker calls this before generating.

        The context is: the hidden primer, the memory, the story with the author's
        note set a few sentences before its end, then room for the new tokens. A
        long story keeps all of the steering and its most recent text, dropping
        its oldest text first, so everything always fits the model's positions.
        """
        self.model_id, self.backend_name = backend.model_id, backend.name
        request = self.request
        primer_ids = backend.encode(request.primer) if request.primer else []
        memory_ids = backend.encode(request.memory.strip() + "\n") if request.memory else []
        prompt = request.prompt
        if len(prompt) > self.MAX_CONTEXT_CHARS:
            prompt = prompt[-self.MAX_CONTEXT_CHARS :]
            self.truncated_prompt = True
        # A trailing space becomes its own token, which GPT-2 rarely saw: drop it.
        prompt = prompt.rstrip(" ")
        note_ids: list[int] = []
        before, after = prompt, ""
        if request.authors_note.strip():
            cut = note_position(prompt)
            before, after = prompt[:cut].rstrip(" "), prompt[cut:].lstrip(" ")
            note_ids = backend.encode(NOTE_OPEN + request.authors_note.strip() + NOTE_CLOSE)
        before_ids = backend.encode(before) if before else []
        after_ids = backend.encode(after) if after else []
        steering = len(primer_ids) + len(memory_ids) + len(note_ids)
        budget = backend.context_size - steering - self.params.max_new_tokens
        if budget < 1:
            raise ValueError("no room for the story in the context")  # validated earlier
        excess = len(before_ids) + len(after_ids) - budget
        if excess > 0:  # the oldest text gives way: before the note, then after it
            self.truncated_prompt = True
            dropped = min(excess, len(before_ids))
            before_ids = before_ids[dropped:]
            after_ids = after_ids[excess - dropped :]
        self.prompt_ids = primer_ids + memory_ids + before_ids + note_ids + after_ids
        self.sampler = RowSampler(self.params, self.prompt_ids, self.eos_token_id)
        self.decoder = StreamDecoder(backend.decode)

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.on_start()

    def choose(self, logits: object, top: object = None) -> int:
        assert self.sampler is not None
        return self.sampler.choose(logits, top)  # type: ignore[arg-type]

    def accept(self, token: int) -> None:
        """Record a new token; stream its text; decide whether the job is done."""
        if self.finished:
            return
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        if self.eos_token_id is not None and token == self.eos_token_id:
            self._finish("eos")
            return
        self.generated.append(token)
        assert isinstance(self.decoder, StreamDecoder)
        delta = self.decoder.push(token)
        if delta:
            self.on_text(delta)
        if len(self.generated) >= self.params.max_new_tokens:
            self._finish("length")
        else:
            self.check_stop(now)

    def accept_text(self, text: str, tokens: int = 1) -> None:
        """Record text a remote engine wrote (it tokenizes on its side)."""
        if self.finished:
            return
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        if not isinstance(self.decoder, TextStream):
            self.decoder = TextStream()
        self.remote_tokens += tokens
        delta = self.decoder.push(text)
        if delta:
            self.on_text(delta)
        if self.new_tokens >= self.params.max_new_tokens:
            self._finish("length")
        else:
            self.check_stop(now)

    def end(self, reason: FinishReason) -> None:
        """The engine says the job is done (a remote server's finish_reason)."""
        if not self.finished:
            self._finish(reason)

    def fail(self, error: GenerationError) -> None:
        """The backend cannot finish this job: the caller gets `error`."""
        if not self.finished:
            self.error = error
            self._finish("error")

    @property
    def new_tokens(self) -> int:
        return len(self.generated) + self.remote_tokens

    def check_stop(self, now: float | None = None) -> bool:
        """Stop for cancellation or the time limit; True when the job is done."""
        if self.finished:
            return True
        if self.cancel_requested or self.close_requested:
            self._finish("cancelled")
        elif (now if now is not None else time.monotonic()) >= self.deadline:
            self._finish("timeout")
        return self.finished

    def _finish(self, reason: FinishReason) -> None:
        self.finish_reason = reason
        self.finished_at = time.monotonic()
        self.on_finish(self)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def result(self) -> GenerationResult:
        assert self.finish_reason is not None and self.params.seed is not None
        raw = self.decoder.text if self.decoder else ""
        text = raw if self.finish_reason == "eos" else trim_to_sentence(raw)
        started = self.started_at or self.submitted_at
        finished = self.finished_at or time.monotonic()
        return GenerationResult(
            text=text,
            raw_text=raw,
            prompt_tokens=len(self.prompt_ids),
            new_tokens=self.new_tokens,
            seed=self.params.seed,
            finish_reason=self.finish_reason,
            truncated_prompt=self.truncated_prompt,
            queued_s=started - self.submitted_at,
            first_token_s=(self.first_token_at - started) if self.first_token_at else None,
            generation_s=finished - started,
            model_id=self.model_id,
            backend=self.backend_name,
        )
