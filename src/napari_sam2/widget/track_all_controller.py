"""Automatic tracking in the widget, without Qt: "Segment all on this frame" and "Track all".

:class:`TrackAllController` owns the Track all panel's settings (discovery of new objects every
k frames, divisions, the end of objects absent for more than m frames, the segment-everything
thresholds), runs the two jobs through a
:class:`~napari_sam2.widget.propagation.JobRunner` (a napari worker in the widget,
:class:`~napari_sam2.widget.propagation.InlineRunner` in tests) and writes what they yield into
the output labels, on the GUI thread:

- **Segment all on this frame** segments everything SAM 2 finds on the frame and adds each
  mask that is not yet labelled there as a new object (label k). Labels already on the frame
  stay, and no other frame changes.
- **Track all** seeds one object per label of the frame (or, where the frame has no labels,
  per mask of segment-everything) and follows them with
  :class:`napari_sam2.tracking.track_all.TrackAll` to the end of the stack: new objects appear
  every k frames, dividing objects end and start two daughters, objects absent too long end.
  Each frame is written as it arrives; a cancelled run keeps the frames written. At the end the
  parent graph becomes the data of a napari Tracks layer (:class:`TracksData`).

Threads: the jobs' generators run in the worker and only compute; the labels, the progress and
the summary change in the callbacks, which the runner calls on the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from psygnal import Signal

from napari_sam2.widget.progress import PropagationProgress
from napari_sam2.widget.propagation import FILL_HOLE_AREA, JobHandle, JobRunner, SessionSpec

__all__ = [
    "AutoSettings",
    "AutoTarget",
    "EverythingOptions",
    "TrackAllController",
    "TrackAllOutcome",
    "TracksData",
    "add_new_objects",
    "summary_text",
    "tracks_for_layer",
    "write_auto_frame",
]

Segmenter = Callable[[int], Sequence[np.ndarray]]
"""``segmenter(frame_index) -> (H, W) bool masks`` of everything on that frame."""

MAX_LABEL = 65535


@dataclass(frozen=True)
class EverythingOptions:
    """How segment-everything looks for objects (SAM 2's automatic mask generator settings)
    and the smallest object kept (px)."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    min_area: int = 30
    max_overlap: float = 0.2
    """A mask is a new object when at most this fraction of it is labelled already."""

    def kwargs(self) -> dict[str, Any]:
        """The options of :meth:`Tracker.segment_everything`."""
        return {
            "points_per_side": int(self.points_per_side),
            "pred_iou_thresh": float(self.pred_iou_thresh),
            "stability_score_thresh": float(self.stability_score_thresh),
        }


@dataclass(frozen=True)
class AutoSettings:
    """The Track all panel: find new objects every ``discover_every`` frames (when
    ``discover``), divisions on or off, end objects absent on more than ``end_after``
    consecutive frames, and the segment-everything options."""

    discover: bool = True
    discover_every: int = 5
    divisions: bool = True
    end_after: int = 3
    everything: EverythingOptions = field(default_factory=EverythingOptions)

    def track_all_settings(self) -> Any:
        """These settings as the engine's ``TrackAllSettings``."""
        from napari_sam2.tracking.track_all import TrackAllSettings

        return TrackAllSettings(
            discover_every=int(self.discover_every) if self.discover else 0,
            new_min_area=int(self.everything.min_area),
            new_max_overlap=float(self.everything.max_overlap),
            divisions=bool(self.divisions),
            end_after=int(self.end_after),
            everything=self.everything.kwargs(),
        )


@dataclass(frozen=True)
class AutoTarget:
    """What a job works on, read from the widget on the GUI thread: the session spec (the
    image's lazy stack, the (T, H, W) view of the output labels, the model) and the frame the
    viewer shows."""

    spec: SessionSpec
    frame: int


@dataclass(frozen=True)
class TracksData:
    """A napari Tracks layer's ``data`` ((N, 4): track id, t, y, x in frame pixels), ``graph``
    ({daughter: [parent]}) and ``properties``."""

    data: np.ndarray
    graph: dict[int, list[int]]
    properties: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TrackAllOutcome:
    """What a finished (or cancelled) Track all run leaves: the lineage, the decisions, the
    Tracks layer data and the one-line summary."""

    lineage: Any
    decisions: list[Any]
    tracks: TracksData | None
    summary: str
    cancelled: bool = False
    frames_written: int = 0


@dataclass
class _Job:
    kind: str  # "segment" or "track"
    target: AutoTarget
    settings: AutoSettings
    seeds: np.ndarray | None = None  # (H, W) labels of the seed frame (track)
    stop: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    written: int = 0
    ids: set[int] = field(default_factory=set)
    points: list[np.ndarray] = field(default_factory=list)  # rows (id, t, y, x, area)
    tracker: Any = None  # while the worker holds one


# --- label arithmetic (pure functions, tested on their own) -----------------------------------


def add_new_objects(
    plane: np.ndarray,
    masks: Sequence[np.ndarray],
    first_id: int,
    min_area: int = 0,
    max_overlap: float = 0.2,
) -> tuple[np.ndarray, list[int]]:
    """The objects of ``masks`` that ``plane`` does not hold yet, as labels from ``first_id``.

    Masks are taken in order (segment-everything's best first); a mask is new when at most
    ``max_overlap`` of its area is labelled already (by ``plane`` or an earlier mask) and at
    least ``min_area`` pixels of it are free. Returns an (H, W) array of the new labels only
    (0 elsewhere) and their ids.
    """
    plane = np.asarray(plane)
    taken = plane != 0
    new = np.zeros(plane.shape, np.uint16 if plane.dtype.itemsize <= 2 else plane.dtype)
    ids: list[int] = []
    next_id = int(first_id)
    for mask in masks:
        mask = np.asarray(mask, bool)
        if mask.shape != plane.shape:
            raise ValueError(f"a mask of shape {mask.shape} does not fit the frame {plane.shape}")
        area = int(mask.sum())
        if area == 0:
            continue
        overlap = int((mask & taken).sum()) / area
        free = mask & ~taken
        if overlap > max_overlap or int(free.sum()) < max(int(min_area), 1):
            continue
        if next_id > min(MAX_LABEL, np.iinfo(new.dtype).max):
            raise ValueError(f"more than {MAX_LABEL} objects: label ids would overflow")
        new[free] = next_id
        taken |= free
        ids.append(next_id)
        next_id += 1
    return new, ids


def write_auto_frame(plane: np.ndarray, frame_labels: np.ndarray, owned: set[int]) -> np.ndarray:
    """One frame of an automatic run written over ``plane`` (returned, a new array).

    Pixels holding an id in ``owned`` (the run's objects, and those an earlier run of the
    widget wrote) are cleared first, so an object absent here leaves no label (a gap); then the
    run's labels fill the free pixels. Any other label (drawn by the user) stays.
    """
    plane = np.array(plane)
    frame_labels = np.asarray(frame_labels)
    if frame_labels.shape != plane.shape:
        raise ValueError(
            f"the run's labels {frame_labels.shape} do not fit the label plane {plane.shape}"
        )
    if owned:
        plane[np.isin(plane, np.fromiter(owned, np.int64))] = 0
    free = (plane == 0) & (frame_labels != 0)
    plane[free] = frame_labels[free].astype(plane.dtype)
    return plane


def frame_points(frame_index: int, labels: np.ndarray) -> np.ndarray:
    """Rows (id, t, y, x, area) of the centroid of every label on one frame."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    ids = np.unique(flat)
    ids = ids[ids != 0]
    if not len(ids):
        return np.zeros((0, 5))
    index = np.searchsorted(ids, flat)
    hit = flat != 0
    index = index[hit]
    ys, xs = np.divmod(np.flatnonzero(hit), labels.shape[1])
    area = np.bincount(index, minlength=len(ids)).astype(float)
    y = np.bincount(index, weights=ys, minlength=len(ids)) / area
    x = np.bincount(index, weights=xs, minlength=len(ids)) / area
    t = np.full(len(ids), float(frame_index))
    return np.stack([ids.astype(float), t, y, x, area], axis=1)


def _tracks_from_points(points: list[np.ndarray], lineage: Any) -> TracksData | None:
    """The Tracks data of the frames a run wrote, from their (id, t, y, x, area) rows: what
    :func:`napari_sam2.outputs.lineage.tracks_layer_data` gives for the run's labels."""
    rows = np.concatenate(points) if points else np.zeros((0, 5))
    if not len(rows):
        return None
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    present = {int(k) for k in rows[:, 0]}
    graph = {
        int(k): [int(p) for p in parents if int(p) in present]
        for k, parents in _graph_of(lineage).items()
        if int(k) in present
    }
    graph = {k: v for k, v in graph.items() if v}
    return TracksData(rows[:, :4].copy(), graph, {"area": rows[:, 4].copy()})


def _graph_of(lineage: Any) -> Mapping[int, Sequence[int]]:
    graph = lineage.graph() if lineage is not None and hasattr(lineage, "graph") else {}
    return {
        int(k): [int(p) for p in (v if isinstance(v, (list, tuple)) else [v])]
        for k, v in graph.items()
    }


def tracks_for_layer(data: np.ndarray, plan: Any) -> np.ndarray:
    """(N, 4) Tracks rows (id, t, y, x) as rows for a layer with the output labels' axes:
    the frame, Y and X columns at their axes, every fixed axis at its index, a channel axis
    (size 1 in the labels) at 0."""
    data = np.asarray(data, float).reshape(-1, 4)
    ndim = int(plan.layer_ndim)
    out = np.zeros((len(data), ndim + 1))
    out[:, 0] = data[:, 0]
    for axis, value in dict(plan.fixed).items():
        out[:, 1 + axis] = value
    out[:, 1 + plan.frame_axis] = data[:, 1]
    out[:, 1 + plan.y_axis] = data[:, 2]
    out[:, 1 + plan.x_axis] = data[:, 3]
    return out


def summary_text(lineage: Any, decisions: Sequence[Any], cancelled: bool = False) -> str:
    """One line: objects, new ones, divisions, ends (and whether the run was cancelled)."""
    kinds = [getattr(d, "kind", "") for d in decisions]
    objects = len(lineage) if lineage is not None else 0

    def count(n: int, word: str, plural: str | None = None) -> str:
        return f"{n} {word if n == 1 else (plural or word + 's')}"

    line = (
        f"{count(objects, 'object')} · {kinds.count('new')} new · "
        f"{count(kinds.count('division'), 'division')} · {kinds.count('end')} ended"
    )
    return line + (" (cancelled)" if cancelled else "")


# --- the controller ---------------------------------------------------------------------------


class TrackAllController:
    """The Track all panel's state and its two jobs (see the module docstring).

    Parameters
    ----------
    runner
        Runs each job's generator (see :class:`~napari_sam2.widget.propagation.JobRunner`).
    prepare
        Called on the GUI thread when a job starts: the :class:`AutoTarget`. Raises ValueError
        with a message for the user when the choices make no job (no image, wrong layer).
    make_tracker
        Called in the worker as ``make_tracker(spec, frames, contrast_limits=...,
        fill_hole_area=...)``: a tracker over the spec's lazy stack (closed after the job).
    blocked
        Returns a reason not to start now ("" to go ahead): other work of the widget runs.
    """

    started = Signal(object)
    """A job started: its handle (the napari worker in the widget)."""
    running_changed = Signal(bool, bool)
    """(a job runs, it is a Track all run)."""
    labels_changed = Signal(int)
    """The output labels changed on this frame."""
    progress_changed = Signal(str, int, int)
    """(progress line, frames done, frames of the run)."""
    status_changed = Signal(str, str, bool)
    """(short status, detail, is an error); ("", "", False) clears it."""
    failed = Signal(str, str, object)
    """(short message, detail, exception): one per failed job."""
    summary_changed = Signal(str)
    finished = Signal(object)
    """A Track all run ended (finished or cancelled): its :class:`TrackAllOutcome`."""
    segmented = Signal(int, list)
    """Segment all wrote these new object ids on this frame."""
    idle = Signal()

    def __init__(
        self,
        runner: JobRunner,
        prepare: Callable[[], AutoTarget],
        make_tracker: Callable[..., Any],
        blocked: Callable[[], str] | None = None,
    ) -> None:
        self.runner = runner
        self.prepare = prepare
        self.make_tracker = make_tracker
        self.blocked = blocked or (lambda: "")
        self.settings = AutoSettings()
        self.segmenter: Segmenter | None = None
        """Stand-in for segment-everything (tests, custom detectors); None: the tracker's."""
        self.track_all_factory: Callable[..., Any] | None = None
        """``factory(tracker, settings, segmenter) -> TrackAll``; None: the engine's."""
        self.worker: JobHandle | None = None
        self.progress = PropagationProgress()
        self.last_error: BaseException | None = None
        self.outcome: TrackAllOutcome | None = None
        self.summary = ""
        self.closed = False
        self._job: _Job | None = None
        self._owned: dict[int, set[int]] = {}
        """The label array (its base: each job gets a new view) -> the ids Track all runs
        wrote into it."""

    # --- settings -------------------------------------------------------------------------

    def configure(self, **changes: Any) -> AutoSettings:
        """Change settings by name (``discover``, ``discover_every``, ``divisions``,
        ``end_after``) or segment-everything options (``points_per_side``,
        ``pred_iou_thresh``, ``stability_score_thresh``, ``min_area``, ``max_overlap``)."""
        everything_fields = set(EverythingOptions.__dataclass_fields__)
        own = {k: v for k, v in changes.items() if k not in everything_fields}
        other = {k: v for k, v in changes.items() if k in everything_fields}
        unknown = set(own) - set(AutoSettings.__dataclass_fields__) - {"everything"}
        if unknown:
            raise TypeError(f"unknown Track all settings: {sorted(unknown)}")
        settings = replace(self.settings, **own)
        if other:
            settings = replace(settings, everything=replace(settings.everything, **other))
        if settings.discover_every < 1 or settings.end_after < 0:
            raise ValueError("discover_every must be >= 1 and end_after >= 0")
        self.settings = settings
        return settings

    # --- user actions ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def segment_all(self) -> bool:
        """Segment everything on the viewer's frame in a worker; new objects become labels on
        that frame. Returns whether a job started."""
        return self._start("segment")

    def track_all(self) -> bool:
        """Track every object from the viewer's frame to the end in a worker. Returns whether
        a job started."""
        return self._start("track")

    def cancel(self) -> None:
        """Stop the running job after the frame in progress; the frames written stay, and a
        Track all run still ends with the tracks and summary of what it did."""
        if self._job is not None:
            self._job.stop.set()  # the job sees it after its frame and ends by itself

    def close(self) -> None:
        """Stop the running job now; emit nothing more (the views may be gone)."""
        self.closed = True
        if self._job is not None:
            self._job.stop.set()
            if self.worker is not None:
                self.worker.quit()

    # --- running jobs ---------------------------------------------------------------------

    def _start(self, kind: str) -> bool:
        if self.closed:
            return False
        if self.worker is not None:
            self._tell_error(ValueError("Track all is busy: wait for it or cancel it"))
            return False
        reason = self.blocked()
        if reason:
            self._tell_error(ValueError(reason))
            return False
        try:
            target = self.prepare()
            seeds = None
            if kind == "track":
                seeds = np.array(target.spec.labels[target.frame])
                self._check_settings()
        except (ValueError, TypeError, ImportError) as exc:
            self._tell_error(exc)
            self.idle.emit()
            return False
        job = _Job(kind, target, self.settings, seeds)
        if kind == "track":
            self.progress = PropagationProgress()
            owned = self._owned.setdefault(_array_key(target.spec.labels), set())
            job.ids = set(owned)
        self._job = job
        worker = self.runner.create(
            lambda: self.work(job),
            lambda item: self._on_yielded(job, item),
            lambda exc: self._on_error(job, exc),
            lambda: self._on_finished(job),
        )
        self.worker = worker
        self.running_changed.emit(True, kind == "track")
        self.started.emit(worker)
        worker.start()
        return True

    def _check_settings(self) -> None:
        self.settings.track_all_settings()  # the engine's checks, on the GUI thread

    def _segmenter(self, tracker: Any, settings: AutoSettings) -> Segmenter:
        if self.segmenter is not None:
            return self.segmenter
        options = settings.everything.kwargs()
        return lambda t: [r["segmentation"] for r in tracker.segment_everything(t, **options)]

    def _make_track_all(
        self, tracker: Any, settings: AutoSettings, segmenter: Segmenter, first_new_id: int
    ) -> Any:
        if self.track_all_factory is not None:
            return self.track_all_factory(tracker, settings.track_all_settings(), segmenter)
        from napari_sam2.tracking.track_all import TrackAll

        return TrackAll(
            tracker, settings.track_all_settings(), segmenter=segmenter, first_new_id=first_new_id
        )

    def work(self, job: _Job) -> Iterator[tuple[str, Any]]:
        """A job, in the worker: yields ``(what, value)`` for the GUI thread.

        Segment all: ``("segmented", (frame, new labels, ids))``. Track all: ``("seeded",
        ids)``, ``("leg", ("track all", frames))``, ``("frame", AutoFrame)`` per frame, and
        ``("done", (lineage, decisions))`` at the end (also when cancelled).
        """
        spec = job.target.spec
        tracker = self.make_tracker(
            spec, spec.frames(), contrast_limits=spec.contrast_limits, fill_hole_area=FILL_HOLE_AREA
        )
        job.tracker = tracker
        try:
            segmenter = self._segmenter(tracker, job.settings)
            if job.kind == "segment":
                yield from self._segment_work(job, segmenter)
            else:
                yield from self._track_work(job, tracker, segmenter)
        finally:
            job.tracker = None
            _close(tracker)

    def _segment_work(self, job: _Job, segmenter: Segmenter) -> Iterator[tuple[str, Any]]:
        labels, frame = job.target.spec.labels, job.target.frame
        masks = list(segmenter(frame))
        if job.stop.is_set():
            return
        plane = np.array(labels[frame])
        # above every label of the layer: a new object never merges with one on another frame
        first = int(np.max(labels)) + 1 if np.size(labels) else 1
        options = job.settings.everything
        new, ids = add_new_objects(plane, masks, first, options.min_area, options.max_overlap)
        yield ("segmented", (frame, new, ids, len(masks)))

    def _track_work(
        self, job: _Job, tracker: Any, segmenter: Segmenter
    ) -> Iterator[tuple[str, Any]]:
        frame = job.target.frame
        labels = job.target.spec.labels
        # new objects above every label of the layer: a found object never takes the id of a
        # label the user drew on another frame (which the run would then clear)
        first_new_id = int(np.max(labels)) + 1 if np.size(labels) else 1
        auto = self._make_track_all(tracker, job.settings, segmenter, first_new_id)
        seeds = job.seeds
        if seeds is not None and np.any(seeds):
            ids = auto.seed_from_labels(frame, seeds)
        else:
            ids = auto.seed_from_everything(frame)
        if not ids:
            raise ValueError(
                f"no objects to track on frame {frame}: segment-everything found none; draw "
                "labels on this frame or lower the quality thresholds"
            )
        yield ("seeded", list(ids))
        yield ("leg", ("track all", int(job.target.spec.labels.shape[0]) - frame))
        run = auto.run(start_frame=frame)
        try:
            for item in run:
                yield ("frame", item)
                if job.stop.is_set():
                    break
        finally:
            run.close()
        yield ("done", (auto.lineage, list(auto.decisions)))

    def _on_yielded(self, job: _Job, item: tuple[str, Any]) -> None:
        if self.closed or job.failed:
            return
        what, value = item
        labels = job.target.spec.labels
        if what == "segmented":
            frame, new, ids, found = value
            plane = np.array(labels[frame])
            free = (plane == 0) & (new != 0)
            plane[free] = new[free].astype(plane.dtype)
            labels[frame] = plane
            self.labels_changed.emit(frame)
            self.summary = (
                f"frame {frame}: {len(ids)} new object{'s' if len(ids) != 1 else ''} "
                f"({found} found)"
            )
            self.summary_changed.emit(self.summary)
            self.segmented.emit(frame, list(ids))
        elif what == "seeded":
            job.ids.update(int(k) for k in value)
        elif what == "leg":
            self.progress.start_leg(*value)
            self._emit_progress()
        elif what == "frame":
            self._write_frame(job, value)
        elif what == "done":
            self._done(job, *value)

    def _write_frame(self, job: _Job, auto_frame: Any) -> None:
        labels = job.target.spec.labels
        t = int(auto_frame.frame_index)
        frame_labels = np.asarray(auto_frame.labels)
        present = np.unique(frame_labels)
        result_ids = getattr(getattr(auto_frame, "result", None), "object_ids", ())
        job.ids.update(int(k) for k in present if k)
        job.ids.update(int(k) for k in result_ids)
        self._owned.setdefault(_array_key(labels), set()).update(job.ids)
        labels[t] = write_auto_frame(np.asarray(labels[t]), frame_labels, job.ids)
        job.written += 1
        job.points.append(frame_points(t, frame_labels))
        self.progress.frame_done()
        self._emit_progress()
        self.labels_changed.emit(t)

    def _done(self, job: _Job, lineage: Any, decisions: list[Any]) -> None:
        cancelled = job.stop.is_set()
        tracks = self._tracks(job, lineage)
        summary = summary_text(lineage, decisions, cancelled)
        self.outcome = TrackAllOutcome(lineage, decisions, tracks, summary, cancelled, job.written)
        self.summary = summary
        self.summary_changed.emit(summary)
        self.finished.emit(self.outcome)

    def _tracks(self, job: _Job, lineage: Any) -> TracksData | None:
        # from the centroids gathered frame by frame as the run wrote them: no pass over the
        # whole stack on the GUI thread at the end
        return _tracks_from_points(job.points, lineage)

    def _emit_progress(self) -> None:
        p = self.progress
        self.progress_changed.emit(p.text, p.done, p.total)

    def _on_error(self, job: _Job, exc: BaseException) -> None:
        job.failed = True
        if self.closed:
            return
        self._tell_error(exc, job.kind)

    def _tell_error(self, exc: BaseException, kind: str | None = None) -> None:
        self.last_error = exc
        cause = exc.__cause__ if type(exc).__name__ == "WorkError" and exc.__cause__ else exc
        what = {"segment": "Segment all", "track": "Track all"}.get(kind or "", "")
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        if what:
            short = f"SAM 2: {what} failed: {message}"
            detail = f"{what} failed: {type(cause).__name__}: {cause}"
            detail += "\nLabels already written are kept."
        else:
            short, detail = f"SAM 2: {message}", str(cause)
        short = " ".join(short.split())
        if len(short) > 120:
            short = short[:119].rstrip() + "…"
        self.status_changed.emit(short, detail, True)
        self.failed.emit(short, detail, exc)

    def _on_finished(self, job: _Job) -> None:
        if job.tracker is not None:  # the worker was stopped before its generator ended
            tracker, job.tracker = job.tracker, None
            _close(tracker)
        if self._job is job:
            self._job = None
            self.worker = None
        if self.closed:
            return
        if not job.failed:
            self.last_error = None
            self.status_changed.emit("", "", False)
        self.running_changed.emit(False, False)
        self.idle.emit()


def _close(tracker: Any) -> None:
    close = getattr(tracker, "close", None)
    if callable(close):
        close()


def _array_key(labels: Any) -> int:
    """The same key for every view of one label array (each job gets a new (T, H, W) view)."""
    while getattr(labels, "base", None) is not None and isinstance(labels.base, np.ndarray):
        labels = labels.base
    return id(labels)
