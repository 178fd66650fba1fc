"""GPT-2's decoding step as an ONNX graph, written node by node from the weights.

Why by hand and not exported from torch: the exported graph had about 1,500
nodes (shape arithmetic, mask building, a concatenation that copied the whole
KV cache every step), so a batch-1 step cost about 10 ms where reading the
int8 weights needs about 5. This graph has about ten nodes a layer on a
step's path, most of them ONNX Runtime's fused CPU kernels:

    (Add +) LayerNorm -> QKV matmul -> If(GroupQueryAttention, or for a
    prompt MultiHeadAttention) -> output matmul -> Add + LayerNorm
    -> matmul + FastGelu -> matmul

(The residual's Add and the layer norm stay two nodes: ONNX Runtime's fused
SkipLayerNormalization is several times slower on the CPU, see `skip_norm`.)

GroupQueryAttention (with as many KV heads as query heads: GPT-2's plain
attention) reads and writes the KV cache in place: `past_*` and `present_*`
are bound to the same preallocated buffers, one slot (row) per sequence, and
each row has its own length (`seqlens_k`), so rows never need padding once
their prompt is in. Prompts take another path through the same weights (the
main graph's `is_prompt`, an If around each layer's attention):
MultiHeadAttention over the prompt, its keys and values returned for the
backend to write into the cache. GroupQueryAttention's own prompt path took
about twice as long (9.4 against 4 ms of a 36 ms prefill of 88 tokens; 3x at
400 tokens), and a separate prompt graph would have held a third copy of the
weights. Past the last layer's attention (which writes every position's
keys and values), the rest of the last block, the final layer norm and the
output head run only on each row's last position, and the graph also returns each row's
best `top_k` ids, so sampling never sorts 50,257 logits in Python.

For int8 and int4 the KV cache holds int8 values (GroupQueryAttention's
quantized cache), one static scale per layer, head and channel for keys and
for values, measured when the graph is built by running the fp32 model over a
bundled text and random tokens (`kv_scales`). It reads a quarter of the bytes
of an fp32 cache each step (attention was 35-45 % of a step at 8-16 rows) and
takes a quarter of the memory.

The embeddings are looked up outside the graph (`write_embeddings`; the
backend memory-maps the tables, so only rows of tokens in use are resident):
the graph's input is `inputs_embeds`.

Weights, by precision:
- fp32: as trained; its greedy tokens are the reference's (a test).
- int8: the blocks' matmuls are DynamicQuantizeMatMul, per-output-column int8
  weights (symmetric) and int8 activations quantized per call. The output
  head (tied to the embedding in GPT-2, 39 M of the 124 M weights, read every
  step) is MatMulNBits with 8-bit weights in blocks of 256 along the input and
  int8 activations (accuracy level 4), which reads them at the memory's pace
  (about 1.2 ms a step where DynamicQuantizeMatMul took 1.7).
  For the blocks' matmuls MatMulNBits is faster at one or two rows (a whole
  step 10-15 % faster) but slower from four rows on and for prompts (about
  1.5x at 96 tokens), so int8 also has a second graph, `small=True`: the same
  weights with the blocks' matmuls in 8-bit blocks too, which the backend
  steps with while one or two stories are running (bench/RESULTS.md; it costs
  the memory of a second copy of the weights, about 125 MB).
- int4 (an option, below the quality bar: README): the blocks' matmuls are
  MatMulNBits, 4-bit weights in blocks of 32 with int8 activations (accuracy
  level 4); the output head is int8 as above.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PRECISIONS = ("fp32", "int8", "int4")
INT4_BLOCK = 32  # weights per 4-bit block, each with its own scale
# Weights per 8-bit block (the output head): 256 read at memory speed; blocks
# of 128 or 32 were 6-30 % slower at one row and much slower at eight.
INT8_BLOCK = 256
MS_DOMAIN = "com.microsoft"
# The int8 KV cache's scales cover this multiple of the largest key or value
# seen while measuring them, for inputs unlike the measured ones; a value
# beyond it is clipped to the largest int8.
KV_HEADROOM = 1.5
CALIBRATION_TEXT = Path(__file__).with_name("calibration.txt")


def read_weights(model_dir: Path) -> dict[str, npt.NDArray[np.float32]]:
    from safetensors.numpy import load_file

    from generation.errors import ModelLoadError

    index = model_dir / "model.safetensors.index.json"
    try:
        if index.is_file() and not (model_dir / "model.safetensors").is_file():
            shards = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
            raw = {k: v for shard in shards for k, v in load_file(str(model_dir / shard)).items()}
        else:
            raw = load_file(str(model_dir / "model.safetensors"))
    except Exception as error:  # safetensors raises its own errors for damaged files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ModelLoadError(f"model in {model_dir} could not be loaded: {first}") from error
    # transformers writes GPT2LMHeadModel's names with "transformer."; a bare
    # GPT2Model folder has none. The output head is tied to the embedding.
    return {
        name.removeprefix("transformer."): np.asarray(value, dtype=np.float32)
        for name, value in raw.items()
    }


def quantize_rows(table: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], Any]:
    """Symmetric int8 with one scale per row (the embedding: one per token)."""
    q, scale = quantize_columns(table.T)
    return np.ascontiguousarray(q.T), scale  # row-major: a token's row is one run of bytes


def embedding_files(precision: str) -> list[str]:
    """The tables `write_embeddings` makes: tokens, positions (and the tokens'
    scales where the tokens are int8 rows: every precision but fp32)."""
    if precision == "fp32":
        return ["embed-fp32.npy", "embed-positions.npy"]
    return ["embed-int8.npy", "embed-positions.npy", "embed-int8-scale.npy"]


def write_embeddings(w: dict[str, npt.NDArray[np.float32]], precision: str, folder: Path) -> None:
    """The token and position tables of weights `w` as .npy files in `folder`,
    looked up outside the graph (memory-mapped: only the rows of tokens in use
    become resident)."""
    tokens, positions, *scales = (folder / name for name in embedding_files(precision))
    if scales:
        q, scale = quantize_rows(w["wte.weight"])
        np.save(tokens, q)
        np.save(scales[0], scale)
    else:
        np.save(tokens, w["wte.weight"])
    np.save(positions, w["wpe.weight"])


def quantize_columns(weight: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], Any]:
    """Symmetric int8 with one scale per output column of a [in, out] weight."""
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


def block_size(bits: int, inputs: int) -> int | None:
    """The block MatMulNBits uses for a weight with `inputs` inputs: INT4_BLOCK
    or INT8_BLOCK, halved until it divides them (a power of two, at least 16,
    as MatMulNBits requires); None where nothing does."""
    block = INT4_BLOCK if bits == 4 else INT8_BLOCK
    while block >= 16 and inputs % block:
        block //= 2
    return block if block >= 16 else None


def quantize_blocks(weight: npt.NDArray[np.float32], bits: int, block: int) -> tuple[Any, Any]:
    """MatMulNBits' layout for a [out, in] weight: symmetric blocks of `block`
    along `in`, one float scale each, stored around 2**(bits-1) (its implied
    zero point); 4-bit values two to a byte (low first)."""
    rows, cols = weight.shape
    blocks = weight.reshape(rows, cols // block, block)
    top = 2 ** (bits - 1) - 1  # 7 or 127: symmetric, so -8 / -128 stays unused
    scale = np.abs(blocks).max(axis=-1) / top
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = (np.clip(np.rint(blocks / scale[..., None]), -top, top) + top + 1).astype(np.uint8)
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scale.reshape(-1)


class _Builder:
    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        outputs: int | list[str] = 1,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
        self._count += 1
        if isinstance(outputs, int):
            outputs = [f"{op.lower()}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(
            self.helper.make_node(
                op, inputs, outputs, name=f"{op}_{self._count}", domain=domain or None, **attrs
            )
        )
        return outputs


def int8_kv_cache(precision: str) -> bool:
    """Whether the graphs of `precision` keep an int8 KV cache (fp32 keeps fp32:
    its tokens are the reference's)."""
    return precision != "fp32"


def calibration_sequences(model_dir: Path, vocab: int, context: int) -> list[list[int]]:
    """What the KV cache's scales are measured on: the bundled text as one
    sequence, repeated to fill all `context` positions, the first 64 tokens of
    each of its paragraphs (openings, from position 0) and random token ids
    (input unlike any prose)."""
    from generation.modelfiles import load_fast_tokenizer

    tokenizer = load_fast_tokenizer(model_dir)
    text = CALIBRATION_TEXT.read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    encoded = [
        [i for i in tokenizer.encode(p, add_special_tokens=False) if 0 <= i < vocab]
        for p in paragraphs
    ]
    joined = [i for ids in encoded for i in ids]
    if joined:  # repeated to the last position: late positions have their own range
        joined = (joined * -(-context // len(joined)))[:context]
    openings = [ids[: min(64, context)] for ids in encoded if ids]
    noise = np.random.default_rng(0).integers(0, vocab, size=min(256, context)).tolist()
    return [ids for ids in (joined, *openings, noise) if ids]


def _layer_norm(x: Any, gain: Any, bias: Any, eps: float) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gain + bias


def kv_scales(
    w: dict[str, npt.NDArray[np.float32]],
    config: dict[str, Any],
    sequences: list[list[int]],
    headroom: float = KV_HEADROOM,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Per layer, the int8 KV cache's (key, value) scales, shaped [heads, 1,
    head_dim] as GroupQueryAttention's PER_CHANNEL takes them: the largest
    magnitude each head's channel reaches over `sequences` in the fp32 model
    (a plain numpy forward pass), times `headroom`, over 127."""
    layers, heads, width = int(config["n_layer"]), int(config["n_head"]), int(config["n_embd"])
    head_dim = width // heads
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    top = np.zeros((layers, 2, heads, head_dim), dtype=np.float64)
    for ids in sequences:
        count = len(ids)
        x = w["wte.weight"][ids] + w["wpe.weight"][:count]
        mask = np.triu(np.full((count, count), -np.inf, dtype=np.float32), 1)
        for i in range(layers):
            p = f"h.{i}"
            h = _layer_norm(x, w[f"{p}.ln_1.weight"], w[f"{p}.ln_1.bias"], eps)
            qkv = h @ w[f"{p}.attn.c_attn.weight"] + w[f"{p}.attn.c_attn.bias"]
            q, k, v = (
                qkv[:, j * width : (j + 1) * width].reshape(count, heads, head_dim)
                for j in range(3)
            )
            top[i, 0] = np.maximum(top[i, 0], np.abs(k).max(0))
            top[i, 1] = np.maximum(top[i, 1], np.abs(v).max(0))
            if i == layers - 1:
                break  # the last layer's output is not needed
            q, k, v = (y.transpose(1, 0, 2) for y in (q, k, v))  # [heads, count, head_dim]
            scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(head_dim)) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attn = (scores @ v).transpose(1, 0, 2).reshape(count, width)
            x = x + attn @ w[f"{p}.attn.c_proj.weight"] + w[f"{p}.attn.c_proj.bias"]
            h = _layer_norm(x, w[f"{p}.ln_2.weight"], w[f"{p}.ln_2.bias"], eps)
            h = h @ w[f"{p}.mlp.c_fc.weight"] + w[f"{p}.mlp.c_fc.bias"]
            h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))  # gelu_new
            x = x + h @ w[f"{p}.mlp.c_proj.weight"] + w[f"{p}.mlp.c_proj.bias"]
    scale = np.where(top > 0, top * headroom / 127.0, 1.0).astype(np.float32)
    return [
        (scale[i, 0].reshape(heads, 1, head_dim), scale[i, 1].reshape(heads, 1, head_dim))
        for i in range(layers)
    ]


def build_graph(
    model_dir: Path, precision: str, target: Path, small_target: Path | None = None
) -> None:
    """Write the decoding-step graph for the model folder at `target`, and its
    embedding tables beside it (`write_embeddings`); for int8, also the graph
    for one or two rows at `small_target` (the blocks' matmuls in 8-bit blocks)."""
    from onnx import save_model

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if small_target is not None and precision != "int8":
        raise ValueError("only int8 has a graph for small batches")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    w = read_weights(model_dir)
    write_embeddings(w, precision, target.parent)
    scales = None
    if int8_kv_cache(precision):
        vocab, context = w["wte.weight"].shape[0], w["wpe.weight"].shape[0]
        scales = kv_scales(w, config, calibration_sequences(model_dir, vocab, context))
    save_model(_graph(w, config, precision, kv=scales), str(target))
    if small_target is not None:
        save_model(_graph(w, config, precision, small=True, kv=scales), str(small_target))


def _graph(
    w: dict[str, npt.NDArray[np.float32]],
    config: dict[str, Any],
    precision: str,
    small: bool = False,
    kv: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] | None = None,
) -> Any:
    """The graph for steps and prompts as an ONNX model; `small`: int8 with
    the blocks' matmuls in 8-bit blocks (MatMulNBits), the faster kernel for
    one or two rows, and no prompt path (it runs steps only); `kv`: each
    layer's (key, value) scales of an int8 KV cache (None: fp32)."""
    from onnx import TensorProto, helper

    layers, heads, width = int(config["n_layer"]), int(config["n_head"]), int(config["n_embd"])
    head_dim = width // heads
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    vocab = w["wte.weight"].shape[0]
    g = _Builder()
    cache_type = TensorProto.FLOAT if kv is None else TensorProto.INT8
    prompt_path = not small
    if prompt_path:  # a step's `prompt_kv_*`
        placeholder = g.const(
            "kv_placeholder", np.zeros((1, 1, 2 * width), np.float32 if kv is None else np.int8)
        )
    if prompt_path and kv is not None:  # QuantizeLinear's scale and zero point
        unit = g.const("unit", np.array(1.0, np.float32))
        int8_zero = g.const("int8_zero", np.array(0, np.int8))

    def blocked(
        x: str,
        prefix: str,
        weight: npt.NDArray[np.float32],
        bits: int,
        bias: Any,
        output: str | None = None,
    ) -> str | None:
        """x @ weight.T through MatMulNBits (weight is [out, in]); None where
        no block size divides the weight's inputs."""
        out, inputs = weight.shape
        block = block_size(bits, inputs)
        if block is None:
            return None
        blob, scales = quantize_blocks(weight, bits, block)
        (y,) = g.node(
            "MatMulNBits",
            [
                x,
                g.const(f"{prefix}.w{bits}", blob),
                g.const(f"{prefix}.s{bits}", scales),
                "",
                "",
                g.const(f"{prefix}.b", bias) if bias is not None else "",
            ],
            [output] if output else 1,
            domain=MS_DOMAIN,
            K=inputs,
            N=out,
            bits=bits,
            block_size=block,
            accuracy_level=4,  # int8 activations: the fast kernels on x86
        )
        return y

    def linear(x: str, prefix: str, with_bias: bool = True) -> str:
        weight, bias = w[f"{prefix}.weight"], w[f"{prefix}.bias"]  # [in, out] (Conv1D)
        if precision == "fp32":
            (y,) = g.node("MatMul", [x, g.const(f"{prefix}.w", weight)])
            if with_bias:
                (y,) = g.node("Add", [y, g.const(f"{prefix}.b", bias)])
            return y
        if precision == "int4" or small:
            out = blocked(x, prefix, weight.T, 8 if small else 4, bias if with_bias else None)
            if out is not None:
                return out
        q, scale = quantize_columns(weight)  # int8 (also where no block size fits)
        inputs = [x, g.const(f"{prefix}.wq", q), g.const(f"{prefix}.ws", scale), ""]
        if with_bias:
            inputs.append(g.const(f"{prefix}.b", bias))
        (y,) = g.node("DynamicQuantizeMatMul", inputs, domain=MS_DOMAIN)
        return y

    def skip_norm(x: str, residual: str, prefix: str) -> tuple[str, str]:
        """(layer_norm(x + residual), x + residual). An Add and a
        LayerNormalization, not ONNX Runtime's SkipLayerNormalization: on the
        CPU that kernel took 5-8x as long (62 against 10 us at 16 rows, 522
        against 63 at 96), and nothing fuses the pair back on the CPU."""
        (total,) = g.node("Add", [x, residual])
        (y,) = g.node(
            "LayerNormalization",
            [
                total,
                g.const(f"{prefix}.g", w[f"{prefix}.weight"]),
                g.const(f"{prefix}.b", w[f"{prefix}.bias"]),
            ],
            axis=-1,
            epsilon=eps,
        )
        return y, total

    def attention(i: int, qkv: str) -> str:
        """Layer i's attention over its packed queries, keys and values (`qkv`).

        Steps: GroupQueryAttention, which writes the new keys and values into
        the cache (`past_*` and `present_*` bound to the same buffers).

        Prompts (with the prompt path, `is_prompt`): MultiHeadAttention, causal,
        over the prompt alone (ONNX Runtime's GroupQueryAttention prompt path
        took twice as long at 88 tokens and three times at 400), and the
        prompt's keys and values come out as the cache holds them (int8:
        quantized with its scales), as `prompt_kv_{i}` ([rows, prompt width,
        2 x hidden]), for the backend to copy into it. The two are an If's
        branches, so a run does one or the other; `present_*` are then the
        `past_*` given (a prompt binds small placeholders to them) and a
        step's `prompt_kv_*` a placeholder of [1, 1, 2 x hidden]."""
        past = [f"past_key_{i}", f"past_value_{i}"]
        present = [f"present_key_{i}", f"present_value_{i}"]
        attn_inputs = [qkv, "", "", *past, "seqlens_k", "total_seq_len"]
        quantized: dict[str, Any] = {}
        if kv is not None:  # after cos/sin cache, position ids, bias, head sink
            attn_inputs += ["", "", "", "", ""]
            attn_inputs += [
                g.const(f"h.{i}.k_scale", kv[i][0]),
                g.const(f"h.{i}.v_scale", kv[i][1]),
            ]
            quantized = {
                "k_quant_type": "PER_CHANNEL",
                "v_quant_type": "PER_CHANNEL",
                "kv_cache_bit_width": 8,
            }
        if prompt_path:  # the If's step branch
            step = [f"step{i}_{name}" for name in ("attn", "key", "value")]
        else:
            step = [f"attn_{i}", *present]
        gqa = helper.make_node(
            "GroupQueryAttention",
            attn_inputs,
            step,
            name=f"GroupQueryAttention_{i}",
            domain=MS_DOMAIN,
            num_heads=heads,
            kv_num_heads=heads,
            **quantized,
        )
        if not prompt_path:
            g.nodes.append(gqa)
            return step[0]
        b = f"prompt{i}_"
        q, k, v = (f"{b}{name}" for name in "qkv")
        nodes = [
            helper.make_node("Split", [qkv], [q, k, v], axis=2),
            helper.make_node(
                "MultiHeadAttention",
                [q, k, v],
                [f"{b}attn"],
                domain=MS_DOMAIN,
                num_heads=heads,
                unidirectional=1,
            ),
            helper.make_node("Concat", [k, v], [f"{b}kv" if kv is None else f"{b}kv32"], axis=2),
        ]
        if kv is not None:  # round(x / scale), as GroupQueryAttention stores them
            inverse = np.concatenate([1 / kv[i][0].ravel(), 1 / kv[i][1].ravel()])
            nodes += [
                helper.make_node(
                    "Mul",
                    [f"{b}kv32", g.const(f"h.{i}.inverse", inverse.astype(np.float32))],
                    [f"{b}scaled"],
                ),
                # A scalar scale: per-axis QuantizeLinear was 20x slower on the CPU.
                helper.make_node("QuantizeLinear", [f"{b}scaled", unit, int8_zero], [f"{b}kv"]),
            ]
        nodes += [helper.make_node("Identity", [name], [f"{b}{name}"]) for name in past]
        then = helper.make_graph(
            nodes,
            f"prompt_{i}",
            [],
            [
                helper.make_tensor_value_info(f"{b}attn", TensorProto.FLOAT, None),
                helper.make_tensor_value_info(f"{b}kv", cache_type, None),
            ]
            + [helper.make_tensor_value_info(f"{b}{name}", cache_type, None) for name in past],
        )
        otherwise = helper.make_graph(
            [gqa, helper.make_node("Identity", [placeholder], [f"step{i}_kv"])],
            f"step_{i}",
            [],
            [
                helper.make_tensor_value_info(step[0], TensorProto.FLOAT, None),
                helper.make_tensor_value_info(f"step{i}_kv", cache_type, None),
            ]
            + [helper.make_tensor_value_info(name, cache_type, None) for name in step[1:]],
        )
        g.node(
            "If",
            ["is_prompt"],
            [f"attn_{i}", f"prompt_kv_{i}", *present],
            then_branch=then,
            else_branch=otherwise,
        )
        return f"attn_{i}"

    # The embeddings (token rows + position rows) come in as `inputs_embeds`:
    # they are looked up outside the graph (`write_embeddings`).
    wte = w["wte.weight"]
    residual = "inputs_embeds"
    flat_shape = g.const("flat_shape", np.array([-1, width], np.int64))

    x = g.node(
        "LayerNormalization",
        [
            residual,
            g.const("h.0.ln_1.g", w["h.0.ln_1.weight"]),
            g.const("h.0.ln_1.b", w["h.0.ln_1.bias"]),
        ],
        axis=-1,
        epsilon=eps,
    )[0]
    presents: list[str] = []
    mlp_out = ""
    for i in range(layers):
        p = f"h.{i}"
        if i > 0:  # the previous block's MLP output joins the residual, then ln_1
            x, residual = skip_norm(mlp_out, residual, f"{p}.ln_1")
        attn = attention(i, linear(x, f"{p}.attn.c_attn"))
        presents += [f"present_key_{i}", f"present_value_{i}"]
        if i == layers - 1:
            # Past the last layer's attention (which wrote every position's
            # keys and values), only each row's last position goes on: the
            # rest of the last block and the head run on one position a row
            # (a prompt of 88 tokens: 1.5 ms less).
            attn, residual = (
                g.node("Gather", [g.node("Reshape", [y, flat_shape])[0], "last_index"])[0]
                for y in (attn, residual)
            )
        proj = linear(attn, f"{p}.attn.c_proj")
        x, residual = skip_norm(proj, residual, f"{p}.ln_2")
        (hidden,) = g.node(
            "FastGelu",
            [
                linear(x, f"{p}.mlp.c_fc", with_bias=False),
                g.const(f"{p}.mlp.c_fc.b", w[f"{p}.mlp.c_fc.bias"]),
            ],
            domain=MS_DOMAIN,
        )
        mlp_out = linear(hidden, f"{p}.mlp.c_proj")
    last, _ = skip_norm(mlp_out, residual, "ln_f")
    if precision == "fp32":
        g.node("Gemm", [last, g.const("wte", wte)], ["logits"], transB=1)
    else:
        # The tied head: the embedding's weights, in 8-bit blocks (int4 too).
        if blocked(last, "head", wte, 8, None, output="logits") is None:
            wte_q, row_scale = quantize_rows(wte)  # no block size fits: int8 rows
            g.node(
                "DynamicQuantizeMatMul",
                [
                    last,
                    g.const("head.wq", np.ascontiguousarray(wte_q.T)),
                    g.const("head.ws", row_scale),
                    "",
                ],
                ["logits"],
                domain=MS_DOMAIN,
            )
    g.node("TopK", ["logits", "top_k"], ["top_values", "top_ids"], sorted=0)

    cache: list[str | int] = ["batch", heads, "cache", head_dim]
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "new", width]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_seq_len", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("last_index", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("top_k", TensorProto.INT64, [1]),
    ]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}_{i}", cache_type, cache))
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocab]),
        helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch", "k"]),
    ] + [helper.make_tensor_value_info(name, cache_type, cache) for name in presents]
    if prompt_path:
        inputs.append(helper.make_tensor_value_info("is_prompt", TensorProto.BOOL, [1]))
        outputs += [
            helper.make_tensor_value_info(f"prompt_kv_{i}", cache_type, None) for i in range(layers)
        ]
    graph = helper.make_graph(g.nodes, "gpt2-step", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="storybot",
    )
    model.ir_version = 9
    return model
