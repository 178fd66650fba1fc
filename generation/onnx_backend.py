"""The fast backend: GPT-2 on ONNX Runtime, int8, under our decoding loop.

It plugs in as a `StepModel`, so batching, continuous admission, per-request
seeds, streaming and cancellation are the ones the reference backend has, and
its fp32 graph gives the reference's greedy tokens exactly (a test). Figures:
bench/RESULTS.md.

Conversion from a Hugging Face model folder is automatic and cached in
`<model>/onnx/`: one graph for the prompt and for each step (int8 has a second
one for steps of one or two rows), written node by node from the weights
(generation/onnx_graph.py), and the embedding tables,
looked up here from memory-mapped files (`Embeddings`). The KV cache lives in
buffers allocated once and updated in place by the graph's steps; inputs and
outputs are bound to arrays (I/O binding), so a step copies nothing of the
cache: it writes each row's embedding in and reads the logits out. A prompt
runs on the graph's prompt path, which returns its keys and values, copied
into the cache here.
The tokenizer is `tokenizer.json` through `tokenizers` alone: neither
transformers nor torch is imported.
"""

from __future__ import annotations

import json
import logging
import mmap
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

from generation.decode_loop import LocalBackend, Logits, distinct_rows
from generation.errors import ModelLoadError
from generation.modelfiles import check_model_dir, load_fast_tokenizer, model_id_of
from generation.onnx_graph import embedding_files

log = logging.getLogger(__name__)

TOP_STEP = 64  # the graph's top-k width is rounded up to a multiple of this
# Prompts are run in groups of about this many tokens (rows x longest prompt):
# attention's scratch grows with rows x heads x prompt x prompt floats, and one
# long group saves nothing over several.
PREFILL_TOKENS = 512
PREFILL_BUCKET = 8  # a prefill's width is rounded up to a multiple of this
SPIN_US = 20  # how long ONNX Runtime's threads spin-wait before sleeping (see OnnxBackend)
# Steps of at most this many rows run on int8's small-batch graph (the blocks'
# matmuls in 8-bit blocks): 10-15 % faster at one or two rows, slower from four.
SMALL_ROWS = 2
# The first row's cache pages stay resident when its story ends; the other
# rows' are handed back (`OnnxStepModel._release`). Every lone story runs in
# row 0, and a page handed back costs a fault when written again: 576 of them
# for an 87-token prompt (two pages a head, key and value, layer): 1.3-2.1 ms of
# a 30-33 ms prefill. Row 0 holds at most a whole context's keys and values
# (GPT-2 small: 19 MB with the int8 cache, 75 MB in fp32; inside
# `model_memory_mb`'s full batch), and only the positions a story reached.
RESIDENT_ROWS = 1

# Bump when the graphs change (10: a prompt returns its keys and values only;
# 9: the last block on last positions only; 8: the prompt path; 7: the int8
# KV cache; 6: Add + LayerNormalization, not SkipLayerNormalization; 5: int8's
# small-batch graph; 4: the output head in 8-bit blocks, the embeddings looked
# up outside the graph).
EXPORT_VERSION = 10


def onnx_path(model_dir: Path, precision: str) -> Path:
    return model_dir / "onnx" / f"model-{precision}.onnx"


def small_path(model_dir: Path, precision: str) -> Path | None:
    """int8's graph for steps of one or two rows (None for other precisions)."""
    return model_dir / "onnx" / "model-int8-small.onnx" if precision == "int8" else None


def _products(model_dir: Path, precision: str) -> list[Path]:
    """What a conversion writes: the graphs and the embedding tables."""
    small = small_path(model_dir, precision)
    return [onnx_path(model_dir, precision), *([small] if small else [])] + [
        model_dir / "onnx" / name for name in embedding_files(precision)
    ]


def _config(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return data


def _is_current(model_dir: Path, precision: str) -> bool:
    stamp = onnx_path(model_dir, precision).with_suffix(".json")
    if not stamp.is_file() or not all(p.is_file() for p in _products(model_dir, precision)):
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
    """Write the model folder's decoding graph once (generation/onnx_graph.py);
    later calls reuse it while the weights are unchanged."""
    from generation.onnx_graph import PRECISIONS, build_graph

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    target = onnx_path(model_dir, precision)
    if _is_current(model_dir, precision):
        return target
    say = progress or log.info
    check_model_dir(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        started = time.monotonic()
        say(f"converting {model_dir} to ONNX ({precision}); this happens once ...")
        small = small_path(model_dir, precision)
        build_graph(  # and the embeddings
            model_dir, precision, staging / target.name, small and staging / small.name
        )
        weights = model_dir / "model.safetensors"
        meta = {
            "version": EXPORT_VERSION,
            "precision": precision,
            "weights_mtime": weights.stat().st_mtime if weights.exists() else None,
        }
        for made in staging.iterdir():  # the graph and the embeddings; the stamp last
            os.replace(made, target.parent / made.name)
        target.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
        say(f"ONNX model ready in {target} ({time.monotonic() - started:.0f} s)")
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"could not convert {model_dir} to ONNX: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_ahead(path: Path) -> None:
    """Ask the system to read the file into its page cache (in the background)."""
    if hasattr(os, "posix_fadvise"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(descriptor)


class Embeddings:
    """GPT-2's token and position tables, memory-mapped from the .npy files
    the conversion writes (`write_embeddings`): a token's row becomes resident
    when the token is first used (38 MB in int8 if all ever were), and the
    graph starts at its first layer norm.

    The files are read ahead into the page cache at load (which is no part of
    our resident memory), so the first prompt after a start does not wait on
    the disk for its rows: about 3 ms of a 35 ms first token when the system
    had dropped them."""

    def __init__(self, folder: Path, precision: str) -> None:
        names = embedding_files(precision)
        for name in names:
            read_ahead(folder / name)
        tokens, positions, *scales = (np.load(folder / name, mmap_mode="r") for name in names)
        self.tokens, self.positions = tokens, positions
        self.scales = scales[0] if scales else None
        self.width = int(tokens.shape[1])

    def look_up(self, ids: Any, positions: Any, out: npt.NDArray[np.float32]) -> None:
        """out = token rows (times their scales) + position rows."""
        if self.scales is None:
            np.copyto(out, self.tokens[ids])
        else:
            np.multiply(self.tokens[ids], self.scales[ids][..., None], out=out)
        out += self.positions[positions]


@dataclass
class _State:
    """Rows [start, start + len(lengths)) of the model's KV buffers; row i holds
    lengths[i] tokens. `start` is 0 except for a prefill placed after other rows."""

    lengths: npt.NDArray[np.int32]
    version: int  # the model's version when made: a state is used at most once
    start: int = 0


class OnnxStepModel:
    """Steps the graph with its KV cache in preallocated buffers, in place.

    One buffer per layer for keys and one for values, [rows, heads, context,
    head_dim], allocated zeroed (pages become resident only when written); the
    active rows are always the first ones, so the graph runs on a view of the
    first n rows. Inputs and outputs are bound once per batch size (I/O
    binding): a step writes each row's embedding and a few integers and reads
    back the logits, and nothing of the cache is copied. A prompt's keys and
    values come back from the graph's prompt path and are copied into its
    rows (`_prefill_group`). Rows are compacted when some finish. States are
    used at most once: each call returns the state to use next.

    `small_session`, where there is one, runs the steps of at most `small_rows`
    rows (int8's small-batch graph); both graphs read and write the same cache.
    """

    def __init__(
        self,
        session: Any,
        layers: int,
        heads: int,
        head_dim: int,
        context: int,
        max_rows: int,
        embeddings: Embeddings,
        small_session: Any = None,
        small_rows: int = SMALL_ROWS,
    ) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.session = session
        self.small_session = small_session
        self.small_rows = small_rows if small_session is not None else 0
        self.embeddings = embeddings
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.context, self.max_rows = context, max_rows
        self.vocab = int(session.get_outputs()[0].shape[1])
        self.forward_calls = 0
        # [layer, key/value, row, head, position, dim], in anonymous memory of our
        # own: its pages are zero and become resident only when written, in 4 KB
        # pages (numpy would ask for 2 MB huge pages, which made a 50-token prompt
        # resident as 94 MB), and rows that leave are handed back (`_release`),
        # but for the first (RESIDENT_ROWS).
        # int8 where the graph's cache is quantized (int8 and int4 precisions).
        shape = (layers, 2, max_rows, heads, context, head_dim)
        kind = next(i.type for i in session.get_inputs() if i.name == "past_key_0")
        dtype = np.dtype(np.int8 if kind == "tensor(int8)" else np.float32)
        self._memory = mmap.mmap(
            -1, int(np.prod(shape)) * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        )
        self.cache = np.frombuffer(self._memory, dtype=dtype).reshape(shape)
        # Two logits buffers, used in turn: a step's logits stay valid through the next step.
        self._logits = [np.empty((max_rows, self.vocab), dtype=np.float32) for _ in range(2)]
        self._tops: dict[tuple[int, int], npt.NDArray[np.int64]] = {}
        self._flip = 0
        self._version = 0
        self._steps: dict[int, _Binding] = {}  # decoding bindings by batch size
        self._top_k = 0
        self._last_top: npt.NDArray[np.int64] | None = None
        # Prompts through the main graph's prompt path (MultiHeadAttention, then
        # the keys and values copied into the cache here) where it has one
        # (`has_prompt_path`); False: through GroupQueryAttention, as steps go
        # (a test compares the two).
        self.has_prompt_path = any(i.name == "is_prompt" for i in session.get_inputs())
        self.prompt_path = self.has_prompt_path

    # ------------------------------------------------------------------ running
    def _binding(
        self, start: int, rows: int, width: int, session: Any = None, prompt: bool = False
    ) -> _Binding:
        if start + rows > self.max_rows:
            raise RuntimeError(f"{start + rows} rows do not fit the cache's {self.max_rows}")
        return _Binding(self, session or self.session, start, rows, width, prompt)

    def _run(self, bound: _Binding) -> Logits:
        rows = bound.rows
        k = 0
        if self._top_k:  # rounded up, so one binding serves many widths
            k = min(self.vocab, -(-self._top_k // TOP_STEP) * TOP_STEP)
        bound.top_k[0] = max(k, 1)
        self._flip ^= 1
        logits = self._logits[self._flip][:rows]
        top = self._tops.get((max(k, 1), self._flip))
        if top is None:
            top = np.empty((self.max_rows, max(k, 1)), dtype=np.int64)
            self._tops[(max(k, 1), self._flip)] = top
        bound.bind_outputs(logits, top[:rows])
        self.embeddings.look_up(bound.ids, bound.pos, bound.embeds)
        bound.session.run_with_iobinding(bound.binding)
        self.forward_calls += 1
        self._last_top = top[:rows] if k else None
        return logits

    def warm_up(self) -> None:
        """A short prompt, then a step on each graph at each batch size the small
        one takes, at load: ONNX Runtime's first run of each graph and shape
        sets up its threads and memory, which the first story's first token
        would otherwise wait for. The cache rows are handed back after, but
        for the first (RESIDENT_ROWS): one page a head, key and value, layer."""
        rows = min(self.small_rows + 1, self.max_rows)  # one more than the small graph takes
        state, _ = self.prefill([[0] * PREFILL_BUCKET] * rows)
        state, _ = self.step(state, [0] * rows)  # the main graph's step
        for keep in range(min(self.small_rows, rows), 0, -1):  # the small graph's
            state, _ = self.step(self.select(state, list(range(keep))), [0] * keep)
        self.select(state, [])
        self.forward_calls = 0

    def expect_top(self, width: int) -> None:
        """The next call's rows will want their `width` best ids (0: none)."""
        self._top_k = width if 0 < width < self.vocab else 0

    def top_ids(self, width: int) -> Any:
        top = self._last_top
        if top is None or width > top.shape[1] or width >= self.vocab:
            return None
        return top

    # ---------------------------------------------------------------- the state
    def _check(self, state: _State) -> None:
        if state.version != self._version:
            raise RuntimeError("stale decoding state: the cache has moved on since it was made")

    def _new(self, lengths: npt.NDArray[np.int32], start: int = 0) -> _State:
        self._version += 1
        return _State(lengths, self._version, start)

    def prefill(
        self, rows: Sequence[Sequence[int]], after: _State | None = None
    ) -> tuple[_State, Logits]:
        """Write the prompts into the rows after `after`'s (or from row 0). A
        prompt given more than once (a vote's candidates) is computed once and
        its cache copied to the rows that repeat it."""
        start = 0
        if after is not None:
            self._check(after)
            start = len(after.lengths)
        if start + len(rows) > self.max_rows:
            raise RuntimeError(f"{start + len(rows)} rows do not fit the cache's {self.max_rows}")
        distinct, index = distinct_rows(rows)
        if len(distinct) < len(rows):
            state, logits = self._prefill(start, distinct)
            return self._repeat(state, index), logits[index]
        return self._prefill(start, rows)

    def _repeat(self, state: _State, index: list[int]) -> _State:
        """Rows [start, start + len(index)) become copies of the prefilled rows
        `index` names. Copied from the last row back: a row's source is never
        after it (`distinct_rows` numbers first occurrences), so no source is
        overwritten before it is read."""
        for target in reversed(range(len(index))):
            source = index[target]
            if source != target:
                used = int(state.lengths[source])
                self.cache[:, :, state.start + target, :, :used] = self.cache[
                    :, :, state.start + source, :, :used
                ]
        if self._last_top is not None:
            self._last_top = self._last_top[index]
        # The prefill's state was never handed out: this one takes its place.
        return _State(state.lengths[index], state.version, state.start)

    def _prefill(self, start: int, rows: Sequence[Sequence[int]]) -> tuple[_State, Logits]:
        lengths = np.array([len(row) for row in rows], dtype=np.int32)
        if lengths.min() < 1 or lengths.max() > self.context:
            raise ValueError("every prompt needs 1 to context tokens")
        logits = np.empty((len(rows), self.vocab), dtype=np.float32)
        tops: list[npt.NDArray[np.int64]] = []
        first = 0
        while first < len(rows):  # in groups: attention's scratch grows with rows x width
            stop = first + 1
            while stop < len(rows) and (stop + 1 - first) * int(
                lengths[first : stop + 1].max()
            ) <= max(PREFILL_TOKENS, int(lengths[first])):
                stop += 1
            logits[first:stop] = self._prefill_group(start + first, rows[first:stop])
            if self._last_top is not None:
                tops.append(self._last_top.copy())
            first = stop
        self._last_top = np.concatenate(tops) if tops else None
        return self._new(lengths, start), logits

    def _prefill_group(self, start: int, rows: Sequence[Sequence[int]]) -> Logits:
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        # Rounded up to a multiple of 8: 5-9 % less time than multiples of 16
        # for prompts of 20-150 tokens (87: 48 against 52 ms), level at 300;
        # exact widths were no faster. The padding is never attended to.
        width = min(self.context, -(-int(lengths.max()) // PREFILL_BUCKET) * PREFILL_BUCKET)
        bound = self._binding(start, len(rows), width, prompt=self.prompt_path)
        bound.ids[:] = 0  # right-padded; the padding is never attended to
        for index, row in enumerate(rows):
            bound.ids[index, : len(row)] = row
        bound.pos[:] = np.arange(width, dtype=np.int64)
        bound.last[:] = np.arange(len(rows), dtype=np.int64) * width + lengths - 1
        # For GroupQueryAttention (without the prompt path): a first prompt,
        # its right-padded batch.
        bound.seqlens[:] = lengths - 1
        bound.total[0] = width
        logits = self._run(bound)
        if bound.prompt_kv is not None:  # the prompt path: its keys and values, into the cache
            shape = (len(rows), width, 2, self.heads, self.head_dim)
            for layer, kv in enumerate(bound.prompt_kv):
                # [rows, width, k/v, head, dim] -> [k/v, rows, head, width, dim]
                self.cache[layer, :, start : start + len(rows), :, :width] = kv.reshape(
                    shape
                ).transpose(2, 0, 3, 1, 4)
        return logits

    def step(self, state: _State, tokens: Sequence[int]) -> tuple[_State, Logits]:
        self._check(state)
        lengths = state.lengths
        if int(lengths.max()) >= self.context:
            raise ValueError("a row is at the end of the model's context")
        rows = len(lengths)
        bound = self._steps.get(rows)
        if bound is None:
            small = rows <= self.small_rows
            bound = self._steps[rows] = self._binding(
                0, rows, 1, self.small_session if small else None
            )
            bound.last[:] = np.arange(rows)
        bound.ids[:, 0] = tokens
        bound.pos[:, 0] = lengths
        bound.seqlens[:] = lengths  # each row's length after this token, less one
        bound.total[0] = max(2, int(lengths.max()) + 1)  # >1: never read as a first prompt
        logits = self._run(bound)
        return self._new(lengths + 1), logits

    def select(self, state: _State, keep: Sequence[int]) -> _State:
        """Keep these rows, in this order, as rows 0.. (moving only what must move)."""
        self._check(state)
        order = [int(row) for row in keep]
        read_at = {source: index for index, source in enumerate(order)}
        if any(read_at.get(target, -1) > target for target in range(len(order))):
            # A row would be overwritten before it is read: copy through a
            # temporary, the positions the longest row used.
            used = int(state.lengths[order].max())  # some row moves: order is not empty
            self.cache[:, :, : len(order), :, :used] = self.cache[:, :, order, :, :used]
        else:  # in order, nothing is overwritten before it is read (increasing
            # order, or `fill_holes`'s: rows stay or move into finished rows' places)
            for target, source in enumerate(order):
                if source != target:
                    used = int(state.lengths[source])
                    self.cache[:, :, target, :, :used] = self.cache[:, :, source, :, :used]
        self._release(len(order), len(state.lengths))
        return self._new(state.lengths[order])

    def _release(self, start: int, stop: int) -> None:
        """Give the pages of rows [start, stop) back to the system (they read as
        zeros), but for the first RESIDENT_ROWS rows': what a row held past its
        length is never read (attention reads each row's own positions only,
        and rows move by their used positions), so a row's stale pages are
        only memory."""
        start = max(start, RESIDENT_ROWS)
        if stop <= start:
            return
        row = self.cache[0, 0, 0].nbytes
        page = mmap.PAGESIZE
        for layer in range(self.layers):
            for kind in range(2):
                begin = self.cache[layer, kind, start].ctypes.data - self.cache.ctypes.data
                end = begin + (stop - start) * row
                begin = -(-begin // page) * page  # whole pages inside the rows only
                end = end // page * page
                if end > begin:
                    self._memory.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def merge(self, first: _State, second: _State) -> _State:
        """`second` was prefilled after `first`: the rows are in place already."""
        self._check(second)
        if first.version != second.version - 1 or second.start != len(first.lengths):
            raise RuntimeError("merge takes a state and the prefill placed right after it")
        return self._new(np.concatenate([first.lengths, second.lengths]))


class _Binding:
    """One run's inputs and outputs bound to arrays (I/O binding): the cache rows
    [start, start + rows) serve as both past and present (but for a prompt on
    the prompt path, which leaves the cache alone), and the small inputs are
    arrays written in place before each run."""

    def __init__(
        self,
        model: OnnxStepModel,
        session: Any,
        start: int,
        rows: int,
        width: int,
        prompt: bool = False,
    ) -> None:
        ort = model._ort
        self.rows = rows
        self.session = session
        self.binding = session.io_binding()
        self._kept: list[Any] = []  # arrays bound here: they must outlive the binding
        # A graph with a prompt path (`onnx_graph`'s `attention`) is told which
        # run this is; for a prompt, it returns the prompt's keys and values per
        # layer (`prompt_kv`, [rows, width, 2 x hidden]), for the backend to
        # write into the cache, and leaves the cache alone; for a step,
        # placeholders of [1, 1, 2 x hidden].
        self.prompt_kv: npt.NDArray[Any] | None = None
        if session is model.session and model.has_prompt_path:
            self._kept.append(np.array([prompt]))
            self.binding.bind_ortvalue_input(
                "is_prompt", ort.OrtValue.ortvalue_from_numpy(self._kept[-1])
            )
            shape = (rows, width) if prompt else (1, 1)
            kv = np.empty(
                (model.layers, *shape, 2 * model.heads * model.head_dim), model.cache.dtype
            )
            for layer in range(model.layers):
                self.binding.bind_ortvalue_output(
                    f"prompt_kv_{layer}", ort.OrtValue.ortvalue_from_numpy(kv[layer])
                )
            self._kept.append(kv)
            self.prompt_kv = kv if prompt else None
        # The cache rows; for a prompt on the prompt path, placeholders one
        # position long ([layer, key/value, past/present, row, head, 1, dim]).
        placeholders = None
        if self.prompt_kv is not None:
            placeholders = np.zeros(
                (model.layers, 2, 2, rows, model.heads, 1, model.head_dim), model.cache.dtype
            )
            self._kept.append(placeholders)
        for layer in range(model.layers):
            for index, kind in enumerate(("key", "value")):
                if placeholders is None:
                    past = present = model.cache[layer, index, start : start + rows]
                else:
                    past, present = placeholders[layer, index]
                self.binding.bind_ortvalue_input(
                    f"past_{kind}_{layer}", ort.OrtValue.ortvalue_from_numpy(past)
                )
                self.binding.bind_ortvalue_output(
                    f"present_{kind}_{layer}", ort.OrtValue.ortvalue_from_numpy(present)
                )
        # Token ids and positions are looked up here (`Embeddings`) into
        # `embeds`, the graph's input.
        self.ids = np.zeros((rows, width), dtype=np.int64)
        self.pos = np.zeros((rows, width), dtype=np.int64)
        self.embeds = np.zeros((rows, width, model.embeddings.width), dtype=np.float32)
        self.seqlens = np.zeros(rows, dtype=np.int32)
        self.total = np.zeros(1, dtype=np.int32)
        self.last = np.zeros(rows, dtype=np.int64)
        self.top_k = np.zeros(1, dtype=np.int64)
        for name, array in (
            ("inputs_embeds", self.embeds),
            ("seqlens_k", self.seqlens),
            ("total_seq_len", self.total),
            ("last_index", self.last),
            ("top_k", self.top_k),
        ):  # the OrtValues share the arrays' memory: writing an array changes the input
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        self._ort = ort
        self._outputs: dict[tuple[int, int], tuple[Any, Any]] = {}

    def bind_outputs(self, logits: Logits, top: npt.NDArray[np.int64]) -> None:
        key = (logits.ctypes.data, top.ctypes.data)
        values = self._outputs.get(key)
        if values is None:
            values = self._outputs[key] = (
                self._ort.OrtValue.ortvalue_from_numpy(logits),
                self._ort.OrtValue.ortvalue_from_numpy(top),
            )
        self.binding.bind_ortvalue_output("logits", values[0])
        self.binding.bind_ortvalue_output("top_ids", values[1])


class OnnxBackend(LocalBackend):
    """GPT-2 on ONNX Runtime; converts the model folder on first use.

    int8 loads two graphs of the same weights (`small_batch_graph`): one for
    prompts and for steps of three rows or more, one for steps of one or two
    rows, where it is 10-15 % faster; False keeps to the first and saves the
    second's memory (about 125 MB for GPT-2 small)."""

    steps: OnnxStepModel

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch_size: int = 8,
        threads: int | None = None,
        precision: str = "int8",
        allow_spinning: bool = True,
        spin_us: int = SPIN_US,
        small_batch_graph: bool = True,
    ) -> None:
        import onnxruntime as ort

        if precision not in ("fp32", "int8", "int4"):
            raise ValueError(f"unknown precision {precision!r}")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.tokenizer = load_fast_tokenizer(model_dir)
        path = convert(model_dir, precision)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime picks (all cores)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # ONNX Runtime's threads spin-wait for the next op. Unbounded (its
        # default), they also spin between steps, while the worker samples in
        # Python, and collapse when another process wants the cores: a batch-1
        # step took 20.5 ms instead of 11.6 with one busy process beside it. A
        # short spin keeps the threads awake between the ops of one step and
        # lets them sleep between steps: 6.2 ms instead of 8.1 on a quiet
        # machine, 11.5 beside a busy process (spinning off: 8.1 and 11.6).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning and spin_us > 0 else "0"
        )
        if allow_spinning and spin_us > 0:
            options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))

        def load(graph: Path) -> Any:
            try:
                return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            except Exception as error:
                raise ModelLoadError(f"ONNX model {graph} could not be loaded: {error}") from error

        small = small_path(model_dir, precision) if small_batch_graph else None
        session = load(path)
        small_session = load(small) if small else None
        try:
            embeddings = Embeddings(path.parent, precision)
        except (OSError, ValueError) as error:
            raise ModelLoadError(
                f"the embeddings beside {path} could not be read: {error}"
            ) from error
        config = _config(model_dir)
        self.name = "onnx" if precision == "fp32" else f"onnx-{precision}"
        self.precision = precision
        self.model_id = model_id_of(model_dir)
        self.context_size = int(config.get("n_positions", 1024))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.max_batch_size = max_batch_size
        heads = int(config["n_head"])
        self.steps = OnnxStepModel(
            session,
            int(config["n_layer"]),
            heads,
            int(config["n_embd"]) // heads,
            self.context_size,
            max_batch_size,
            embeddings=embeddings,
            small_session=small_session,
        )
        self.steps.warm_up()
        log.info(
            "loaded %s from %s on ONNX Runtime (%s%s)",
            self.model_id,
            path,
            precision,
            ", with the small-batch graph" if small else "",
        )

    def close(self) -> None:
        # The cached bindings hold their sessions too: drop them, or the
        # graphs' memory outlives the backend.
        self.steps._steps.clear()
        self.steps.session = self.steps.small_session = None
