"""Finding, checking and loading a model folder, the one path for every model.

The real GPT-2 (downloaded by `download_model.py`) and the tiny test model
(`download_model.py --tiny`) are loaded by exactly this code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from generation.errors import ModelLoadError

log = logging.getLogger(__name__)

MANIFEST = "storybot.json"  # written by download_model.py once a folder loads
TOKENIZER_FILES = ("tokenizer.json",)
LEGACY_TOKENIZER_FILES = ("vocab.json", "merges.txt")


def _has_weights(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (
        folder / "model.safetensors.index.json"
    ).is_file()


def check_model_dir(folder: Path) -> None:
    """Raise `ModelLoadError` saying what is wrong and how to fix it."""
    if not folder.exists():
        raise ModelLoadError(
            f"model folder {folder} does not exist: run `python download_model.py` "
            "(or `python download_model.py --tiny` to build a tiny offline test model)"
        )
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} is not a folder")
    missing = [name for name in ("config.json",) if not (folder / name).is_file()]
    if not _has_weights(folder):
        missing.append("model.safetensors")
    has_tokenizer = all((folder / n).is_file() for n in TOKENIZER_FILES) or all(
        (folder / n).is_file() for n in LEGACY_TOKENIZER_FILES
    )
    if not has_tokenizer:
        missing.append("tokenizer.json")
    if missing:
        raise ModelLoadError(
            f"model folder {folder} is incomplete (missing {', '.join(missing)}): "
            "run `python download_model.py` again"
        )


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_id_of(folder: Path) -> str:
    return str(read_manifest(folder).get("model_id") or folder.name)


def _quiet_transformers() -> None:
    # Per-load progress bars and config chatter belong to a terminal, not the bot's logs.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()

    check_model_dir(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:  # transformers raises many kinds here
        raise ModelLoadError(
            f"tokenizer in {folder} could not be loaded: {_short(error)}"
        ) from error
    if len(tokenizer) < 2:
        raise ModelLoadError(f"tokenizer in {folder} is broken: it has {len(tokenizer)} token(s)")
    return tokenizer


class FastTokenizer:
    """`tokenizer.json` through the `tokenizers` library alone: the encode and
    decode the local backends use, with transformers' results (a test), without
    importing transformers, which brings torch: about 230 MB of resident memory
    and 2 s of start-up that the ONNX backend does not otherwise need."""

    def __init__(self, tokenizer: Any, eos_token: str | None) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id: int | None = tokenizer.token_to_id(eos_token) if eos_token else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        if clean_up_tokenization_spaces:
            raise ValueError("clean-up of tokenization spaces is not supported here")
        text: str = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return text

    def __len__(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))


def load_fast_tokenizer(folder: Path) -> Any:
    """A `FastTokenizer` from `tokenizer.json`; a folder with only the legacy
    vocab.json + merges.txt gets transformers' tokenizer (`load_tokenizer`)."""
    check_model_dir(folder)
    if not (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    from tokenizers import Tokenizer

    eos: str | None = None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        token = config.get("eos_token")
        eos = token.get("content") if isinstance(token, dict) else token
    except (OSError, ValueError, AttributeError):
        eos = None
    try:
        tokenizer = FastTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")), eos)
    except Exception as error:  # tokenizers raises plain Exceptions for bad files
        raise ModelLoadError(
            f"tokenizer in {folder} could not be loaded: {_short(error)}"
        ) from error
    if len(tokenizer) < 2:
        raise ModelLoadError(f"tokenizer in {folder} is broken: it has {len(tokenizer)} token(s)")
    return tokenizer


def load_causal_lm(folder: Path) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local folder, in eval mode, float32."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
    except Exception as error:
        raise ModelLoadError(f"model in {folder} could not be loaded: {_short(error)}") from error
    model.eval()
    if model.config.vocab_size < len(tokenizer):
        raise ModelLoadError(
            f"model folder {folder} is inconsistent: the tokenizer has {len(tokenizer)} tokens "
            f"but the model only {model.config.vocab_size}"
        )
    return model, tokenizer


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]
