"""Validation of the tracker's inputs, with messages that say what was wrong and what to do.

Coordinates follow napari: (y, x) in frame pixels, pixel (i, j) covering [i - 0.5, i + 0.5], so
the frame spans -0.5 .. H - 0.5 in y and -0.5 .. W - 0.5 in x.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "check_frame",
    "check_object_id",
    "check_points",
    "check_labels",
    "check_box",
    "check_mask",
]


def check_frame(frame_index: Any, num_frames: int) -> int:
    """An integer frame index in 0 .. num_frames - 1."""
    if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)):
        raise TypeError(f"frame index must be an integer, got {frame_index!r}")
    frame = int(frame_index)
    if not 0 <= frame < num_frames:
        raise IndexError(
            f"frame index {frame} is out of range: the stack has {num_frames} frames "
            f"(0..{num_frames - 1})"
        )
    return frame


def check_object_id(object_id: Any) -> int:
    """An integer object id (label value)."""
    if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
        raise TypeError(f"object id must be an integer, got {object_id!r}")
    return int(object_id)


def _check_inside(yx: np.ndarray, height: int, width: int, what: str) -> None:
    y, x = yx[:, 0], yx[:, 1]
    bad = (y < -0.5) | (y > height - 0.5) | (x < -0.5) | (x > width - 0.5)
    if bad.any():
        raise ValueError(
            f"{what} {yx[bad].tolist()} (y, x) lie outside the {height} x {width} frame "
            f"(y in [-0.5, {height - 0.5}], x in [-0.5, {width - 0.5}])"
        )


def check_points(points: Any, height: int, width: int) -> np.ndarray:
    """(N, 2) float64 (y, x) points inside the frame; one point may be given as (y, x)."""
    yx = np.asarray(points, dtype=np.float64)
    if yx.ndim == 1 and yx.size == 2:
        yx = yx[None]
    if yx.ndim != 2 or yx.shape[1] != 2 or len(yx) == 0:
        raise ValueError(f"points must have shape (N, 2) as (y, x) with N >= 1, got {yx.shape}")
    if not np.isfinite(yx).all():
        raise ValueError("points contain NaN or infinite coordinates")
    _check_inside(yx, height, width, "points")
    return yx


def check_labels(labels: Any, n: int) -> np.ndarray:
    """(n,) int64 labels, each 1 (foreground) or 0 (background)."""
    lab = np.atleast_1d(np.asarray(labels))
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like the points, got {lab.shape}")
    if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
        raise ValueError(
            f"labels must be 1 (foreground) or 0 (background), got {np.unique(lab).tolist()}"
        )
    return lab.astype(np.int64)


def check_box(box: Any, height: int, width: int) -> np.ndarray:
    """A (y0, x0, y1, x1) box (corners in any order) -> (2, 2) [[y0, x0], [y1, x1]] sorted."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f"box must be 4 finite numbers (y0, x0, y1, x1), got {box!r}")
    y0, y1 = sorted((b[0], b[2]))
    x0, x1 = sorted((b[1], b[3]))
    if y1 - y0 <= 0 or x1 - x0 <= 0:
        raise ValueError(f"box {b.tolist()} (y0, x0, y1, x1) has zero area")
    corners = np.array([[y0, x0], [y1, x1]])
    _check_inside(corners, height, width, "box corners")
    return corners


def check_mask(mask: Any, height: int, width: int, where: str) -> np.ndarray:
    """A non-empty (H, W) mask as bool (nonzero = object); ``where`` names it in errors."""
    m = np.asarray(mask)
    if m.shape != (height, width):
        raise ValueError(
            f"mask must have the frame's shape (H, W) = {(height, width)}, got {m.shape}"
        )
    m = m.astype(bool)
    if not m.any():
        raise ValueError(
            f"the mask for {where} is empty; draw the object, or use clear_prompts / "
            "remove_object to drop it"
        )
    return m
