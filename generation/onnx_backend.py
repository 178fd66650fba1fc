"""The fast backend: GPT-2 on ONNX Runtime, int8, under our decoding loop.

Measured on 2 cores for GPT-2 small (bench/RESULTS.md), it writes 200 tokens
several times faster than transformers fp32 `generate`. It plugs in as a
`StepModel`, so batching, continuous admission, per-request seeds, streaming
and cancellation are the ones the reference backend has, and its fp32 graph
gives the reference's greedy tokens exactly (a test).

Conversion from a Hugging Face model folder is automatic and cached in
`<model>/onnx/`: one graph that takes the KV cache as inputs (zero-length for
the prompt) and returns the grown cache, exported with torch's TorchScript
exporter, with ONNX Runtime's fused kernels put in (`_fuse`), then quantized by
ONNX Runtime (dynamic int8, per-channel weights).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from generation.decode import LocalBackend, Logits
from generation.errors import ModelLoadError
from generation.modelfiles import check_model_dir, load_tokenizer, model_id_of

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # bump when the exported graph changes (2: fused kernels)


class _DropMessage(logging.Filter):
    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def onnx_path(model_dir: Path, precision: str) -> Path:
    return model_dir / "onnx" / f"model-{precision}.onnx"


def _config(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return data


def _is_current(path: Path, model_dir: Path) -> bool:
    stamp = path.with_suffix(".json")
    if not path.is_file() or not stamp.is_file():
        return False
    try:
        meta = json.loads(stamp.read_text(encoding="utf-8"))
    except ValueError:
        return False
    weights = model_dir / "model.safetensors"
    return bool(
        meta.get("version") == EXPORT_VERSION
        and meta.get("weights_mtime") == (weights.stat().st_mtime if weights.exists() else None)
    )


def convert(
    model_dir: Path, precision: str = "int8", progress: Callable[[str], None] | None = None
) -> Path:
    """Export (and quantize) the model folder to ONNX once; later calls reuse it."""
    target = onnx_path(model_dir, precision)
    if _is_current(target, model_dir):
        return target
    say = progress or log.info
    check_model_dir(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        started = time.monotonic()
        say(f"converting {model_dir} to ONNX ({precision}); this happens once ...")
        exported = staging / "exported.onnx"
        _export(model_dir, exported)
        fp32 = staging / "model-fp32.onnx"
        _fuse(exported, fp32, _config(model_dir))
        produced = fp32
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            produced = staging / "model-int8.onnx"
            root = logging.getLogger()
            # The fused ops' outputs are untyped to its shape inference: float, as said.
            quiet = _DropMessage("pre-processing before quantization", "Failed to infer data type")
            root.addFilter(quiet)  # the quantizer's advice is for model authors, not operators
            try:
                quantize_dynamic(
                    str(fp32),
                    str(produced),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    # The fused kernels are ONNX Runtime's own ops, which the
                    # quantizer's shape inference cannot type: they are float.
                    extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
                )
            finally:
                root.removeFilter(quiet)
        weights = model_dir / "model.safetensors"
        meta = {
            "version": EXPORT_VERSION,
            "precision": precision,
            "weights_mtime": weights.stat().st_mtime if weights.exists() else None,
        }
        os.replace(produced, target)
        target.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
        say(f"ONNX model ready in {target} ({time.monotonic() - started:.0f} s)")
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"could not convert {model_dir} to ONNX: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _export(model_dir: Path, out: Path) -> None:
    import warnings

    import torch
    from transformers import DynamicCache

    from generation.modelfiles import load_causal_lm

    model, _ = load_causal_lm(model_dir)
    config = model.config
    layers, heads = config.n_layer, config.n_head
    head_dim = config.n_embd // heads

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any
        ) -> Any:
            cache = DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)]
            )
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            present = []
            for layer in out.cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits[:, -1, :], *present)

    batch, new, old = 2, 3, 4
    example = (
        torch.ones(batch, new, dtype=torch.long),
        torch.ones(batch, old + new, dtype=torch.long),
        torch.arange(old, old + new).repeat(batch, 1),
        *(torch.zeros(batch, heads, old, head_dim) for _ in range(2 * layers)),
    )
    past = [f"past_{i}" for i in range(2 * layers)]
    dynamic = {
        "input_ids": {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"},
        **{name: {0: "batch", 2: "old"} for name in past},
    }
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer chatter about Python branches it folds
        torch.onnx.export(
            Step(),
            example,
            str(out),
            input_names=["input_ids", "attention_mask", "position_ids", *past],
            output_names=["logits", *(f"present_{i}" for i in range(2 * layers))],
            dynamic_axes=dynamic,
            dynamo=False,
            opset_version=17,
        )


def _fuse(source: Path, target: Path, config: dict[str, Any]) -> None:
    """Fuse what ONNX Runtime has kernels for: each block's residual add and
    layer norm into one SkipLayerNormalization, and GPT-2's tanh GELU into
    FastGelu (the same formula). Measured on GPT-2 small, int8, batch 1: 8.0 ms
    a token instead of 9.1 (bench/RESULTS.md); the fp32 greedy tokens stay the
    reference's (a test). Graph-level only (opt_level=0): the session applies
    its own optimisations when it loads."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(source),
        model_type="gpt2",
        num_heads=int(config["n_head"]),
        hidden_size=int(config["n_embd"]),
        opt_level=0,
    )
    model.save_model_to_file(str(target), use_external_data_format=False)


@dataclass
class _State:
    past: list[npt.NDArray[np.float32]]  # 2 per layer: [batch, heads, time, head_dim]
    mask: npt.NDArray[np.int64]  # [batch, time]; 0 marks left padding
    next_pos: npt.NDArray[np.int64]  # [batch]


class OnnxStepModel:
    def __init__(self, session: Any, layers: int, heads: int, head_dim: int) -> None:
        self.session = session
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.forward_calls = 0
        self._last: Logits | None = None

    def _run(
        self,
        ids: npt.NDArray[np.int64],
        mask: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        past: list[npt.NDArray[np.float32]],
    ) -> tuple[list[npt.NDArray[np.float32]], Logits]:
        self.forward_calls += 1
        feed: dict[str, npt.NDArray[Any]] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
        }
        feed.update({f"past_{i}": array for i, array in enumerate(past)})
        logits, *present = self.session.run(None, feed)
        self._last = logits
        return present, logits

    def top_ids(self, width: int) -> Any:
        if self._last is None or width >= self._last.shape[-1]:
            return None
        try:  # torch's topk is several times faster than a partial sort per row
            import torch
        except ImportError:
            return np.argpartition(-self._last, width - 1, axis=-1)[:, :width]
        logits = torch.from_numpy(self._last)  # a view, no copy
        return torch.topk(logits, width, dim=-1, sorted=False).indices.numpy()

    def prefill(self, rows: Sequence[Sequence[int]]) -> tuple[_State, Logits]:
        width = max(len(row) for row in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = row
            mask[index, width - len(row) :] = 1
        pos = np.clip(mask.cumsum(-1) - 1, 0, None)
        empty = np.zeros((len(rows), self.heads, 0, self.head_dim), dtype=np.float32)
        present, logits = self._run(ids, mask, pos, [empty] * (2 * self.layers))
        return _State(present, mask, mask.sum(-1)), logits

    def step(self, state: _State, tokens: Sequence[int]) -> tuple[_State, Logits]:
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        mask = np.concatenate([state.mask, np.ones((len(tokens), 1), dtype=np.int64)], 1)
        present, logits = self._run(ids, mask, state.next_pos[:, None], state.past)
        return _State(present, mask, state.next_pos + 1), logits

    def select(self, state: _State, keep: Sequence[int]) -> _State:
        index = np.asarray(keep, dtype=np.int64)
        mask = state.mask[index]
        used = np.flatnonzero(mask.any(0))
        first = int(used[0]) if len(used) else 0
        past = [np.ascontiguousarray(array[index, :, first:]) for array in state.past]
        return _State(past, mask[:, first:], state.next_pos[index])

    def merge(self, first: _State, second: _State) -> _State:
        width = max(first.mask.shape[1], second.mask.shape[1])

        def pad(state: _State) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
            extra = width - state.mask.shape[1]
            if extra == 0:
                return state.past, state.mask
            past = [np.pad(a, ((0, 0), (0, 0), (extra, 0), (0, 0))) for a in state.past]
            return past, np.pad(state.mask, ((0, 0), (extra, 0)))

        a_past, a_mask = pad(first)
        b_past, b_mask = pad(second)
        past = [np.concatenate([a, b]) for a, b in zip(a_past, b_past, strict=True)]
        return _State(
            past,
            np.concatenate([a_mask, b_mask]),
            np.concatenate([first.next_pos, second.next_pos]),
        )


class OnnxBackend(LocalBackend):
    """GPT-2 on ONNX Runtime; converts the model folder on first use."""

    steps: OnnxStepModel

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch_size: int = 8,
        threads: int | None = None,
        precision: str = "int8",
        allow_spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        if precision not in ("fp32", "int8"):
            raise ValueError(f"unknown precision {precision!r}")
        self.tokenizer = load_tokenizer(model_dir)
        path = convert(model_dir, precision)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime picks (all cores)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # ONNX Runtime's threads spin-wait between runs by default. Between our
        # steps the worker samples in Python and the event loop streams text, so
        # spinning steals the CPU they need: a batch-8 step measured 19.6 ms
        # without spinning against 22-26 ms with it, on 2 cores. Spinning does
        # help a lone request (200 tokens in 1.8 s instead of 2.1 s), so quiet
        # deployments can turn it back on (ONNX_ALLOW_SPINNING).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"ONNX model {path} could not be loaded: {error}") from error
        config = _config(model_dir)
        self.name = "onnx" if precision == "fp32" else f"onnx-{precision}"
        self.precision = precision
        self.model_id = model_id_of(model_dir)
        self.context_size = int(config.get("n_positions", 1024))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.max_batch_size = max_batch_size
        heads = int(config["n_head"])
        self.steps = OnnxStepModel(
            session, int(config["n_layer"]), heads, int(config["n_embd"]) // heads
        )
        log.info("loaded %s from %s on ONNX Runtime (%s)", self.model_id, path, precision)

    def close(self) -> None:
        self.steps.session = None
