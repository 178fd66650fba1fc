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
