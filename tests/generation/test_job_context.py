"""Job.prepare: how the context is built from the primer, the memory, the story
and the author's note, and what gives way when it does not fit."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from generation.errors import PromptTooLong
from generation.job import Job, note_position
from generation.pool import GenerationPool
from generation.types import GenerationParams, GenerationRequest


class Bytes:
    """A byte-level 'tokenizer' backend: one id per UTF-8 byte, so the context
    can be read back exactly."""

    name = "bytes"
    model_id = "bytes"
    max_batch_size = 8
    eos_token_id = None

    def __init__(self, context_size: int = 1024) -> None:
        self.context_size = context_size

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def context_of(request: GenerationRequest, context_size: int = 1024) -> str:
    job = Job(
        request=request,
        params=request.params,
        submitted_at=0.0,
        deadline=1.0,
        on_text=lambda _: None,
        on_start=lambda: None,
        on_finish=lambda _: None,
    )
    backend = Bytes(context_size)
    job.prepare(backend)  # type: ignore[arg-type]
    return backend.decode(job.prompt_ids)


STORY = "One. Two. Three. Four. Five."
PARAMS = GenerationParams(max_new_tokens=10, seed=1)


def test_memory_goes_after_the_primer_and_the_note_three_sentences_before_the_end() -> None:
    request = GenerationRequest(
        STORY, PARAMS, primer="[crime]\n", memory=" Ada is a detective. ", authors_note=" Dark. "
    )
    assert context_of(request) == (
        "[crime]\nAda is a detective.\nOne. Two.\n[Author's note: Dark.]\nThree. Four. Five."
    )


def test_without_notes_the_context_is_the_primer_and_the_story() -> None:
    assert context_of(GenerationRequest(STORY + "  ", PARAMS, primer="P: ")) == "P: " + STORY


def test_a_short_story_gets_its_note_before_all_of_it() -> None:
    request = GenerationRequest("Just one line", PARAMS, authors_note="Tense")
    assert context_of(request) == "\n[Author's note: Tense]\nJust one line"
    assert note_position("One. Two. Three") == 0
    assert note_position("One. Two. Three. Four") == len("One. ")


def test_the_oldest_story_text_gives_way_first_and_the_steering_stays() -> None:
    memory, note = "MEMORY", "NOTE"
    request = GenerationRequest("a" * 300 + ". B. C. D.", PARAMS, memory=memory, authors_note=note)
    context = context_of(request, context_size=100)
    assert len(context.encode()) == 100 - PARAMS.max_new_tokens
    assert context.startswith("MEMORY\n") and "[Author's note: NOTE]\nB. C. D." in context
    assert "a" in context  # what is left of the oldest text is its newest part
    # When even the text after the note does not fit, it loses its oldest bytes.
    long_tail = GenerationRequest(
        "x. " + "b" * 50 + ". " + "c" * 50 + ". D.", PARAMS, memory=memory, authors_note=note
    )
    squeezed = context_of(long_tail, context_size=60)
    assert squeezed.startswith("MEMORY\n\n[Author's note: NOTE]\n") and squeezed.endswith(". D.")


async def test_steering_that_leaves_no_room_is_refused_before_queueing(make_pool) -> None:  # type: ignore[no-untyped-def]
    async with make_pool() as pool:
        assert isinstance(pool, GenerationPool)
        memory = "😀" * 250  # 1,000 bytes: with 100 new tokens, over the 1,024 positions
        request = GenerationRequest("Once", GenerationParams(max_new_tokens=100), memory=memory)
        with pytest.raises(PromptTooLong, match="memory and author's note"):
            pool.validate(request)
        pool.validate(GenerationRequest("Once", GenerationParams(max_new_tokens=10), memory=memory))
