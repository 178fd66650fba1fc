"""Training data: a folder of `.txt`, `.md` and `.jsonl` files, packed into blocks.

Each `.txt` or `.md` file is one document; each line of a `.jsonl` file is one
(`{"text": "..."}` or a JSON string). Documents are tokenized, joined with the
end-of-text token (so the model learns where a text ends), cut into blocks of
`block_size` tokens, and the blocks split into train and validation sets.
Anything unreadable is refused with the file (and line) named, never skipped
in silence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

SUFFIXES = (".txt", ".md", ".jsonl")


class DataError(Exception):
    """The data folder cannot be used; one line saying which file and why."""


@dataclass
class Corpus:
    documents: list[str]
    files: list[Path]
    ignored: list[Path]  # files with other suffixes
    fingerprint: str  # changes when any file's content changes


@dataclass
class Blocks:
    train: npt.NDArray[np.int64]  # [n_train, block_size]
    validation: npt.NDArray[np.int64]  # [n_val, block_size]
    tokens: int  # tokens read, before packing
    dropped_tokens: int  # past --max-train-tokens, or the tail shorter than a block


def read_corpus(folder: Path) -> Corpus:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    # Hidden files and everything in hidden folders (.git, .ipynb_checkpoints,
    # .obsidian) are an editor's or a tool's, not texts to learn from.
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    files = [p for p in paths if p.suffix.lower() in SUFFIXES]
    ignored = [p for p in paths if p.suffix.lower() not in SUFFIXES]
    if not files:
        raise DataError(f"no .txt, .md or .jsonl files in {folder}")
    digest = hashlib.sha256()
    documents: list[str] = []
    for path in files:
        raw = path.read_bytes()
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + raw)
        text = _decode(path, raw)
        if path.suffix.lower() == ".jsonl":
            documents += _jsonl(path, text)
        elif text.strip():
            documents.append(text.strip())
    if not documents:
        raise DataError(f"the files in {folder} hold no text")
    return Corpus(documents, files, ignored, digest.hexdigest()[:16])


def _decode(path: Path, raw: bytes) -> str:
    if b"\0" in raw:
        raise DataError(f"{path} is not a text file (it holds NUL bytes)")
    try:
        return raw.decode("utf-8-sig")  # a byte order mark (Windows tools write one) is not text
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start}): "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _jsonl(path: Path, text: str) -> list[str]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise DataError(f"{path}, line {number}: not valid JSON") from None
        value = item.get("text") if isinstance(item, dict) else item
        if not isinstance(value, str):
            raise DataError(f'{path}, line {number}: expected {{"text": "..."}} or a JSON string')
        if value.strip():
            out.append(value.strip())
    return out


def pack(
    corpus: Corpus,
    encode: Callable[[str], list[int]],
    eos_id: int,
    block_size: int,
    *,
    validation_fraction: float = 0.1,
    max_train_tokens: int | None = None,
    seed: int = 0,
) -> Blocks:
    """Tokenize, join with end-of-text, cut into blocks, split off validation."""
    ids: list[int] = []
    for document in corpus.documents:
        ids += encode(document)
        ids.append(eos_id)
    total = len(ids)
    count = total // block_size
    if count < 2:
        raise DataError(
            f"the data holds {total} tokens, less than two blocks of {block_size} "
            "(one to train on, one to validate): add text or lower --block-size"
        )
    blocks = np.asarray(ids[: count * block_size], dtype=np.int64).reshape(count, block_size)
    order = np.random.default_rng(seed).permutation(count)
    n_val = min(count - 1, max(1, round(count * validation_fraction)))
    validation, train = blocks[order[:n_val]], blocks[order[n_val:]]
    dropped = total - count * block_size
    if max_train_tokens is not None and len(train) * block_size > max_train_tokens:
        keep = max(1, max_train_tokens // block_size)
        dropped += (len(train) - keep) * block_size
        train = train[:keep]
    return Blocks(train, validation, total, dropped)
