"""Tracker results written into a label array, with gaps where an object is absent.

Rules (DESIGN.md, "Outputs"):

- Object id k is label k.
- For every object k of a result, in that result's frame: pixels that held k become 0, then
  pixels where k is present (score logit > 0) and its mask logit is > 0 become k. An absent
  object therefore leaves no k in that frame: a gap, never a stale copy of an earlier mask.
- Overlap: where several objects of the result claim a pixel, the one with the highest mask
  logit gets it (ties go to the object listed first).
- Pixels holding a label that is not one of the result's objects (drawn by the user) are never
  overwritten, and frames without a result are never touched.
- Objects without output on the frame (``has_output`` False: placeholders of objects not
  prompted or tracked there) are skipped: their pixels are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["LabelsWriter", "frame_planes"]

IndexFn = Callable[[int], Any]


def frame_planes(
    shape: tuple[int, ...], frame_axis: int = 0, fixed: Mapping[int, int] | None = None
) -> IndexFn:
    """Index function for :class:`LabelsWriter` over an N-D label array.

    Frame ``t`` of the tracker is the (Y, X) plane at ``t`` along ``frame_axis``, at the
    ``fixed`` index of every other non-image axis (same rule as
    :func:`napari_sam2.tracking.frames.stack_view`: the last two remaining axes are Y, X).
    E.g. (T, Z, Y, X) labels tracked over time in slice 12: ``frame_planes(shape, 0, {1: 12})``.
    """
    ndim = len(shape)
    frame_axis %= ndim
    fixed = {a % ndim: int(i) for a, i in (fixed or {}).items()}
    rest = [a for a in range(ndim) if a != frame_axis and a not in fixed]
    if len(rest) != 2:
        raise ValueError(
            f"labels of shape {shape}: after frame_axis={frame_axis} and fixed={fixed} there "
            f"must be exactly two axes (Y, X) left, found {len(rest)}; give a fixed index for "
            "every other axis"
        )

    def index(t: int) -> tuple:
        key: list[Any] = [slice(None)] * ndim
        for axis, value in fixed.items():
            key[axis] = value
        key[frame_axis] = t
        return tuple(key)

    return index


class LabelsWriter:
    """Writes :class:`~napari_sam2.tracking.tracker.FrameResult` objects into ``labels`` in place.

    Parameters
    ----------
    labels
        Integer array-like supporting ``labels[key]`` reads and ``labels[key] = plane`` writes
        (numpy, ``np.memmap``, zarr, a napari Labels layer's data). By default (T, H, W).
    index
        Maps a tracker frame index to the key of the (H, W) plane in ``labels``; default
        ``lambda t: t``. For an N-D array use :func:`frame_planes`, e.g.
        ``LabelsWriter(tzyx, index=frame_planes(tzyx.shape, frame_axis=0, fixed={1: z}))`` or
        simply ``index=lambda t: (t, z)``.
    on_write
        Optional callback ``on_write(t, key)`` after each plane is written (e.g. to refresh a
        napari layer).
    """

    def __init__(
        self,
        labels: Any,
        index: IndexFn | None = None,
        on_write: Callable[[int, Any], None] | None = None,
    ) -> None:
        dtype = np.dtype(labels.dtype)
        if dtype.kind not in "iu":
            raise TypeError(f"labels must have an integer dtype, got {dtype}")
        self.labels = labels
        self.index = index if index is not None else (lambda t: t)
        self.on_write = on_write
        self.frames_written: set[int] = set()

    def write(self, result: Any) -> None:
        """Write one result (see the module rules). Raises if ids do not fit the dtype."""
        has_output = getattr(result, "has_output", None)
        rows = [
            i
            for i in range(len(result.object_ids))
            if has_output is None or bool(np.asarray(has_output).reshape(-1)[i])
        ]
        if not rows:
            return
        ids = tuple(int(result.object_ids[i]) for i in rows)
        t = int(result.frame_index)
        key = self.index(t)
        plane = np.array(self.labels[key])  # a copy: written back in one assignment
        logits = np.asarray(result.mask_logits)[rows]
        if plane.ndim != 2 or logits.shape[1:] != plane.shape:
            raise ValueError(
                f"frame {t}: label plane {plane.shape} does not match the result's masks "
                f"{logits.shape[1:]}; check the label array's shape and the index mapping"
            )
        info = np.iinfo(plane.dtype)
        if max(ids) > info.max or min(ids) < 1:
            raise ValueError(
                f"object ids {ids} do not fit labels of dtype {plane.dtype} (1..{info.max})"
            )
        scores = np.asarray(result.object_score_logits).reshape(-1)[rows]
        tracked = np.isin(plane, np.asarray(ids, dtype=plane.dtype))
        plane[tracked] = 0
        present = scores > 0
        if present.any():
            claims = np.where(present[:, None, None], logits, -np.inf)
            best = np.argmax(claims, axis=0)  # first maximum wins ties
            best_logit = np.take_along_axis(claims, best[None], axis=0)[0]
            free = (plane == 0) & (best_logit > 0)
            plane[free] = np.asarray(ids, dtype=plane.dtype)[best[free]]
        self.labels[key] = plane
        self.frames_written.add(t)
        if self.on_write is not None:
            self.on_write(t, key)
