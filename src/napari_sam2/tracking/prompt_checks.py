"""Validation of the tracker's inputs, with messages that say what was wrong and what to do.

Coordinates follow napari: (y, x) in frame pixels, pixel (i, j) covering [i - 0.5, i + 0.5], so
the frame spans -0.5 .. H - 0.5 in y and -0.5 .. W - 0.5 in x.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "MAX_OBJECT_ID",
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


MAX_OBJECT_ID = 65535
"""The largest object id. Object id k is written as label k and 0 is the background, so ids
run from 1; every file the project writes labels to (ImageJ TIFF, Cell Tracking Challenge
masks) and the widget's object selector hold uint16 labels, so 65535 is the most that can be
saved. A larger id would track fine and then fail at export, after the work was done."""


def check_object_id(object_id: Any) -> int:
    """An integer object id (label value) in 1 .. :data:`MAX_OBJECT_ID`.

    Raises ``TypeError`` for anything but an integer (bools included) and ``ValueError`` for
    0 (the background label), negative ids and ids above :data:`MAX_OBJECT_ID`.
    """
    if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
        raise TypeError(
            f"object id must be an integer from 1 to {MAX_OBJECT_ID}, got {object_id!r}"
        )
    value = int(object_id)
    if not 1 <= value <= MAX_OBJECT_ID:
        what = "is the background label" if value == 0 else "is out of range"
        raise ValueError(
            f"object id {value} {what}: object ids run from 1 to {MAX_OBJECT_ID} (object k is "
            "written as label k, 0 is the background, and label files store uint16)"
        )
    return value


def _check_inside(yx: np.ndarray, height: int, width: int, what: str) -> None:
    y, x = yx[:, 0], yx[:, 1]
    bad = (y < -0.5) | (y > height - 0.5) | (x < -0.5) | (x > width - 0.5)
    if bad.any():
        raise ValueError(
            f"{what} {yx[bad].tolist()} (y, x) lie outside the {height} x {width} frame "
            f"(y in [-0.5, {height - 0.5}], x in [-0.5, {width - 0.5}])"
        )


def _as_float(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be numbers, got {value!r} ({err})") from None


def check_points(points: Any, height: int, width: int, where: str = "the prompt") -> np.ndarray:
    """(N, 2) float64 (y, x) points inside the frame; one point may be given as (y, x).

    ``where`` names the prompt in errors (e.g. "object 2 on frame 5").
    """
    yx = _as_float(points, f"points of {where}")
    if yx.ndim == 1 and yx.size == 2:
        yx = yx[None]
    if yx.ndim != 2 or yx.shape[1] != 2 or len(yx) == 0:
        raise ValueError(
            f"points of {where} must have shape (N, 2) as (y, x) with N >= 1, got {yx.shape}"
        )
    finite = np.isfinite(yx).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"points of {where} have NaN or infinite coordinates {yx[~finite].tolist()} "
            "(y, x): give finite pixel coordinates"
        )
    _check_inside(yx, height, width, f"points of {where}")
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


def check_box(box: Any, height: int, width: int, where: str = "the prompt") -> np.ndarray:
    """A (y0, x0, y1, x1) box (corners in any order) -> (2, 2) [[y0, x0], [y1, x1]] sorted.

    ``where`` names the prompt in errors (e.g. "object 2 on frame 5").
    """
    b = _as_float(box, f"the box of {where}").reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(
            f"the box of {where} must be 4 finite numbers (y0, x0, y1, x1), got {box!r}"
        )
    y0, y1 = sorted((b[0], b[2]))
    x0, x1 = sorted((b[1], b[3]))
    if y1 - y0 <= 0 or x1 - x0 <= 0:
        raise ValueError(f"the box {b.tolist()} (y0, x0, y1, x1) of {where} has zero area")
    corners = np.array([[y0, x0], [y1, x1]])
    _check_inside(corners, height, width, f"box corners of {where}")
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
