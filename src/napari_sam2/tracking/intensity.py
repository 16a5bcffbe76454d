"""Contrast limits for any intensity type, chosen from a small sample of the stack.

SAM 2 expects RGB values in [0, 1]. Microscopy and medical stacks come as uint16, signed
integers (CT in Hounsfield units, MR) or floats with NaN padding, so a stack is mapped by
``(x - lo) / (hi - lo)`` clipped to [0, 1], with ``(lo, hi)`` either given by the caller (for
instance a napari layer's contrast limits) or taken from robust percentiles of a sample.
The sample is a few evenly spaced frames read at a pixel stride, never the whole stack.
Non-finite pixels are left out of the sample; when mapped, ``+inf`` becomes 1 (the top of the
range, like any value above ``hi``), ``-inf`` becomes 0 and NaN (no data) becomes 0.

Windows (:func:`window_limits`, :func:`mr_limits`, :func:`resolve_window`) name the limits
the way radiologists do: a CT window is a width and a level in Hounsfield units (``lung`` is
1500 / -600, i.e. limits (-1350, 150)); MR has no absolute scale, so its window is the 0.5 and
99.5 percentiles of the non-zero voxels (the air around the body would pull the low end down).
16-bit microscopy keeps the robust percentiles of :func:`robust_contrast_limits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)
"""Lower and upper percentile used when no contrast limits are given."""

SAMPLE_FRAMES = 8
"""At most this many frames are read to choose contrast limits."""

SAMPLE_PIXELS_PER_FRAME = 65536
"""Frames are read at a stride that keeps about this many pixels per frame."""


def dtype_range_limits(dtype: np.dtype) -> tuple[float, float] | None:
    """Limits fixed by the dtype alone: uint8 -> (0, 255), bool -> (0, 1); None for others."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return (0.0, 255.0)
    if dtype == np.bool_:
        return (0.0, 1.0)
    return None


def sample_frame_indices(num_frames: int, max_frames: int = SAMPLE_FRAMES) -> list[int]:
    """Evenly spaced frame indices (first and last included) for sampling intensities."""
    if num_frames <= 0:
        return []
    count = min(num_frames, max(1, max_frames))
    return sorted({int(round(v)) for v in np.linspace(0, num_frames - 1, count)})


def _read_strided(frames: Any, index: int, max_pixels: int) -> np.ndarray:
    """One frame of ``frames`` (T, H, W[, C]) read at a spatial stride (H and W strided)."""
    shape = tuple(frames.shape)
    height, width = shape[1], shape[2]
    stride = max(1, int(np.ceil(np.sqrt(height * width / max(1, max_pixels)))))
    try:
        block = frames[index, ::stride, ::stride]
    except (TypeError, IndexError, ValueError):
        block = np.asarray(frames[index])[::stride, ::stride]
    return np.asarray(block)


def robust_contrast_limits(
    frames: Any,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    *,
    max_frames: int = SAMPLE_FRAMES,
    max_pixels_per_frame: int = SAMPLE_PIXELS_PER_FRAME,
    channels: Sequence[int] | None = None,
) -> tuple[float, float]:
    """Percentile contrast limits of a sample of ``frames`` (T, H, W) or (T, H, W, C).

    NaN and inf are ignored. ``channels`` restricts the sample to those channels of the last
    axis (only for 4-D stacks). A stack without any finite value gives (0, 1); a constant
    stack gives ``(v, v)``, which :func:`scale_to_unit` maps to 0 without dividing by zero.
    """
    lo_p, hi_p = percentiles
    if not (0.0 <= lo_p < hi_p <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    sample = _finite_sample(frames, max_frames, max_pixels_per_frame, channels)
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    return (float(lo), float(hi))


def _finite_sample(
    frames: Any, max_frames: int, max_pixels_per_frame: int, channels: Sequence[int] | None
) -> np.ndarray:
    """The finite values of a few evenly spaced frames read at a stride, as float64."""
    shape = tuple(frames.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"expected frames of shape (T, H, W) or (T, H, W, C), got shape {shape}")
    values = []
    for t in sample_frame_indices(shape[0], max_frames):
        block = _read_strided(frames, t, max_pixels_per_frame)
        if block.ndim == 3 and channels is not None:
            block = block[..., list(channels)]
        block = block.reshape(-1)
        if block.dtype.kind == "c":
            raise TypeError("complex-valued images are not supported; pass abs(x) or x.real")
        if block.dtype.kind == "f":
            block = block[np.isfinite(block)]
        values.append(block.astype(np.float64, copy=False))
    return np.concatenate(values) if values else np.empty(0)


def choose_contrast_limits(
    frames: Any,
    contrast_limits: Sequence[float] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    channels: Sequence[int] | None = None,
) -> tuple[float, float]:
    """The caller's limits if given (checked), else the dtype's range, else robust percentiles."""
    if contrast_limits is not None:
        return validate_contrast_limits(contrast_limits)
    fixed = dtype_range_limits(np.dtype(frames.dtype))
    if fixed is not None:
        return fixed
    return robust_contrast_limits(frames, percentiles, channels=channels)


def validate_contrast_limits(contrast_limits: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` as floats; a clear error for anything else or for ``hi < lo``."""
    try:
        lo, hi = (float(v) for v in contrast_limits)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"contrast_limits must be two numbers (lo, hi), got {contrast_limits!r}"
        ) from err
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"contrast_limits must be finite, got ({lo}, {hi})")
    if hi < lo:
        raise ValueError(
            f"contrast_limits must have lo <= hi, got ({lo}, {hi}); swap the two values"
        )
    return (lo, hi)


def scale_to_unit(x: Any, lo: float, hi: float) -> Any:
    """``(x - lo) / (hi - lo)`` clipped to [0, 1], in a new array (``x`` is never changed).

    Non-finite values follow the clipping: ``+inf`` is above any range and maps to 1 (white,
    like a saturated pixel), ``-inf`` maps to 0, and NaN (no data) maps to 0, the bottom of the
    range. Works on torch tensors and numpy arrays; integer arrays are scaled in float64
    (numpy) or float32 (torch), never in their own type (which would wrap below ``lo``).
    With ``hi == lo`` (a constant image) the denominator is 1, so the image maps to 0 where
    ``x <= lo``. For float32 input and limits (0, 1) the result is bitwise the input clipped.
    """
    denom = hi - lo if hi > lo else 1.0
    # One new array, then in place: a full-size frame costs one copy, not one per step.
    if hasattr(x, "nan_to_num_"):  # torch
        if not x.is_floating_point():  # integers would wrap below lo and divide in place
            x = x.float()
        y = x - lo
        y /= denom
        return y.nan_to_num_(nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    x = np.asarray(x)
    y = np.asarray(np.subtract(x, lo, dtype=None if x.dtype.kind == "f" else np.float64))
    y /= denom
    np.nan_to_num(y, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, 0.0, 1.0, out=y)


# --- windows ---------------------------------------------------------------------------------

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (400.0, 40.0),
    "abdomen": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
}
"""CT window presets as (width, level) in Hounsfield units."""

MR_WINDOW = "mr"
"""The window name of the MR rule: percentiles of the non-zero voxels (:func:`mr_limits`)."""

MR_PERCENTILES = (0.5, 99.5)
"""Lower and upper percentile of the non-zero voxels used by :func:`mr_limits`."""

MR_SAMPLE_FRAMES = 16
"""Slices read by :func:`mr_limits`: more than for microscopy, as the first and last slices of
an MR volume are often mostly air."""


def window_names() -> tuple[str, ...]:
    """The names :func:`parse_window` takes: the CT presets, then ``"mr"``."""
    return (*CT_WINDOWS, MR_WINDOW)


def parse_window(window: str | Sequence[float]) -> str | tuple[float, float]:
    """A window as a preset name (``"lung"``, ``"soft-tissue"``, ``"MR"``: case, ``-`` and
    ``_`` do not matter) or ``(width, level)`` (also the text ``"W,L"``, e.g. ``"400,40"``).

    Raises ValueError naming the presets for anything else, or for a width that is not > 0.
    """
    if isinstance(window, str):
        name = " ".join(window.strip().lower().replace("-", " ").replace("_", " ").split())
        if name in CT_WINDOWS or name == MR_WINDOW:
            return name
        if "," not in window:
            raise ValueError(
                f"unknown window {window!r}: choose one of {', '.join(window_names())} or give "
                "WIDTH,LEVEL (e.g. 400,40)"
            )
        parts: Sequence[Any] = window.split(",")
    else:
        parts = list(window)
    try:
        width, level = (float(v) for v in parts)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"a window is a preset name or two numbers WIDTH,LEVEL, got {window!r}"
        ) from err
    if not (np.isfinite(width) and np.isfinite(level)):
        raise ValueError(f"window width and level must be finite, got ({width}, {level})")
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return (width, level)


def window_limits(window: str | Sequence[float]) -> tuple[float, float]:
    """Contrast limits ``(level - width / 2, level + width / 2)`` of a CT preset name or a
    ``(width, level)`` pair (see :func:`parse_window`). The MR rule depends on the data: use
    :func:`mr_limits` or :func:`resolve_window` for it."""
    parsed = parse_window(window)
    if parsed == MR_WINDOW:
        raise ValueError("the mr window depends on the image: use mr_limits(frames)")
    width, level = CT_WINDOWS[parsed] if isinstance(parsed, str) else parsed
    return (level - width / 2.0, level + width / 2.0)


def mr_limits(
    frames: Any,
    percentiles: tuple[float, float] = MR_PERCENTILES,
    *,
    max_frames: int = MR_SAMPLE_FRAMES,
    max_pixels_per_frame: int = SAMPLE_PIXELS_PER_FRAME,
    channels: Sequence[int] | None = None,
) -> tuple[float, float]:
    """Percentile limits of the non-zero voxels of ``frames`` (T, H, W) or (T, H, W, C).

    The sample is a few evenly spaced slices read at a pixel stride, as for
    :func:`robust_contrast_limits`, so a large stack costs a few slices. Zeros (the air and
    padding around the body) and non-finite values are left out; a stack without any non-zero
    value gives (0, 1).
    """
    lo_p, hi_p = percentiles
    if not (0.0 <= lo_p < hi_p <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    sample = _finite_sample(frames, max_frames, max_pixels_per_frame, channels)
    sample = sample[sample != 0]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    return (float(lo), float(hi))


def resolve_window(
    frames: Any, window: str | Sequence[float], channels: Sequence[int] | None = None
) -> tuple[float, float]:
    """The contrast limits of ``window`` for ``frames``: :func:`mr_limits` for ``"mr"``,
    else :func:`window_limits`."""
    if parse_window(window) == MR_WINDOW:
        return mr_limits(frames, channels=channels)
    return window_limits(window)
