"""Frames the network sees: non-finite pixels map sensibly, huge frames cost bounded memory.

``+inf`` is above any contrast range (white), ``-inf`` below it and NaN (no data) is the bottom.
A frame much larger than the model input is scaled and shrunk strip by strip: no full-size
float copy, the same network input.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.tracking import frames as frames_module
from napari_sam2.tracking.frames import IMAGENET_MEAN, IMAGENET_STD, FrameSource
from napari_sam2.tracking.intensity import scale_to_unit

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Network input back to [0, 1] intensities."""
    return x * STD + MEAN


# --- non-finite intensities ----------------------------------------------------------------


@pytest.mark.parametrize("as_torch", [False, True])
def test_plus_inf_is_the_top_minus_inf_and_nan_the_bottom(as_torch) -> None:
    values = np.array([np.nan, np.inf, -np.inf, 5.0, 15.0, -3.0])
    x = torch.from_numpy(values.copy()) if as_torch else values.copy()
    y = np.asarray(scale_to_unit(x, 0.0, 10.0))
    np.testing.assert_array_equal(y, [0, 1, 0, 0.5, 1, 0])
    np.testing.assert_array_equal(np.asarray(x), values)  # the input is left as it was


def test_integer_input_is_not_wrapped_below_the_low_limit() -> None:
    x = np.array([0, 1, 2, 3, 60000], np.uint16)
    np.testing.assert_array_equal(scale_to_unit(x, 1, 3), [0, 0, 0.5, 1, 1])
    t = torch.tensor([0, 1, 2, 3], dtype=torch.int16)
    assert scale_to_unit(t, 1, 3).tolist() == [0, 0, 0.5, 1]


def test_frame_with_plus_inf_pixels_shows_them_white() -> None:
    frames = np.full((1, 16, 16), 50.0, np.float32)
    frames[0, 3, 4] = np.inf
    frames[0, 5, 6] = -np.inf
    frames[0, 7, 8] = np.nan
    x = _unit(FrameSource(frames, 16, contrast_limits=(0, 100)).model_input(0))
    assert torch.isfinite(x).all()
    assert torch.allclose(x[:, 3, 4], torch.ones(3), atol=1e-6)
    assert torch.allclose(x[:, 5, 6], torch.zeros(3), atol=1e-6)
    assert torch.allclose(x[:, 7, 8], torch.zeros(3), atol=1e-6)
    assert torch.allclose(x[:, 0, 0], torch.full((3,), 0.5), atol=1e-6)


# --- huge frames ---------------------------------------------------------------------------

S = 64  # a small model input, so a 1000 x 1000 frame counts as huge (over 4 S x S pixels)


def _huge(shape: tuple[int, ...], dtype: type = np.uint16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape).astype(dtype)


def test_huge_frame_is_prepared_without_a_full_size_float_copy(monkeypatch) -> None:
    frames = _huge((1, 1000, 1200))
    src = FrameSource(frames, S, contrast_limits=(0, 4000), prefetch=0)
    src.model_input(0)  # first call: one-time allocations of torch and numpy are not counted
    resized: list[int] = []
    interpolate = F.interpolate

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        resized.append(x.numel())
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(frames_module.F, "interpolate", spy)
    tracemalloc.start()
    try:
        out = src.model_input(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (3, S, S)
    # numpy's float copies were 4 times the uint16 frame (float64); now one strip at a time.
    assert peak < frames.nbytes / 4, f"peak {peak} B for a {frames.nbytes} B frame"
    # The resize never sees the full-size frame, let alone three copies of it (grey -> RGB).
    assert max(resized) <= 1000 * S


@pytest.mark.parametrize(
    "shape, channels",
    [
        ((1, 1000, 700), None),  # grey, taller than wide
        ((1, 40, 3000), None),  # a wide panorama: the height is enlarged
        ((1, 900, 800, 3), None),  # RGB
        ((1, 900, 800, 2), [0, 1]),  # red and green
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_huge_frames_give_the_same_input_as_the_whole_frame_resize(
    monkeypatch, shape, channels, dtype
) -> None:
    frames = _huge(shape, dtype)
    frames.reshape(-1)[::997] = 60000  # a few saturated pixels above the limits
    kwargs = dict(contrast_limits=(100, 3900), channels=channels, prefetch=0)
    strips = FrameSource(frames, S, **kwargs).model_input(0)
    monkeypatch.setattr(frames_module, "LARGE_FRAME_FACTOR", 10**9)  # the whole-frame path
    whole = FrameSource(frames, S, **kwargs).model_input(0)
    # Equal up to float rounding (bitwise on the torch versions tested: the antialiased
    # resize is separable, horizontal pass first).
    torch.testing.assert_close(strips, whole, rtol=0, atol=1e-5)
    if channels is not None:
        assert torch.allclose(_unit(strips)[2], torch.zeros(S, S), atol=1e-6)  # blue empty


def test_huge_read_only_memmap_frames_work(tmp_path) -> None:
    data = _huge((2, 600, 900)).astype(np.float64)
    path = tmp_path / "stack.dat"
    mm = np.memmap(path, dtype=np.float64, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    ro = np.memmap(path, dtype=np.float64, mode="r", shape=data.shape)
    a = FrameSource(ro, S, contrast_limits=(0, 4000), prefetch=0).model_input(1)
    b = FrameSource(data, S, contrast_limits=(0, 4000), prefetch=0).model_input(1)
    assert torch.equal(a, b)
    np.testing.assert_array_equal(np.asarray(ro), data)  # the file is left as it was
