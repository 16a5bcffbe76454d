"""Prompts from the data of napari prompt layers, without napari or Qt.

The widget hands this module plain arrays (a Points layer's coordinates and its ``object_id`` /
``positive`` features, a Shapes layer's vertices, a Labels layer's array), all in the data
coordinates of the image being tracked, and gets back prompts per ``(frame, object_id)`` in the
frame pixels the :class:`~napari_sam2.tracking.tracker.Tracker` takes.

:class:`AxisPlan` says how the image's axes map to the tracked (T, H, W) stack: the axis to
propagate along, the Y and X axes, a channel axis (ignored for prompts) and a fixed index for
every other axis, checked by :func:`napari_sam2.tracking.frames.resolve_axes` (the rules of
:func:`~napari_sam2.tracking.frames.stack_view`).

:func:`diff_prompts` compares two prompt sets so the widget only re-runs the decoder for the
(frame, object) pairs that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.tracking.frames import resolve_axes

__all__ = [
    "AxisPlan",
    "PointPrompt",
    "PromptSet",
    "PromptChange",
    "point_prompts",
    "box_prompts",
    "mask_prompts",
    "collect_prompts",
    "diff_prompts",
]

Key = tuple[int, int]
"""(frame index, object id)."""


@dataclass(frozen=True)
class AxisPlan:
    """How an N-D image maps to the tracked (T, H, W) stack.

    ``channel_axis`` is ignored by prompts; with ``rgb`` it is the last axis of the image and
    not an axis of the viewer, so prompt and label layers have one axis less than the image.
    ``fixed`` gives an index for every axis that is neither the frame, Y, X nor channel axis.
    """

    ndim: int
    frame_axis: int
    y_axis: int
    x_axis: int
    num_frames: int
    channel_axis: int | None = None
    rgb: bool = False
    fixed: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int],
        frame_axis: int,
        channel_axis: int | None = None,
        fixed: Mapping[int, int] | None = None,
        rgb: bool = False,
    ) -> AxisPlan:
        """Check the choice of axes for an image of ``shape`` and derive Y and X.

        With ``rgb`` the last axis holds the colours and ``channel_axis`` must be None or that
        axis. Raises ``ValueError`` saying which axes are still to be chosen (the checks of
        :func:`~napari_sam2.tracking.frames.resolve_axes`).
        """
        shape = tuple(int(s) for s in shape)
        ndim = len(shape)
        if rgb:
            if channel_axis is not None and channel_axis not in (ndim - 1, -1):
                raise ValueError(
                    f"an RGB image keeps its colours in the last axis: channel_axis must be "
                    f"None or {ndim - 1}, got {channel_axis}"
                )
            channel_axis = ndim - 1
        axes = resolve_axes(shape, frame_axis, channel_axis, fixed)
        return cls(
            ndim=ndim,
            frame_axis=axes.frame_axis,
            y_axis=axes.y_axis,
            x_axis=axes.x_axis,
            num_frames=shape[axes.frame_axis],
            channel_axis=axes.channel_axis,
            rgb=rgb,
            fixed=dict(axes.fixed),
        )

    @property
    def layer_ndim(self) -> int:
        """Number of axes of the prompt and label layers (RGB colours are not an axis)."""
        return self.ndim - 1 if self.rgb else self.ndim

    def labels_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of an output label array for the image: channel axis of size 1, or none (RGB)."""
        shape = [int(s) for s in image_shape]
        if self.rgb:
            return tuple(shape[:-1])
        if self.channel_axis is not None:
            shape[self.channel_axis] = 1
        return tuple(shape)

    def labels_view(self, labels: Any) -> Any:
        """The (T, H, W) part of a label array that tracking writes to.

        A view (basic indexing and an axis move) so that writing into it writes into
        ``labels``. The label array has :meth:`labels_shape`: the channel axis, if any, has
        size 1 (or is absent for RGB).
        """
        if len(labels.shape) != self.layer_ndim:
            raise ValueError(
                f"the label array has {len(labels.shape)} axes, the image needs {self.layer_ndim}"
            )
        index: list[Any] = [slice(None)] * self.layer_ndim
        for axis, value in self.fixed.items():
            index[axis] = value
        if self.channel_axis is not None and not self.rgb:
            index[self.channel_axis] = 0
        view = labels[tuple(index)]
        # Axes left in the view, in order: frame, y, x (in image order).
        left = [a for a in range(self.layer_ndim) if not isinstance(index[a], int)]
        order = [left.index(self.frame_axis), left.index(self.y_axis), left.index(self.x_axis)]
        return np.transpose(view, order) if order != [0, 1, 2] else view

    def split_coordinates(self, coords: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame index, (y, x) and whether each point lies in the tracked slice.

        ``coords`` is (N, layer_ndim) in image data coordinates. A point is in the slice when
        its frame rounds to an existing frame and it rounds to the fixed index of every fixed
        axis; its channel coordinate does not matter.
        """
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, self.layer_ndim)
        frames = np.round(coords[:, self.frame_axis]).astype(np.int64)
        inside = (frames >= 0) & (frames < self.num_frames)
        for axis, value in self.fixed.items():
            inside &= np.round(coords[:, axis]).astype(np.int64) == value
        yx = coords[:, [self.y_axis, self.x_axis]]
        return frames, yx, inside


@dataclass
class PointPrompt:
    """Clicks of one object on one frame: ``points`` (N, 2) as (y, x), ``labels`` 1 / 0."""

    points: np.ndarray
    labels: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointPrompt):
            return NotImplemented
        return np.array_equal(self.points, other.points) and np.array_equal(
            self.labels, other.labels
        )

    def extends(self, other: PointPrompt) -> bool:
        """Whether these clicks are ``other``'s clicks plus new ones appended at the end."""
        n = len(other.labels)
        return (
            len(self.labels) > n
            and np.array_equal(self.points[:n], other.points)
            and np.array_equal(self.labels[:n], other.labels)
        )


@dataclass
class PromptSet:
    """Every prompt of a session, keyed by (frame, object id)."""

    points: dict[Key, PointPrompt] = field(default_factory=dict)
    boxes: dict[Key, tuple[float, float, float, float]] = field(default_factory=dict)
    masks: dict[Key, np.ndarray] = field(default_factory=dict)

    def keys(self) -> set[Key]:
        return set(self.points) | set(self.boxes) | set(self.masks)

    def object_ids(self) -> set[int]:
        return {obj for _, obj in self.keys()}

    def frames(self) -> set[int]:
        return {frame for frame, _ in self.keys()}


def _object_ids(values: Any, count: int, default: int, what: str) -> np.ndarray:
    if values is None:
        return np.full(count, int(default), dtype=np.int64)
    values = np.asarray(values)
    if values.shape != (count,):
        raise ValueError(f"{what}: expected {count} object ids, got shape {values.shape}")
    if count and np.any(values < 1):
        raise ValueError(f"{what}: object ids must be 1 or more (0 is the background label)")
    return values.astype(np.int64)


def point_prompts(
    coords: Any,
    object_ids: Any,
    positive: Any,
    plan: AxisPlan,
    default_object: int = 1,
) -> dict[Key, PointPrompt]:
    """Clicks per (frame, object) from a Points layer's data and features.

    ``coords`` (N, layer_ndim) in image data coordinates; ``object_ids`` (N,) ints >= 1 or
    None (all ``default_object``); ``positive`` (N,) bools or None (all positive). Points off
    the tracked slice are left out; the order of the clicks is kept.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, plan.layer_ndim)
    n = len(coords)
    ids = _object_ids(object_ids, n, default_object, "points")
    pos = np.ones(n, bool) if positive is None else np.asarray(positive).astype(bool)
    if pos.shape != (n,):
        raise ValueError(f"points: expected {n} positive/negative flags, got shape {pos.shape}")
    frames, yx, inside = plan.split_coordinates(coords)
    out: dict[Key, PointPrompt] = {}
    for key in sorted(
        {(int(f), int(o)) for f, o, ok in zip(frames, ids, inside, strict=True) if ok}
    ):
        sel = inside & (frames == key[0]) & (ids == key[1])
        out[key] = PointPrompt(yx[sel].copy(), pos[sel].astype(np.int64))
    return out


def box_prompts(
    shapes: Sequence[Any],
    shape_types: Sequence[str],
    object_ids: Any,
    plan: AxisPlan,
    default_object: int = 1,
) -> dict[Key, tuple[float, float, float, float]]:
    """Boxes (y0, x0, y1, x1) per (frame, object) from a Shapes layer's rectangles.

    Each shape is its (V, layer_ndim) vertices in image data coordinates; its frame is that of
    its first vertex. Shapes other than rectangles are left out, as are shapes off the tracked
    slice. An object has one box per frame: a later rectangle replaces an earlier one.
    """
    n = len(shapes)
    ids = _object_ids(object_ids, n, default_object, "shapes")
    out: dict[Key, tuple[float, float, float, float]] = {}
    for vertices, kind, obj in zip(shapes, shape_types, ids, strict=True):
        if kind != "rectangle":
            continue
        vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, plan.layer_ndim)
        frames, yx, inside = plan.split_coordinates(vertices[:1])
        if not inside[0]:
            continue
        _, yx, _ = plan.split_coordinates(vertices)
        y0, x0 = yx.min(axis=0)
        y1, x1 = yx.max(axis=0)
        out[(int(frames[0]), int(obj))] = (float(y0), float(x0), float(y1), float(x1))
    return out


def mask_prompts(labels: Any, plan: AxisPlan, frames: Iterable[int] | None = None) -> dict:
    """Masks per (frame, object) from a label array: label k on frame t is object k's mask.

    ``labels`` has the shape of :meth:`AxisPlan.labels_shape` (or the image's shape). Only
    frames where something is painted give prompts; ``frames`` limits the frames read.
    """
    labels = np.asarray(labels)
    if labels.ndim == plan.layer_ndim and plan.channel_axis is not None and not plan.rgb:
        if labels.shape[plan.channel_axis] != 1:
            labels = np.take(labels, [0], axis=plan.channel_axis)
    view = plan.labels_view(labels)
    out: dict[Key, np.ndarray] = {}
    for t in range(view.shape[0]) if frames is None else frames:
        frame = np.asarray(view[t])
        for obj in np.unique(frame):
            if obj > 0:
                out[(int(t), int(obj))] = frame == obj
    return out


def collect_prompts(
    plan: AxisPlan,
    points: tuple[Any, Any, Any] | None = None,
    shapes: tuple[Sequence[Any], Sequence[str], Any] | None = None,
    labels: Any | None = None,
    default_object: int = 1,
) -> PromptSet:
    """All prompts of the session: ``points`` = (coords, object_ids, positive), ``shapes`` =
    (vertices, shape_types, object_ids), ``labels`` = a label array (all optional)."""
    out = PromptSet()
    if points is not None:
        out.points = point_prompts(*points, plan, default_object)
    if shapes is not None:
        out.boxes = box_prompts(*shapes, plan, default_object)
    if labels is not None:
        out.masks = mask_prompts(labels, plan)
    return out


@dataclass
class PromptChange:
    """What the tracker must be told for one (frame, object).

    ``clear``: its earlier prompts on that frame are gone or changed, so they are cleared and
    everything in ``box`` / ``mask`` / ``points`` is sent again; otherwise only ``points`` (new
    clicks appended to the earlier ones) are sent.
    """

    frame: int
    object_id: int
    clear: bool
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    points: PointPrompt | None = None

    @property
    def empty(self) -> bool:
        return self.box is None and self.mask is None and self.points is None


def diff_prompts(old: PromptSet, new: PromptSet) -> list[PromptChange]:
    """Changes that turn what the tracker was given (``old``) into ``new``, frame by frame.

    New clicks appended to unchanged prompts are sent alone (SAM 2 accumulates clicks on a
    frame); any other change clears that object's prompts on that frame and sends them all
    again: the box first, then the mask, then the clicks. A change with nothing to send just
    clears the frame for that object.
    """
    changes: list[PromptChange] = []
    for frame, obj in sorted(old.keys() | new.keys()):
        key = (frame, obj)
        box_same = old.boxes.get(key) == new.boxes.get(key)
        om, nm = old.masks.get(key), new.masks.get(key)
        mask_same = (om is None and nm is None) or (
            om is not None and nm is not None and np.array_equal(om, nm)
        )
        op, np_ = old.points.get(key), new.points.get(key)
        points_same = op == np_ if op is not None and np_ is not None else op is np_
        if box_same and mask_same and points_same:
            continue
        if box_same and mask_same and np_ is not None and (op is None or np_.extends(op)):
            n = 0 if op is None else len(op.labels)
            # A first click on a frame that has a box or mask also just adds to them.
            changes.append(
                PromptChange(
                    frame, obj, clear=False, points=PointPrompt(np_.points[n:], np_.labels[n:])
                )
            )
            continue
        # Nothing was sent for a new (frame, object): there is nothing to clear.
        changes.append(
            PromptChange(
                frame, obj, clear=key in old.keys(), box=new.boxes.get(key), mask=nm, points=np_
            )
        )
    return changes
