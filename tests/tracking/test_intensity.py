"""Contrast limits from a sample of the stack."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.tracking.intensity import (
    choose_contrast_limits,
    robust_contrast_limits,
    sample_frame_indices,
    scale_to_unit,
    validate_contrast_limits,
)


def test_uint8_uses_full_range_and_uint16_uses_percentiles() -> None:
    assert choose_contrast_limits(np.zeros((2, 4, 4), np.uint8)) == (0.0, 255.0)
    data = np.arange(3000, dtype=np.uint16).reshape(3, 10, 100)
    lo, hi = choose_contrast_limits(data)
    assert 10 < lo < 20 and 2980 < hi < 2990


def test_signed_mr_like_values_keep_their_sign() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(-200, 50, (5, 40, 40)).astype(np.int16)
    lo, hi = choose_contrast_limits(data)
    assert lo < -300 and -150 < hi < -50


def test_caller_limits_win_and_are_validated() -> None:
    assert choose_contrast_limits(np.zeros((1, 2, 2), np.uint16), (10, 20)) == (10.0, 20.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        validate_contrast_limits((5, 1))
    with pytest.raises(ValueError, match="two numbers"):
        validate_contrast_limits((1,))


def test_sample_reads_few_frames_at_a_stride() -> None:
    reads = []

    class Spy:
        shape, dtype = (1000, 512, 512), np.dtype(np.uint16)

        def __getitem__(self, key):
            reads.append(key)
            t, ys, xs = key
            return np.full((len(range(512)[ys]), len(range(512)[xs])), t, np.uint16)

    lo, hi = robust_contrast_limits(Spy(), max_frames=8, max_pixels_per_frame=4096)
    assert len(reads) == 8
    assert all(key[1].step == 8 for key in reads)  # 512 / sqrt(4096)
    assert lo >= 0 and hi <= 999
    assert sample_frame_indices(5, 8) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(100, 3) == [0, 50, 99]


def test_nonfinite_constant_and_empty_stacks() -> None:
    data = np.full((2, 8, 8), np.nan, np.float32)
    assert robust_contrast_limits(data) == (0.0, 1.0)
    data[0, 0, :4] = [1, 2, np.inf, -np.inf]
    lo, hi = robust_contrast_limits(data)
    assert 1 <= lo <= hi <= 2
    const = np.full((3, 4, 4), 7, np.uint16)
    lo, hi = choose_contrast_limits(const)
    assert lo == hi == 7
    y = scale_to_unit(const.astype(np.float64), lo, hi)
    assert np.all(np.isfinite(y)) and np.all(y == 0)


def test_scale_to_unit_maps_plus_inf_to_the_top_and_nan_and_minus_inf_to_the_bottom() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 5.0, 15.0, 0.0])
    np.testing.assert_array_equal(scale_to_unit(x, 0, 10), [0, 1, 0, 0.5, 1, 0])
