"""DEVICE for the transformers backend: auto, an explicit CPU, a GPU that is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.settings import SettingsError, load_settings
from generation.errors import ModelLoadError
from generation.torch_backend import TransformersBackend, resolve_device


def test_auto_picks_a_gpu_only_when_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_an_absent_gpu_is_a_clear_start_up_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="DEVICE=cuda:1: no CUDA GPU is available here"):
        TransformersBackend(tiny_model_dir, device="cuda:1")


def test_device_setting_is_checked() -> None:
    assert load_settings(device="cuda:0").device == "cuda:0"
    with pytest.raises(SettingsError, match=r"^DEVICE"):
        load_settings(device="gpu")
