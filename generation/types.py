"""Plain dataclasses that cross the generation layer's boundary."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Literal

from generation.errors import InvalidRequest

FinishReason = Literal["length", "eos", "cancelled", "timeout", "error"]


@dataclass(frozen=True)
class GenerationParams:
    # How many tokens to write. This counts new tokens only (unlike max_length,
    # which counts the prompt too, so a long prompt would leave no room).
    max_new_tokens: int = 120
    # Below 1 sharpens the distribution; GPT-2 stories read best a little under 1.
    temperature: float = 0.9
    # Keep only the 50 likeliest tokens: cuts the long tail of nonsense.
    top_k: int = 50
    # Nucleus sampling: the smallest set of tokens holding 95 % of the mass.
    top_p: float = 0.95
    # GPT-2 loops on itself without this; about 1.2 (CTRL's value) breaks loops
    # without starving the text of common words.
    repetition_penalty: float = 1.2
    # Never repeat a 3-gram: the cheapest cure for "the the the" and copied lines.
    no_repeat_ngram_size: int = 3
    # Recorded and shown so a part can be reproduced; None picks one at random.
    seed: int | None = None
    # End-of-text is suppressed until this many tokens are written, so a "long"
    # story cannot stop after one sentence.
    min_new_tokens: int = 0
    # Greedy decoding (argmax) for tests and engine comparisons, not for stories.
    do_sample: bool = True

    def validate(self, max_new_tokens_limit: int = 1000) -> None:
        """Raise `InvalidRequest` with a human message for an out-of-range value."""
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool):
            raise InvalidRequest("max_new_tokens must be a whole number.")
        if not 1 <= self.max_new_tokens <= max_new_tokens_limit:
            raise InvalidRequest(f"max_new_tokens must be between 1 and {max_new_tokens_limit}.")
        if not _finite(self.temperature) or self.temperature <= 0 or self.temperature > 5:
            raise InvalidRequest("temperature must be greater than 0 and at most 5.")
        if not isinstance(self.top_k, int) or not 0 <= self.top_k <= 1000:
            raise InvalidRequest("top_k must be a whole number from 0 (off) to 1000.")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidRequest("top_p must be greater than 0 and at most 1.")
        if not _finite(self.repetition_penalty) or not 1 <= self.repetition_penalty <= 3:
            raise InvalidRequest("repetition_penalty must be between 1 and 3.")
        if (
            not isinstance(self.no_repeat_ngram_size, int)
            or not 0 <= self.no_repeat_ngram_size <= 10
        ):
            raise InvalidRequest("no_repeat_ngram_size must be a whole number from 0 to 10.")
        if (
            not isinstance(self.min_new_tokens, int)
            or not 0 <= self.min_new_tokens <= self.max_new_tokens
        ):
            raise InvalidRequest("min_new_tokens must be between 0 and max_new_tokens.")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise InvalidRequest("seed must be a whole number from 0 to 2^63-1.")

    def with_seed(self) -> GenerationParams:
        """These params with a concrete seed, chosen at random when absent."""
        if self.seed is not None:
            return self
        return replace(self, seed=secrets.randbits(31))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for: visible story text plus a hidden primer."""

    prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)
    # Steers GPT-2 toward a genre; fed to the model, never shown or echoed.
    primer: str = ""
    # Seconds from submission until the request is stopped; None = pool default.
    timeout_s: float | None = None
    # KoboldAI's two steering texts: the memory (who and where) goes at the top of
    # the context, after the primer; the author's note (tone, what should happen)
    # a few sentences before the end, where GPT-2 pays most attention. Neither is
    # shown or echoed; the story's oldest text gives way first to fit the context.
    memory: str = ""
    authors_note: str = ""

    def steering_bytes(self) -> int:
        """A bound on the tokens the hidden texts take (byte-level BPE never makes
        more tokens than UTF-8 bytes), with the separators around them."""
        hidden = self.primer.encode("utf-8") + self.memory.encode("utf-8")
        note = self.authors_note.encode("utf-8")
        return (
            len(hidden)
            + (len(note) + len(NOTE_OPEN) + len(NOTE_CLOSE) if note else 0)
            + (1 if self.memory else 0)
        )


# How the author's note is set into the story text (KoboldAI's convention), and
# how many sentences before the end.
NOTE_OPEN = "\n[Author's note: "
NOTE_CLOSE = "]\n"
NOTE_DEPTH_SENTENCES = 3


@dataclass(frozen=True)
class GenerationResult:
    text: str  # the continuation only, trimmed to its last full sentence
    raw_text: str  # the continuation as generated, before trimming
    prompt_tokens: int  # tokens fed to the model (primer + kept story text)
    new_tokens: int
    seed: int
    finish_reason: FinishReason
    truncated_prompt: bool  # the middle of a long story was dropped to fit
    queued_s: float
    first_token_s: float | None  # from start of generation to the first new token
    generation_s: float
    model_id: str
    backend: str

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.generation_s if self.generation_s > 0 else 0.0
