"""A scripted stand-in for :class:`napari_sam2.tracking.tracker.Tracker` (a test double).

It implements the tracker contract of DESIGN.md with deterministic results and no network:
every object is a disk that moves at a constant velocity, present on the frames its script
says. Mask logits are ``radius - distance to the centre`` (positive inside the disk) and
-1024 where the object is absent; object score logits are +5 (present) or -5 (absent).

Prompts make an object tracked. The first prompt of an unscripted object creates a disk at the
prompt (point, box centre or mask centroid). A later point prompt on frame f is a correction:
the disk moves so its centre is at the click on frame f and keeps that offset on every later
frame (earlier frames are unchanged), so re-propagating from f changes only frames >= f.
Propagation follows the contract: ``start_frame=None`` starts at the first prompted frame going
forward and at the last prompted frame in reverse (decision D3); ``max_frames=k`` yields the
start frame plus k more.

Every call is appended to ``calls`` as ``(name, args)`` so tests can check what was asked.

Usage::

    tracker = ScriptedTracker((10, 64, 64), objects=[
        ScriptedObject(1, center=(20, 10), velocity=(0, 3), radius=6, absent={4, 5}),
        ScriptedObject(2, center=(40, 40), radius=8),
    ])
    tracker.add_points(0, 1, [(20, 10)], [1]); tracker.add_points(0, 2, [(40, 40)], [1])
    for r in tracker.propagate(): ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.tracking import FrameResult, propagation_frames

ABSENT_LOGIT = -1024.0


@dataclass
class ScriptedObject:
    """One disk: centre (y, x) on frame 0, velocity (dy, dx) per frame, radius, and the frames
    where it is absent (``absent``) or, if ``present`` is given, the only frames where it is
    present."""

    object_id: int
    center: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    radius: float = 5.0
    absent: set[int] = field(default_factory=set)
    present: set[int] | None = None
    corrections: list[tuple[int, tuple[float, float]]] = field(default_factory=list)

    def is_present(self, t: int) -> bool:
        if self.present is not None:
            return t in self.present
        return t not in self.absent

    def base_center(self, t: int) -> tuple[float, float]:
        return (self.center[0] + self.velocity[0] * t, self.center[1] + self.velocity[1] * t)

    def center_at(self, t: int) -> tuple[float, float]:
        y, x = self.base_center(t)
        applicable = [c for c in self.corrections if c[0] <= t]
        if applicable:
            f, (cy, cx) = max(applicable, key=lambda c: c[0])
            by, bx = self.base_center(f)
            y, x = y + cy - by, x + cx - bx
        return (y, x)


class ScriptedTracker:
    """Deterministic test double of the Tracker contract (see the module docstring)."""

    def __init__(
        self,
        frames: Any,
        objects: Iterable[ScriptedObject] = (),
        *,
        contrast_limits: Sequence[float] | None = None,
        device: Any = None,
        fill_hole_area: int = 0,
        model: Any = None,
    ) -> None:
        shape = tuple(frames) if isinstance(frames, tuple) else tuple(frames.shape)
        self.frames = frames
        self.num_frames, self.height, self.width = (int(s) for s in shape[:3])
        self.script = {o.object_id: o for o in objects}
        self.contrast_limits = contrast_limits
        self.device = device
        self.fill_hole_area = fill_hole_area
        self.model = model
        self.prompted: dict[int, set[int]] = {}  # object id -> prompted frames
        self.outputs: set[tuple[int, int]] = set()  # (object id, frame) with an output
        self.calls: list[tuple[str, tuple]] = []

    # --- the contract -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.prompted))

    def add_points(self, frame_index: int, object_id: int, points: Any, labels: Any) -> FrameResult:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        labels = np.asarray(labels).reshape(-1)
        self.calls.append(("add_points", (frame_index, object_id, points, labels)))
        self._check_frame(frame_index)
        positive = points[labels == 1]
        anchor = tuple(positive[-1]) if len(positive) else tuple(points[-1])
        self._prompt(frame_index, object_id, anchor, correct=len(positive) > 0)
        return self._result(frame_index, self.object_ids)

    def add_box(self, frame_index: int, object_id: int, box: Any) -> FrameResult:
        y0, x0, y1, x1 = (float(v) for v in box)
        self.calls.append(("add_box", (frame_index, object_id, (y0, x0, y1, x1))))
        self._check_frame(frame_index)
        self._prompt(frame_index, object_id, ((y0 + y1) / 2, (x0 + x1) / 2), correct=False)
        return self._result(frame_index, self.object_ids)

    def add_mask(self, frame_index: int, object_id: int, mask: Any) -> FrameResult:
        mask = np.asarray(mask, dtype=bool)
        self.calls.append(("add_mask", (frame_index, object_id, mask)))
        self._check_frame(frame_index)
        ys, xs = np.nonzero(mask)
        center = (float(ys.mean()), float(xs.mean())) if len(ys) else (0.0, 0.0)
        self._prompt(frame_index, object_id, center, correct=False)
        return self._result(frame_index, self.object_ids)

    def clear_prompts(self, frame_index: int, object_id: int | None = None) -> None:
        self.calls.append(("clear_prompts", (frame_index, object_id)))
        for k in [object_id] if object_id is not None else list(self.prompted):
            self.prompted.get(k, set()).discard(frame_index)
            if k in self.script:
                obj = self.script[k]
                obj.corrections = [c for c in obj.corrections if c[0] != frame_index]

    def remove_object(self, object_id: int) -> None:
        self.calls.append(("remove_object", (object_id,)))
        self.prompted.pop(object_id, None)
        self.outputs = {o for o in self.outputs if o[0] != object_id}

    def reset(self) -> None:
        self.calls.append(("reset", ()))
        self.prompted.clear()
        self.outputs.clear()
        for obj in self.script.values():
            obj.corrections.clear()

    def propagate(
        self, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        self.calls.append(("propagate", (start_frame, reverse, max_frames)))
        prompted = sorted(set().union(*self.prompted.values())) if self.prompted else []
        if not prompted:
            raise RuntimeError("add a prompt before propagating")
        if start_frame is None:
            start_frame = prompted[-1] if reverse else prompted[0]
        self._check_frame(start_frame)
        frames = propagation_frames(self.num_frames, start_frame, reverse, max_frames)
        ids = self.object_ids
        for t in frames:
            self.outputs.update((k, t) for k in ids)
            yield self._result(t, ids)

    # --- script -------------------------------------------------------------------------------

    def _check_frame(self, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range (0..{self.num_frames - 1})")

    def _prompt(self, t: int, k: int, anchor: tuple[float, float], correct: bool) -> None:
        if k not in self.script:
            self.script[k] = ScriptedObject(k, center=(float(anchor[0]), float(anchor[1])))
            # the first prompt is on frame t: put the disk's frame-t centre at the anchor
            self.script[k].corrections.append((t, anchor))
        elif correct and k in self.prompted:
            self.script[k].corrections.append((t, (float(anchor[0]), float(anchor[1]))))
        self.prompted.setdefault(k, set()).add(t)
        self.outputs.add((k, t))

    def mask_logits(self, t: int, k: int) -> np.ndarray:
        """The (H, W) logits of object ``k`` on frame ``t`` (also for tests' expectations)."""
        obj = self.script[k]
        if not obj.is_present(t):
            return np.full((self.height, self.width), ABSENT_LOGIT, np.float32)
        cy, cx = obj.center_at(t)
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        return (obj.radius - np.hypot(yy - cy, xx - cx)).astype(np.float32)

    def _result(self, t: int, ids: tuple[int, ...]) -> FrameResult:
        has = np.array([(k, t) in self.outputs for k in ids], dtype=bool)
        logits = np.full((len(ids), self.height, self.width), ABSENT_LOGIT, np.float32)
        scores = np.full(len(ids), ABSENT_LOGIT, np.float32)
        for i, k in enumerate(ids):
            if has[i]:
                logits[i] = self.mask_logits(t, k)
                scores[i] = 5.0 if self.script[k].is_present(t) else -5.0
        return FrameResult(
            frame_index=int(t),
            object_ids=tuple(ids),
            mask_logits=logits,
            object_score_logits=scores,
            has_output=has,
        )
