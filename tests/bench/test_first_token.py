"""The benchmark's first-token figure: every lone story of every round, pooled."""

from __future__ import annotations

import math
from typing import Any

from bench.__main__ import markdown, summarise
from bench.worker import first_tokens


def test_a_round_keeps_the_story_after_load_and_every_sample() -> None:
    nan = float("nan")
    round_ = first_tokens([0.050, 0.030, nan, 0.040])
    assert round_["ttft_first_s"] == 0.050  # right after load, kept on its own
    assert round_["ttft_s"] == 0.040  # the median of what streamed
    assert len(round_["ttft_samples_s"]) == 4
    assert math.isnan(first_tokens([nan, nan])["ttft_s"])  # nothing streamed: no figure


def _run(samples: list[float]) -> dict[str, Any]:
    return {"batch1_s": 1.0, **first_tokens(samples)}


def test_the_figure_is_the_median_of_all_samples_not_of_the_rounds_medians() -> None:
    nan = float("nan")
    runs = {
        "hf-generate": [_run([0.2, 0.2, 0.2]), _run([0.2, 0.2, 0.2])],
        # Round medians 31 and 35 ms (their median 33); all six pooled: 34.5 ms.
        # The second round's slow story after load (46 ms) is its own figure.
        "onnx-int8": [_run([0.030, 0.031, 0.050]), _run([0.046, 0.034, 0.035])],
        # A remote server may stream nothing: no sample, and no after-load figure.
        "remote": [_run([nan, 0.040, 0.042]), _run([0.044, nan, nan])],
    }
    summary = summarise(runs, 200, [], 10.0, 124_000_000)
    row = summary["onnx-int8"]
    assert round(row["ttft_ms"], 1) == 34.5
    assert round(row["ttft_first_ms"], 1) == 38.0  # the median of 30 and 46
    assert row["ttft_range_ms"] == (30.0, 50.0)
    assert row["ttft_samples"] == 6
    remote = summary["remote"]
    assert (round(remote["ttft_ms"], 1), remote["ttft_samples"]) == (42.0, 3)
    assert round(remote["ttft_first_ms"], 1) == 44.0  # the one round that streamed
    meta = {
        "when": "now",
        "machine": "here",
        "cores": 2,
        "bandwidth_gb_s": 10.0,
        "params": 124_000_000,
        "tokens": 200,
        "rounds": 2,
        "mean_gap_s": 0.25,
        "prompt_tokens": 87,
    }
    text = markdown(summary, meta, [])
    assert "87 tokens here" in text
    assert "| onnx-int8 | 34 ms | 38 ms | 30 ms – 50 ms | 6 |" in text
