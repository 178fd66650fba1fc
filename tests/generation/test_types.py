"""GenerationParams: validation with a message naming the field, and seeds."""

from __future__ import annotations

import pytest

from generation.errors import InvalidRequest
from generation.types import GenerationParams


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0),
        ("temperature", -1.0),
        ("temperature", float("nan")),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 5000),
        ("max_new_tokens", 1.5),
        ("top_k", -1),
        ("repetition_penalty", 0.5),
        ("no_repeat_ngram_size", -2),
        ("seed", -1),
        ("min_new_tokens", 500),
    ],
)
def test_out_of_range_params_are_refused_with_a_message(field: str, value: object) -> None:
    params = GenerationParams(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=field):
        params.validate(max_new_tokens_limit=1000)


def test_defaults_are_valid_and_seed_is_filled() -> None:
    params = GenerationParams()
    params.validate()
    assert params.seed is None
    seeded = params.with_seed()
    assert isinstance(seeded.seed, int) and seeded.with_seed() == seeded
