"""llama.cpp on the benchmark's model, for a ratio measured in the same run.

Optional: needs the `bench-llama` extra (llama-cpp-python, compiled from source
on install, and gguf). `python -m bench` skips this row, with a note, when
llama-cpp-python is not installed.

The GGUF file is written from the model folder here (GPT-2's tensors under
llama.cpp's names, with gguf's writer), in float32, then quantized by
llama.cpp's own quantizer (`llama_model_quantize`, what `llama-quantize`
runs). Decoding uses llama.cpp's C API through llama-cpp-python: one
`llama_decode` per step for all sequences, and llama.cpp's own sampler chain
with the settings storybot samples with (repetition penalty, top-k, top-p,
temperature), so both engines do the same work per token.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

FTYPES = {"q8_0": 7, "q4_0": 2, "f16": 1}  # llama.h's LLAMA_FTYPE_MOSTLY_*
BATCH = 512  # tokens per llama_decode call (n_batch)


def available() -> str | None:
    """None when llama-cpp-python can be used, else why not."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (pip install '.[bench-llama]')"
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "gguf is not installed (pip install '.[bench-llama]')"
    return None


def build_info() -> str:
    """The CPU features llama.cpp was compiled for, as it reports them."""
    import llama_cpp

    info: bytes = llama_cpp.llama_print_system_info()
    version = getattr(llama_cpp, "__version__", "?")
    return f"llama-cpp-python {version}: {info.decode(errors='replace').strip()}"


def write_gguf(model_dir: Path, target: Path) -> None:
    """GPT-2 from a Hugging Face folder as a float32 GGUF file."""
    import gguf

    from generation.onnx_graph import read_weights

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    weights = read_weights(model_dir)
    layers, width = int(config["n_layer"]), int(config["n_embd"])
    vocab_size = int(config["vocab_size"])

    writer = gguf.GGUFWriter(str(target), "gpt2")
    writer.add_context_length(int(config["n_positions"]))
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(int(config.get("n_inner") or 4 * width))
    writer.add_block_count(layers)
    writer.add_head_count(int(config["n_head"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_epsilon", 1e-5)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    # The tokenizer: the model's own BPE vocabulary, padded to the model's size.
    model = tokenizer["model"]
    by_id = {index: token for token, index in model["vocab"].items()}
    special = {entry["id"]: entry["content"] for entry in tokenizer.get("added_tokens", [])}
    tokens, types = [], []
    for index in range(vocab_size):
        if index in special:
            tokens.append(special[index])
            types.append(gguf.TokenType.CONTROL)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = int(config.get("eos_token_id", vocab_size - 1))
    writer.add_bos_token_id(int(config.get("bos_token_id", eos)))
    writer.add_eos_token_id(eos)

    def add(name: str, array: np.ndarray) -> None:
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    add("token_embd.weight", weights["wte.weight"])
    add("position_embd.weight", weights["wpe.weight"])
    for i in range(layers):
        p = f"h.{i}"
        add(f"blk.{i}.attn_norm.weight", weights[f"{p}.ln_1.weight"])
        add(f"blk.{i}.attn_norm.bias", weights[f"{p}.ln_1.bias"])
        # Conv1D weights are [in, out]; GGUF wants [out, in] (numpy order).
        add(f"blk.{i}.attn_qkv.weight", weights[f"{p}.attn.c_attn.weight"].T)
        add(f"blk.{i}.attn_qkv.bias", weights[f"{p}.attn.c_attn.bias"])
        add(f"blk.{i}.attn_output.weight", weights[f"{p}.attn.c_proj.weight"].T)
        add(f"blk.{i}.attn_output.bias", weights[f"{p}.attn.c_proj.bias"])
        add(f"blk.{i}.ffn_norm.weight", weights[f"{p}.ln_2.weight"])
        add(f"blk.{i}.ffn_norm.bias", weights[f"{p}.ln_2.bias"])
        add(f"blk.{i}.ffn_up.weight", weights[f"{p}.mlp.c_fc.weight"].T)
        add(f"blk.{i}.ffn_up.bias", weights[f"{p}.mlp.c_fc.bias"])
        add(f"blk.{i}.ffn_down.weight", weights[f"{p}.mlp.c_proj.weight"].T)
        add(f"blk.{i}.ffn_down.bias", weights[f"{p}.mlp.c_proj.bias"])
    add("output_norm.weight", weights["ln_f.weight"])
    add("output_norm.bias", weights["ln_f.bias"])
    add("output.weight", weights["wte.weight"])  # tied, as llama.cpp's converter writes it
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantized_model(model_dir: Path, kind: str) -> Path:
    """<model>/gguf/model-<kind>.gguf, made once with llama.cpp's quantizer."""
    import llama_cpp

    folder = model_dir / "gguf"
    target = folder / f"model-{kind}.gguf"
    if target.is_file():
        return target
    folder.mkdir(exist_ok=True)
    source = folder / "model-f32.gguf"
    if not source.is_file():
        write_gguf(model_dir, source.with_suffix(".tmp"))
        os.replace(source.with_suffix(".tmp"), source)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = len(os.sched_getaffinity(0))
    staging = target.with_suffix(".tmp")
    failed = llama_cpp.llama_model_quantize(
        str(source).encode(), str(staging).encode(), ctypes.byref(params)
    )
    if failed:
        raise RuntimeError(f"llama_model_quantize failed ({failed})")
    os.replace(staging, target)
    return target


class LlamaCpp:
    """One model and one context holding `sequences` sequences."""

    def __init__(self, path: Path, sequences: int, threads: int, context: int = 1024) -> None:
        import llama_cpp

        self.lib = llama_cpp
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context * sequences
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = sequences
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make a context")
        self.vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.sequences = sequences
        self.batch = llama_cpp.llama_batch_init(BATCH, 0, sequences)

    def _sampler(self, seed: int) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(
            chain, lib.llama_sampler_init_penalties(self.vocab, -1, 1.2, 0.0, 0.0)
        )
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(50))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(0.95, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(0.9))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, sequence, wants logits)."""
        batch = self.batch
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        if self.lib.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def generate(self, prompts: list[list[int]], tokens: int) -> dict[str, float]:
        """All prompts at once, `tokens` new tokens each; seconds to the first
        token and in all."""
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        samplers = [self._sampler(seed) for seed in range(len(prompts))]
        try:
            for sampler, prompt in zip(samplers, prompts, strict=True):
                for token in prompt:
                    lib.llama_sampler_accept(sampler, token)
            started = time.perf_counter()
            # The prompts, whole ones together up to n_batch tokens a call; each
            # sequence's first token is sampled from the call that ends its prompt.
            chosen: list[int] = [0] * len(prompts)
            group: list[int] = []
            for seq in [*range(len(prompts)), None]:
                size = sum(len(prompts[s]) for s in group)
                if group and (seq is None or size + len(prompts[seq]) > BATCH):
                    items = [
                        (token, pos, s, pos == len(prompts[s]) - 1)
                        for s in group
                        for pos, token in enumerate(prompts[s])
                    ]
                    self._decode(items)
                    ends = [i for i, item in enumerate(items) if item[3]]
                    for s, output in zip(group, ends, strict=True):
                        chosen[s] = lib.llama_sampler_sample(samplers[s], self.ctx, output)
                    group = []
                if seq is not None:
                    group.append(seq)
            first = time.perf_counter() - started
            lengths = [len(prompt) for prompt in prompts]
            for _ in range(tokens - 1):
                # Sampling accepted each token into its chain already.
                self._decode([(t, lengths[s], s, True) for s, t in enumerate(chosen)])
                lengths = [n + 1 for n in lengths]
                chosen = [
                    lib.llama_sampler_sample(sampler, self.ctx, row)
                    for row, sampler in enumerate(samplers)
                ]
            return {"first_s": first, "total_s": time.perf_counter() - started}
        finally:
            for sampler in samplers:
                lib.llama_sampler_free(sampler)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)
