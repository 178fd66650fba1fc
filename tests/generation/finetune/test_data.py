"""generation.finetune.data: reading a folder of texts and packing it into blocks.

`pack` is given a toy tokenizer (one id per word), so the blocks can be checked
token by token; the real tokenizer is exercised by tests/finetune/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generation.finetune.data import Corpus, DataError, pack, read_corpus

EOS = 0


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def corpus_of(*documents: str) -> Corpus:
    return Corpus(list(documents), [], [], "x")


def encode(text: str) -> list[int]:
    return [int(word) for word in text.split()]


# ----------------------------------------------------------------- read_corpus
def test_reads_txt_md_and_jsonl_in_subfolders(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": "  From a dict.  "}),
        "",
        json.dumps("From a string."),
        json.dumps({"text": "   "}),  # blank: skipped
        json.dumps({"text": "Ünïcödé ✓", "source": "extra keys are fine"}),
    ]
    write(
        tmp_path,
        {
            "b.txt": "\n  Second file.\n\n",
            "a.md": "# First file\n\nIn Markdown.",
            "sub/c.jsonl": "\n".join(lines) + "\n",
            "sub/deeper/D.TXT": "Upper-case suffix.",
            "sub/empty.txt": "  \n\t\n",
            "cover.png": b"\x89PNG\r\n",
            "README": "no suffix",
            ".notes.txt": "a hidden file",
        },
    )
    corpus = read_corpus(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in corpus.files] == [
        "a.md",
        "b.txt",
        "sub/c.jsonl",
        "sub/deeper/D.TXT",
        "sub/empty.txt",
    ]
    assert sorted(p.name for p in corpus.ignored) == ["README", "cover.png"]
    assert corpus.documents == [
        "# First file\n\nIn Markdown.",
        "Second file.",
        "From a dict.",
        "From a string.",
        "Ünïcödé ✓",
        "Upper-case suffix.",
    ]
    assert len(corpus.fingerprint) == 16 and int(corpus.fingerprint, 16) >= 0


def test_the_fingerprint_follows_content_and_names_only(tmp_path: Path) -> None:
    folder = write(tmp_path / "data", {"a.txt": "One.", "b.md": "Two."})
    first = read_corpus(folder).fingerprint
    assert read_corpus(folder).fingerprint == first
    (folder / "cover.png").write_bytes(b"ignored")
    assert read_corpus(folder).fingerprint == first
    (folder / "a.txt").write_text("One!")
    changed = read_corpus(folder).fingerprint
    assert changed != first
    (folder / "a.txt").rename(folder / "c.txt")
    assert read_corpus(folder).fingerprint not in (first, changed)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"text": "unterminated', "not valid JSON"),
        ('{"text": 5}', 'expected {"text": "..."} or a JSON string'),
        ('{"body": "wrong key"}', 'expected {"text": "..."}'),
        ("[1, 2]", 'expected {"text": "..."}'),
        ("null", 'expected {"text": "..."}'),
    ],
)
def test_a_bad_jsonl_line_is_named(tmp_path: Path, line: str, why: str) -> None:
    good = json.dumps({"text": "fine"})
    write(tmp_path, {"x/stories.jsonl": f"{good}\n\n{good}\n{line}\n{good}\n"})
    with pytest.raises(DataError) as caught:
        read_corpus(tmp_path)
    message = str(caught.value)
    assert f"stories.jsonl, line 4: {why}" in message  # counting the blank line


def test_a_file_that_is_not_utf8_is_named_with_the_byte(tmp_path: Path) -> None:
    write(tmp_path, {"ok.txt": "Fine.", "old.txt": "Caf\xe9 au lait".encode("latin-1")})
    with pytest.raises(DataError, match=r"old\.txt is not UTF-8 \(byte 0xe9 at offset 3\)"):
        read_corpus(tmp_path)


def test_a_binary_file_with_a_text_suffix_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"weights.txt": b"abc\x00\x01\x02"})
    with pytest.raises(DataError, match=r"weights\.txt is not a text file \(it holds NUL bytes\)"):
        read_corpus(tmp_path)


def test_an_empty_or_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nowhere")
    write(tmp_path, {"cover.png": b"\x89PNG", ".hidden.txt": "hidden"})
    with pytest.raises(DataError, match=r"no \.txt, \.md or \.jsonl files in"):
        read_corpus(tmp_path)


def test_files_without_text_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"a.txt": " \n ", "b.jsonl": '{"text": ""}\n\n"  "\n'})
    with pytest.raises(DataError, match="hold no text"):
        read_corpus(tmp_path)


def test_files_in_hidden_folders_are_not_read(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "story.md": "The story.",
            ".ipynb_checkpoints/story-checkpoint.md": "The story.",
            ".git/description.txt": "Unnamed repository.",
        },
    )
    assert read_corpus(tmp_path).documents == ["The story."]


@pytest.mark.parametrize(
    ("name", "content"),
    [("notepad.txt", "A story."), ("export.jsonl", json.dumps({"text": "A story."}))],
)
def test_a_byte_order_mark_is_not_text(tmp_path: Path, name: str, content: str) -> None:
    write(tmp_path, {name: b"\xef\xbb\xbf" + content.encode()})
    assert read_corpus(tmp_path).documents == ["A story."]


# ------------------------------------------------------------------------ pack
def numbered(documents: int, words: int) -> Corpus:
    """Documents of distinct ids (never EOS), so every token can be traced."""
    return corpus_of(
        *(" ".join(str(d * 1000 + w + 1) for w in range(words)) for d in range(documents))
    )


def test_documents_are_joined_with_end_of_text_and_cut_into_blocks() -> None:
    corpus = numbered(3, 5)  # 3 * (5 + 1) = 18 tokens
    ids = [t for doc in corpus.documents for t in [*encode(doc), EOS]]
    blocks = pack(corpus, encode, EOS, 4, validation_fraction=0.25, seed=1)
    assert blocks.tokens == 18 and blocks.dropped_tokens == 2  # the tail, shorter than a block
    assert blocks.train.dtype == np.int64 and blocks.train.shape == (3, 4)
    assert blocks.validation.shape == (1, 4)
    rows = sorted(map(tuple, np.concatenate([blocks.train, blocks.validation]).tolist()))
    assert rows == sorted(tuple(ids[i : i + 4]) for i in range(0, 16, 4))
    assert ids[5] == ids[11] == EOS  # one end-of-text after each document


@pytest.mark.parametrize(
    ("fraction", "validation"), [(0.0, 1), (0.1, 2), (0.26, 5), (0.5, 10), (1.0, 19)]
)
def test_validation_is_a_fraction_but_never_empty_nor_everything(
    fraction: float, validation: int
) -> None:
    blocks = pack(numbered(20, 9), encode, EOS, 10, validation_fraction=fraction)
    assert len(blocks.validation) == validation
    assert len(blocks.train) == 20 - validation


def test_the_split_is_deterministic_by_seed() -> None:
    corpus = numbered(40, 9)
    one = pack(corpus, encode, EOS, 10, seed=7)
    again = pack(corpus, encode, EOS, 10, seed=7)
    other = pack(corpus, encode, EOS, 10, seed=8)
    assert np.array_equal(one.train, again.train)
    assert np.array_equal(one.validation, again.validation)
    assert not np.array_equal(one.validation, other.validation)
    # Either way no block is in both sets.
    train = set(map(tuple, one.train.tolist()))
    assert not train & set(map(tuple, one.validation.tolist()))


def test_max_train_tokens_drops_blocks_and_says_how_many_tokens() -> None:
    corpus = numbered(20, 9)  # 200 tokens: 20 blocks of 10
    full = pack(corpus, encode, EOS, 10, validation_fraction=0.1)
    capped = pack(corpus, encode, EOS, 10, validation_fraction=0.1, max_train_tokens=55)
    assert len(full.train) == 18 and full.dropped_tokens == 0
    assert len(capped.train) == 5  # whole blocks within the cap
    assert capped.dropped_tokens == 13 * 10
    assert capped.tokens == 200
    assert np.array_equal(capped.validation, full.validation)  # validation is not capped
    assert np.array_equal(capped.train, full.train[:5])
    under_a_block = pack(corpus, encode, EOS, 10, max_train_tokens=3)
    assert len(under_a_block.train) == 1  # at least one block to train on
    not_reached = pack(corpus, encode, EOS, 10, max_train_tokens=10_000)
    assert not_reached.dropped_tokens == 0 and len(not_reached.train) == 18


def test_fewer_than_two_blocks_is_refused() -> None:
    with pytest.raises(DataError, match=r"holds 6 tokens, less than two blocks of 4"):
        pack(numbered(1, 5), encode, EOS, 4)
    assert len(pack(numbered(1, 7), encode, EOS, 4).train) == 1  # exactly two blocks
