"""Fixtures for the network tests: the mini model (reference weights, parity tests) in float32
and float64 and its inputs, and the small random-weight model in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam2.model import SAM2Model, build_sam2


@pytest.fixture(scope="session")
def mini_model_f64(mini_config, mini_checkpoint) -> SAM2Model:
    return build_sam2(mini_config, checkpoint=mini_checkpoint).to(torch.float64)


@pytest.fixture(scope="session")
def small_model_f64(small_config, small_checkpoint) -> SAM2Model:
    """The small test network in float64 (its own copy: ``small_model`` stays float32)."""
    return build_sam2(small_config, checkpoint=small_checkpoint).to(torch.float64)


@pytest.fixture(scope="session")
def mini_frames(mini_dir: Path) -> np.ndarray:
    """(8, 256, 256, 3) float32 frames of the video scenario."""
    return np.load(mini_dir / "frames.npy")


@pytest.fixture(params=["float32", "float64"], scope="session")
def precision(request, mini_model, mini_model_f64, mini_dir):
    """(model, dtype, image fixture, video fixture, atol) for one precision."""
    if request.param == "float32":
        return (
            mini_model,
            torch.float32,
            np.load(mini_dir / "image.npz"),
            np.load(mini_dir / "video.npz"),
            1e-4,
        )
    return (
        mini_model_f64,
        torch.float64,
        np.load(mini_dir / "image_f64.npz"),
        np.load(mini_dir / "video_f64.npz"),
        1e-6,
    )
