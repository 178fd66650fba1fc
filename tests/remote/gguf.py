"""Writes a GPT-2 folder (config.json, model.safetensors, tokenizer.json) as a
GGUF file that llama.cpp's `llama-server` loads, for the tests that run it.

Written from the format's specification (ggml docs/gguf.md: a header, typed
key-value metadata, tensor descriptions, then the tensors, aligned to 32
bytes) and the names llama.cpp gives GPT-2's tensors and settings; all in
float32, which is exact and small enough for the tiny model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

ALIGNMENT = 32
# gguf_metadata_value_type
UINT32, INT32, FLOAT32, STRING, ARRAY = 4, 5, 6, 8, 9
GGML_TYPE_F32 = 0
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3  # llama.cpp's token types


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value: Any) -> bytes:
    if kind == UINT32:
        return struct.pack("<I", value)
    if kind == INT32:
        return struct.pack("<i", value)
    if kind == FLOAT32:
        return struct.pack("<f", value)
    if kind == STRING:
        return _string(value)
    raise ValueError(kind)


def _pad(size: int) -> int:
    return (ALIGNMENT - size % ALIGNMENT) % ALIGNMENT


def _tensors(model_dir: Path, n_layer: int) -> dict[str, np.ndarray]:
    """llama.cpp's names; a 2-D numpy array (rows, cols) is ggml's {cols, rows}.
    GPT-2's Conv1D weights are stored (in, out), so they are transposed to
    (out, in) to give ggml's {in, out}."""
    from safetensors.numpy import load_file

    weights = {
        k.removeprefix("transformer."): v
        for k, v in load_file(model_dir / "model.safetensors").items()
    }
    tensors = {
        "token_embd.weight": weights["wte.weight"],
        "position_embd.weight": weights["wpe.weight"],
        "output_norm.weight": weights["ln_f.weight"],
        "output_norm.bias": weights["ln_f.bias"],
        "output.weight": weights.get("lm_head.weight", weights["wte.weight"]),
    }
    for i in range(n_layer):
        h, blk = f"h.{i}.", f"blk.{i}."
        tensors |= {
            blk + "attn_norm.weight": weights[h + "ln_1.weight"],
            blk + "attn_norm.bias": weights[h + "ln_1.bias"],
            blk + "attn_qkv.weight": weights[h + "attn.c_attn.weight"].T,
            blk + "attn_qkv.bias": weights[h + "attn.c_attn.bias"],
            blk + "attn_output.weight": weights[h + "attn.c_proj.weight"].T,
            blk + "attn_output.bias": weights[h + "attn.c_proj.bias"],
            blk + "ffn_norm.weight": weights[h + "ln_2.weight"],
            blk + "ffn_norm.bias": weights[h + "ln_2.bias"],
            blk + "ffn_up.weight": weights[h + "mlp.c_fc.weight"].T,
            blk + "ffn_up.bias": weights[h + "mlp.c_fc.bias"],
            blk + "ffn_down.weight": weights[h + "mlp.c_proj.weight"].T,
            blk + "ffn_down.bias": weights[h + "mlp.c_proj.bias"],
        }
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}


def write_gpt2_gguf(model_dir: Path, out: Path) -> Path:
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    vocab |= special
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids have gaps"
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    n_embd, n_layer = config["n_embd"], config["n_layer"]
    eos = config["eos_token_id"]

    scalars: list[tuple[str, int, Any]] = [
        ("general.architecture", STRING, "gpt2"),
        ("general.name", STRING, model_dir.name),
        ("gpt2.context_length", UINT32, config["n_positions"]),
        ("gpt2.embedding_length", UINT32, n_embd),
        ("gpt2.feed_forward_length", UINT32, config.get("n_inner") or 4 * n_embd),
        ("gpt2.block_count", UINT32, n_layer),
        ("gpt2.attention.head_count", UINT32, config["n_head"]),
        ("gpt2.attention.layer_norm_epsilon", FLOAT32, config["layer_norm_epsilon"]),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "gpt-2"),
        ("tokenizer.ggml.bos_token_id", UINT32, config.get("bos_token_id", eos)),
        ("tokenizer.ggml.eos_token_id", UINT32, eos),
    ]
    types = [TOKEN_CONTROL if t in special else TOKEN_NORMAL for t in tokens]
    arrays: list[tuple[str, int, list[Any]]] = [
        ("tokenizer.ggml.tokens", STRING, tokens),
        ("tokenizer.ggml.token_type", INT32, types),
        ("tokenizer.ggml.merges", STRING, merges),
    ]
    tensors = _tensors(model_dir, n_layer)

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(scalars) + len(arrays))
    for key, kind, value in scalars:
        header += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    for key, kind, values in arrays:
        header += _string(key) + struct.pack("<IIQ", ARRAY, kind, len(values))
        header += b"".join(_value(kind, v) for v in values)
    offset, data = 0, b""
    for name, tensor in tensors.items():
        dims = tensor.shape[::-1]  # ggml lists the innermost dimension first
        header += _string(name) + struct.pack(
            f"<I{len(dims)}QIQ", len(dims), *dims, GGML_TYPE_F32, offset
        )
        raw = tensor.tobytes()
        data += raw + b"\0" * _pad(len(raw))
        offset += len(raw) + _pad(len(raw))
    out.write_bytes(header + b"\0" * _pad(len(header)) + data)
    return out
