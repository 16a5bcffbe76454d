"""The widget's tracking session, without Qt or napari: testable on its own.

A :class:`TrackingSession` owns a :class:`~napari_sam2.tracking.tracker.Tracker`, the (T, H, W)
part of the output label array, the presence table and what the timeline shows. The widget
calls it from two threads, never at the same time for the same session:

- in a worker thread: :meth:`apply_prompts` (tells the tracker what changed in the prompt
  layers, one decoder pass per changed frame and object) and :meth:`propagate` (yields results
  frame by frame);
- in the GUI thread: :meth:`record` (writes a result into the labels and the timeline) and
  the bookkeeping around runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np

from napari_sam2.tracking.frame_order import propagation_frames
from napari_sam2.tracking.layer_prompts import PromptSet, diff_prompts

__all__ = ["DIRECTIONS", "FrameState", "LOW_CONFIDENCE", "Leg", "TrackingSession"]

LOW_CONFIDENCE = 1.0
"""|object score logit| below this is shown as low confidence (sigmoid between 0.27 and 0.73)."""

DIRECTIONS = ("forward", "reverse", "both")


class FrameState(IntEnum):
    """What the timeline shows for one object on one frame."""

    UNTRACKED = 0
    PRESENT = 1
    ABSENT = 2
    UNCERTAIN = 3


@dataclass(frozen=True)
class Leg:
    """One pass of a run: its direction, the start and length the tracker is given (None: the
    tracker's default), and the frames it visits in order."""

    name: str
    start: int | None
    max_frames: int | None
    frames: range

    def __len__(self) -> int:
        return len(self.frames)


class TrackingSession:
    """A tracker, the labels it writes and the per-object timeline.

    Parameters
    ----------
    tracker
        A :class:`~napari_sam2.tracking.tracker.Tracker` (or anything with its methods).
    labels
        The (T, H, W) integer array the results are written into, in place (usually a view of
        a napari Labels layer's data).
    low_confidence
        Frames whose |object score logit| is below this are marked uncertain.
    """

    def __init__(self, tracker: Any, labels: Any, *, low_confidence: float = LOW_CONFIDENCE):
        from napari_sam2.outputs.labels import LabelsWriter
        from napari_sam2.outputs.presence import PresenceTable

        self.tracker = tracker
        self.labels = labels
        self.num_frames = int(labels.shape[0])
        self.writer = LabelsWriter(labels)
        self.table = PresenceTable()
        self.low_confidence = float(low_confidence)
        self.sent = PromptSet()
        """The prompts the tracker has been given."""
        self.scores: dict[int, dict[int, float]] = {}
        """object id -> frame -> object score logit of the latest result."""
        self.edited_frames: set[int] = set()
        """Frames whose prompts changed since the last finished propagation."""

    # --- worker thread ---------------------------------------------------------------------

    def apply_prompts(self, prompts: PromptSet) -> list[Any]:
        """Tell the tracker what changed since the last call; return the frames to show.

        Each changed (frame, object) costs one decoder pass on the frame's cached features
        (the image encoder runs once per frame). Objects left without any prompt are removed
        from the tracker. Returns the last :class:`FrameResult` of every changed frame.
        """
        results: dict[int, Any] = {}
        cleared: list[tuple[int, int]] = []
        gone = self.sent.object_ids() - prompts.object_ids()
        for obj in sorted(gone):
            self.tracker.remove_object(obj)
            self.sent = _without_object(self.sent, obj)
        for change in diff_prompts(self.sent, prompts):
            key = (change.frame, change.object_id)
            if change.clear:
                self.tracker.clear_prompts(change.frame, change.object_id)
                _forget(self.sent, key)
                self.edited_frames.add(change.frame)
                if change.empty:
                    cleared.append(key)
                    continue
            if change.box is not None:
                results[change.frame] = self.tracker.add_box(
                    change.frame, change.object_id, change.box
                )
                self.sent.boxes[key] = change.box
            if change.mask is not None:
                results[change.frame] = self.tracker.add_mask(
                    change.frame, change.object_id, change.mask
                )
                self.sent.masks[key] = change.mask
            if change.points is not None and len(change.points.labels):
                results[change.frame] = self.tracker.add_points(
                    change.frame, change.object_id, change.points.points, change.points.labels
                )
                self.sent.points[key] = prompts.points[key]
            self.edited_frames.add(change.frame)
        self._cleared = cleared + [(-1, obj) for obj in gone]
        return [results[f] for f in sorted(results)]

    def start_frame(self, direction: str) -> int | None:
        """Where a run starts: the first (forward) or last (reverse) frame whose prompts changed
        since the last finished run, so a correction re-propagates from its own frame and the
        frames on its other side stay as the user accepted them. None: the tracker's default.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not self.edited_frames:
            return None
        return min(self.edited_frames) if direction != "reverse" else max(self.edited_frames)

    def legs(
        self,
        direction: str = "forward",
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> list[Leg]:
        """The passes a run makes: one per direction (``both``: forward, then reverse).

        Each :class:`Leg` says which frames it visits, from
        :func:`napari_sam2.tracking.propagation_frames` (the tracker's own definition), so
        progress counts equal the results the tracker yields.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not self.sent.keys():
            raise ValueError(
                "nothing to propagate: add a point, box or mask prompt for an object first"
            )
        prompted = sorted(self.sent.frames())
        legs = []
        for name in ["forward", "reverse"] if direction == "both" else [direction]:
            start = start_frame if start_frame is not None else self.start_frame(name)
            # None leaves the start to the tracker: its first (reverse: last) prompted frame
            first = (
                start if start is not None else (prompted[-1] if name == "reverse" else prompted[0])
            )
            frames = propagation_frames(self.num_frames, first, name == "reverse", max_frames)
            legs.append(Leg(name, start, max_frames, frames))
        return legs

    def propagate_leg(
        self, leg: Leg, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[Any]:
        """Yield the tracker's result for each frame of ``leg``; ``should_stop()`` is asked
        after each frame. Nothing is written here (see :meth:`record`)."""
        results = self.tracker.propagate(
            start_frame=leg.start, reverse=leg.name == "reverse", max_frames=leg.max_frames
        )
        try:
            for result in results:
                yield result
                if should_stop is not None and should_stop():
                    return
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def propagate(
        self,
        direction: str = "forward",
        start_frame: int | None = None,
        max_frames: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[Any]:
        """Yield a result per frame, forward, reverse or both ways from ``start_frame``.

        ``start_frame`` None uses :meth:`start_frame`; ``max_frames`` counts the frames after
        the start (the tracker's meaning). Nothing is written here: the caller hands each
        result to :meth:`record` (in the GUI thread). ``should_stop()`` is asked after each
        frame.
        """
        for leg in self.legs(direction, start_frame, max_frames):
            stopped = False

            def stop() -> bool:
                nonlocal stopped
                stopped = should_stop is not None and should_stop()
                return stopped

            yield from self.propagate_leg(leg, stop)
            if stopped:
                return

    def close(self) -> None:
        """Close the tracker (its frame reader and memory); the session is done."""
        close = getattr(self.tracker, "close", None)
        if callable(close):
            close()
        else:  # a tracker without close(): at least stop its frame reader
            frames_close = getattr(getattr(self.tracker, "frames", None), "close", None)
            if callable(frames_close):
                frames_close()

    # --- GUI thread ------------------------------------------------------------------------

    def record(self, result: Any) -> None:
        """Write one frame's result into the labels, the table and the timeline.

        Objects without output on that frame (``has_output`` False: not tracked there, or their
        output was released from memory) are left out, so their labels stay as they are.
        """
        result = _with_output_only(result)
        if not result.object_ids:
            return
        self.writer.write(result)
        self.table.record(result)
        for obj, score in zip(
            result.object_ids, np.asarray(result.object_score_logits), strict=True
        ):
            self.scores.setdefault(int(obj), {})[int(result.frame_index)] = float(score)

    def record_cleared(self) -> None:
        """After :meth:`apply_prompts`: erase what prompts that are gone had produced."""
        for frame, obj in getattr(self, "_cleared", []):
            if frame < 0:
                self.forget_object(obj)
            elif not self._object_has_prompts(obj):
                self.forget_object(obj)
            else:
                self._erase(obj, frame)
                self.scores.get(obj, {}).pop(frame, None)
        self._cleared = []

    def propagation_finished(self) -> None:
        """A run went through: later runs start from the frames edited after it."""
        self.edited_frames.clear()

    def remove_object(self, object_id: int) -> None:
        """Drop an object from the tracker and erase its labels (other labels stay)."""
        if object_id in self.sent.object_ids() or object_id in self.scores:
            try:
                self.tracker.remove_object(object_id)
            except (KeyError, ValueError):
                pass  # the tracker never heard of it (prompts not applied yet)
        self.sent = _without_object(self.sent, object_id)
        self.forget_object(object_id)

    def forget_object(self, object_id: int) -> None:
        """Erase an object's labels and timeline (the tracker is not touched)."""
        labels = self.labels
        for t in range(self.num_frames):
            frame = labels[t]
            hit = frame == object_id
            if hit.any():
                frame[hit] = 0
        self.scores.pop(object_id, None)

    def _erase(self, object_id: int, frame: int) -> None:
        plane = self.labels[frame]
        plane[plane == object_id] = 0

    def _object_has_prompts(self, object_id: int) -> bool:
        return object_id in self.sent.object_ids()

    # --- what the timeline shows -------------------------------------------------------------

    def object_ids(self) -> list[int]:
        """Objects with prompts or results, in id order."""
        return sorted(self.sent.object_ids() | set(self.scores))

    def prompted_frames(self, object_id: int) -> set[int]:
        return {f for f, o in self.sent.keys() if o == object_id}

    def state(self, object_id: int, frame: int) -> FrameState:
        score = self.scores.get(object_id, {}).get(frame)
        if score is None:
            return FrameState.UNTRACKED
        if abs(score) < self.low_confidence:
            return FrameState.UNCERTAIN
        return FrameState.PRESENT if score > 0 else FrameState.ABSENT

    def timeline(self) -> tuple[list[int], np.ndarray]:
        """Object ids and a (objects, frames) array of :class:`FrameState` values."""
        ids = self.object_ids()
        states = np.zeros((len(ids), self.num_frames), np.uint8)
        for row, obj in enumerate(ids):
            for frame in self.scores.get(obj, {}):
                states[row, frame] = self.state(obj, frame)
        return ids, states


def _with_output_only(result: Any) -> Any:
    has = getattr(result, "has_output", None)
    if has is None:
        return result
    has = np.asarray(has, bool).reshape(-1)
    if has.all():
        return result
    return replace(
        result,
        object_ids=tuple(o for o, h in zip(result.object_ids, has, strict=True) if h),
        mask_logits=np.asarray(result.mask_logits)[has],
        object_score_logits=np.asarray(result.object_score_logits)[has],
        has_output=has[has],
    )


def _forget(prompts: PromptSet, key: tuple[int, int]) -> None:
    prompts.points.pop(key, None)
    prompts.boxes.pop(key, None)
    prompts.masks.pop(key, None)


def _without_object(prompts: PromptSet, object_id: int) -> PromptSet:
    return PromptSet(
        points={k: v for k, v in prompts.points.items() if k[1] != object_id},
        boxes={k: v for k, v in prompts.boxes.items() if k[1] != object_id},
        masks={k: v for k, v in prompts.masks.items() if k[1] != object_id},
    )
