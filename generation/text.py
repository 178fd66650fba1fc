"""Text hygiene between GPT-2 and people.

- `clean` removes what must never reach a user: `<|endoftext|>`, control
  characters (newlines and tabs stay) and the replacement character left by
  byte-level tokens that do not form UTF-8.
- `trim_to_sentence` ends a continuation at its last complete sentence.
- `StreamDecoder` turns token ids into text deltas without splitting a UTF-8
  character that spans two byte-level tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

ENDOFTEXT = "<|endoftext|>"

# A sentence ends with . ! ? or … possibly followed by closing quotes/brackets,
# then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def clean(text: str) -> str:
    text = text.replace(ENDOFTEXT, "").replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch
        for ch in text
        if ch in "\n\t" or (ch != "\ufffd" and unicodedata.category(ch) not in ("Cc", "Cs"))
    )


def trim_to_sentence(text: str) -> str:
    """Cut an unfinished last sentence; keep the text whole when it has no end."""
    last = None
    for match in _SENTENCE_END.finditer(text):
        last = match
    if last is None:
        return text.rstrip()
    return text[: last.end()].rstrip()


class StreamDecoder:
    """Incremental detokenizer: feed ids, get only the newly completed text."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        raw = self._decode(self._ids)
        # Byte-level BPE can split one character over two tokens: wait for the rest.
        if raw.endswith("\ufffd"):
            return ""
        text = clean(raw)
        if not text.startswith(self._emitted):
            # Decoding is not always prefix-stable across merges; emit nothing
            # rather than a wrong delta, the final text replaces the stream.
            self._emitted = text
            return ""
        delta = text[len(self._emitted) :]
        self._emitted = text
        return delta

    @property
    def text(self) -> str:
        return clean(self._decode(self._ids))


class TextStream:
    """The `StreamDecoder` of a remote engine, which sends text, not ids."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def push(self, text: str) -> str:
        delta = clean(text)
        self._parts.append(delta)
        return delta

    @property
    def text(self) -> str:
        return "".join(self._parts)
