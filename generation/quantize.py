"""Reduced precision for the transformers backend, without a new engine.

GPT-2's blocks use transformers' `Conv1D` (a linear layer with its weight
transposed), which `torch.ao.quantization.quantize_dynamic` does not know, so
out of the box only the output head is quantized. Each Conv1D becomes an
`nn.Linear` holding the transposed weight (exactly the same function in fp32),
then every Linear is quantized to int8 (per-channel weight scales) with
dynamic activation scales.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every transformers Conv1D by an equivalent nn.Linear, in place."""
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                weight = child.weight  # [in, out]
                linear = nn.Linear(weight.shape[0], weight.shape[1], bias=child.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
                replaced += 1
    return replaced


def quantize_int8(model: Any) -> Any:
    """int8 weights, dynamic int8 activations, for every Linear (lm_head included)."""
    conv1d_to_linear(model)
    # Per-channel weight scales: one scale per output row keeps small rows precise
    # (per-tensor scales cost measurable top-1 agreement on small models).
    # torch.ao.quantization is deprecated in favour of torchao, but still ships in
    # the torch we pin (2.13) and is measured here; revisit when torch is upgraded.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: qconfig}, dtype=torch.qint8
        )
    return quantized
