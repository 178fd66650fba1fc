"""Text hygiene: what the model writes is cleaned, trimmed and streamed whole."""

from __future__ import annotations

import pytest

from generation.text import StreamDecoder, clean, trim_to_sentence


def test_clean_removes_endoftext_controls_and_replacement_chars() -> None:
    dirty = "A<|endoftext|>B\x00C\x1b[31mD\r\nE\tF\ufffdG\u200b"
    assert clean(dirty) == "ABC[31mD\nE\tFG\u200b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" He ran. She stayed and", " He ran."),
        (' "Stop!" he said. Then the', ' "Stop!" he said.'),
        (" Was it? It was… and then", " Was it? It was…"),
        (" no sentence end at all", " no sentence end at all"),
        (" Dr. Who went", " Dr."),  # an abbreviation reads like an end; acceptable
    ],
)
def test_trim_to_sentence(text: str, expected: str) -> None:
    assert trim_to_sentence(text) == expected


def test_stream_decoder_holds_back_half_characters() -> None:
    data = "é😀".encode()
    # A byte-level "tokenizer": each id is one byte.
    decoder = StreamDecoder(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    deltas = [decoder.push(byte) for byte in data]
    assert "".join(deltas) == "é😀"
    assert all("\ufffd" not in delta for delta in deltas)
    assert deltas[0] == ""  # the first byte of é alone is not yet a character
