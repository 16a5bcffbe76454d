"""Track every cell: seeds, discovery of new objects, divisions and ends (issue 13).

:class:`TrackAll` drives a :class:`~napari_sam2.tracking.tracker.Tracker` (or anything with the
same interface) forward one frame at a time, ``tracker.propagate(start_frame=t, max_frames=0)``,
because objects can only be added or removed between propagations. After each frame it decides,
with the thresholds of :class:`TrackAllSettings`:

- **ends**: an object absent (score logit <= 0 or an empty mask) on more than ``end_after``
  consecutive frames is removed from the tracker; it ends on the last frame it was present;
- **divisions**: an object whose mask falls apart into two large enough, not too unequal parts
  on ``division_frames`` consecutive frames ends on the frame before the split began, and two
  daughters (new ids, the parent in the :class:`~napari_sam2.tracking.lineage.Lineage`) start
  on the split's first frame. The frames since the split, held back until then, are relabelled
  part by part, and the daughters are prompted with their parts on the current frame;
- **new objects**: every ``discover_every`` frames after the start, the segmenter's masks that
  are large enough and mostly unlabelled become new objects, prompted with their masks.

Frames are yielded in order, ``division_frames - 1`` frames late (so that a division can still
relabel them), as :class:`AutoFrame` objects: the label plane (object k is label k, the highest
mask logit wins where objects overlap, as in :mod:`napari_sam2.outputs.labels`) and the
tracker's result. Ids are never reused: a new id is one above the largest id ever used (at most
65535). Every decision is kept in :attr:`TrackAll.decisions` with its reason in numbers.

A split still present on the last frame of the stack is a division even if it lasted fewer
than ``division_frames`` frames: the stack ends, nothing can contradict it any more.

The tracking layer does not import :mod:`napari_sam2.outputs`: pass a
:class:`napari_sam2.outputs.PresenceTable` as ``presence=`` to have it filled frame by frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.tracking.lineage import Decision, Lineage
from napari_sam2.tracking.prompt_checks import MAX_OBJECT_ID
from napari_sam2.tracking.results import FrameResult

__all__ = ["TrackAllSettings", "AutoFrame", "TrackAll", "compose_labels"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # parts touching at a corner are one part


@dataclass(frozen=True)
class TrackAllSettings:
    """Thresholds of :class:`TrackAll` (see the module notes)."""

    discover_every: int = 5
    """k: look for new objects on every k-th frame after the start frame; 0 = never."""
    new_min_area: int = 30
    """Pixels: smaller candidates (new objects and segment-everything seeds) are ignored."""
    new_max_overlap: float = 0.2
    """A candidate is new if at most this fraction of its area is already labelled."""
    divisions: bool = True
    division_min_ratio: float = 0.3
    """Smaller part area / larger part area of a split, at least."""
    division_min_part_area: int = 15
    """Pixels, each of the two parts, at least."""
    division_frames: int = 2
    """Consecutive frames the split must last before the object divides (frames are yielded
    this many minus one frames late)."""
    end_after: int = 3
    """m: an object absent on more than m consecutive frames ends."""
    everything: Mapping[str, Any] = field(default_factory=dict)
    """Options of ``tracker.segment_everything`` for the default segmenter."""

    def __post_init__(self) -> None:
        checks = [
            ("discover_every", self.discover_every >= 0, ">= 0"),
            ("new_min_area", self.new_min_area >= 0, ">= 0"),
            ("new_max_overlap", 0.0 <= self.new_max_overlap <= 1.0, "between 0 and 1"),
            ("division_min_ratio", 0.0 <= self.division_min_ratio <= 1.0, "between 0 and 1"),
            ("division_min_part_area", self.division_min_part_area >= 1, ">= 1"),
            ("division_frames", self.division_frames >= 1, ">= 1"),
            ("end_after", self.end_after >= 0, ">= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")


@dataclass
class AutoFrame:
    """One frame of an automatic run: ``labels`` (H, W) uint16 (object k as label k, 0 the
    background) and the tracker's ``result`` for the objects tracked on the frame, after
    relabelling by divisions (its object ids are the ids in ``labels``)."""

    frame_index: int
    labels: np.ndarray
    result: FrameResult


def compose_labels(result: Any, height: int, width: int) -> np.ndarray:
    """(H, W) uint16 labels of one result on an empty plane, by the rules of
    :mod:`napari_sam2.outputs.labels`: object k is label k where it is present (score > 0) and
    its mask logit is > 0; where several claim a pixel the highest logit wins (ties: the first
    listed); objects without output on the frame are skipped."""
    plane = np.zeros((height, width), np.uint16)
    ids = np.asarray(result.object_ids, dtype=np.int64)
    if ids.size == 0:
        return plane
    scores = np.asarray(result.object_score_logits).reshape(-1)
    has = getattr(result, "has_output", None)
    has = np.ones(ids.size, bool) if has is None else np.asarray(has, bool).reshape(-1)
    rows = np.flatnonzero(has & (scores > 0))
    if rows.size == 0:
        return plane
    logits = np.asarray(result.mask_logits)[rows]
    best = np.argmax(logits, axis=0)
    best_logit = np.take_along_axis(logits, best[None], axis=0)[0]
    claimed = best_logit > 0
    plane[claimed] = ids[rows][best[claimed]].astype(np.uint16)
    return plane


# --- results, row by row -------------------------------------------------------------------


def _empty_result(frame: int, height: int, width: int) -> FrameResult:
    return FrameResult(
        frame,
        (),
        np.zeros((0, height, width), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, bool),
    )


def _rows(result: Any) -> dict[int, tuple[np.ndarray, float, bool]]:
    """Object id -> (mask logits, score logit, has output) of a result."""
    logits = np.asarray(result.mask_logits, dtype=np.float32)
    scores = np.asarray(result.object_score_logits, dtype=np.float32).reshape(-1)
    has = getattr(result, "has_output", None)
    has = np.ones(len(scores), bool) if has is None else np.asarray(has, bool).reshape(-1)
    return {
        int(k): (logits[i], float(scores[i]), bool(has[i])) for i, k in enumerate(result.object_ids)
    }


def _result_of(
    frame: int, rows: dict[int, tuple[np.ndarray, float, bool]], height: int, width: int
) -> FrameResult:
    if not rows:
        return _empty_result(frame, height, width)
    ids = tuple(rows)
    return FrameResult(
        frame,
        ids,
        np.stack([rows[k][0] for k in ids]).astype(np.float32, copy=False),
        np.array([rows[k][1] for k in ids], np.float32),
        np.array([rows[k][2] for k in ids], bool),
    )


def _own_mask(row: tuple[np.ndarray, float, bool]) -> np.ndarray | None:
    """The object's mask where it is present with a non-empty mask, else None."""
    logits, score, has = row
    if not has or score <= 0:
        return None
    mask = logits > 0
    return mask if mask.any() else None


def _parts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected parts (8-connected) of a mask: the part image and the area of each part
    (index i is part i + 1)."""
    from scipy import ndimage  # scipy comes with scikit-image; imported when first needed

    image, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(image.ravel(), minlength=count + 1)[1:]
    return image, sizes


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()]) if ys.size else np.array([np.nan, np.nan])


def _assign_parts(
    mask: np.ndarray, refs: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``mask`` between two daughters: every connected part goes to one of them.

    Without ``refs`` (the frame a division is decided on) the largest part is the first
    daughter's and the second largest the second's. With ``refs`` (the daughters' masks on the
    next frame) the two largest parts go the way that overlaps the references most (nearest
    centroids where neither overlaps). Any other part goes to the daughter it overlaps most on
    the next frame, or else to the nearer of the two largest parts.
    """
    image, sizes = _parts(mask)
    order = np.argsort(-sizes, kind="stable") + 1  # part labels, largest first
    big = [image == order[0], image == order[1]] if len(order) > 1 else [image == order[0]]
    if len(big) == 1:  # not split on this frame (cannot happen for frames of a split run)
        return big[0], np.zeros_like(mask)
    if refs is not None:

        def overlap(a: np.ndarray, b: np.ndarray) -> int:
            return int(np.count_nonzero(a & b))

        keep = overlap(big[0], refs[0]) + overlap(big[1], refs[1])
        swap = overlap(big[0], refs[1]) + overlap(big[1], refs[0])
        if keep == swap:
            c = [_centroid(m) for m in big]
            r = [_centroid(m) for m in refs]
            keep = -(np.linalg.norm(c[0] - r[0]) + np.linalg.norm(c[1] - r[1]))
            swap = -(np.linalg.norm(c[0] - r[1]) + np.linalg.norm(c[1] - r[0]))
        if swap > keep:
            big.reverse()
    first, second = big[0].copy(), big[1].copy()
    centres = [_centroid(first), _centroid(second)]
    for label in order[2:]:
        part = image == label
        goes_first = None
        if refs is not None:
            a, b = np.count_nonzero(part & refs[0]), np.count_nonzero(part & refs[1])
            if a != b:
                goes_first = a > b
        if goes_first is None:
            c = _centroid(part)
            goes_first = np.linalg.norm(c - centres[0]) <= np.linalg.norm(c - centres[1])
        (first if goes_first else second)[part] = True
    return first, second


def _part_logits(logits: np.ndarray, part: np.ndarray) -> np.ndarray:
    """The parent's logits inside ``part``; elsewhere never positive (-|logit|)."""
    return np.where(part, logits, -np.abs(logits)).astype(np.float32)


# --- the driver ------------------------------------------------------------------------------


@dataclass
class _Split:
    start: int
    areas: list[tuple[int, int]]  # (larger, smaller) per frame of the run


class TrackAll:
    """Track every object of a stack: seeds, then discovery, divisions and ends.

    Parameters
    ----------
    tracker
        A :class:`~napari_sam2.tracking.tracker.Tracker`, or an object with its interface:
        ``num_frames``, ``height``, ``width``, ``object_ids``, ``add_mask``,
        ``remove_object``, ``propagate(start_frame=t, max_frames=0)`` and, for the default
        segmenter, ``segment_everything``.
    settings
        Thresholds; None uses :class:`TrackAllSettings` defaults.
    segmenter
        ``segmenter(frame_index)`` -> boolean (H, W) masks of everything on that frame. None
        uses ``tracker.segment_everything(frame_index, **settings.everything)``.
    presence
        Optional table with ``record(result)`` (a :class:`napari_sam2.outputs.PresenceTable`),
        filled with every yielded frame's result.
    first_new_id
        New objects and daughters get ids from this one up (at least one above every id used
        so far), e.g. one above every label already in the user's layer so that a found
        object never takes the id of a label drawn on another frame. Seeds keep their ids.
    """

    def __init__(
        self,
        tracker: Any,
        settings: TrackAllSettings | None = None,
        segmenter: Callable[[int], Sequence[np.ndarray]] | None = None,
        *,
        presence: Any = None,
        first_new_id: int = 1,
    ) -> None:
        if not 1 <= int(first_new_id) <= MAX_OBJECT_ID + 1:
            raise ValueError(
                f"first_new_id must be between 1 and {MAX_OBJECT_ID + 1}, got {first_new_id}"
            )
        self.tracker = tracker
        self.settings = settings if settings is not None else TrackAllSettings()
        if segmenter is None:
            options = dict(self.settings.everything)

            def segmenter(frame_index: int) -> list[np.ndarray]:
                records = tracker.segment_everything(frame_index, **options)
                return [r["segmentation"] for r in records]

        self.segmenter = segmenter
        self.presence = presence
        self.lineage = Lineage()
        self.decisions: list[Decision] = []
        self.height = int(tracker.height)
        self.width = int(tracker.width)
        self.num_frames = int(tracker.num_frames)
        self._largest_id = max((int(k) for k in tracker.object_ids), default=0)
        self._first_new_id = int(first_new_id)
        self._seed_frame: int | None = None
        self._seeded: dict[int, np.ndarray] = {}  # frame -> pixels of the seeds given there
        self._prompted: dict[int, set[int]] = {}  # object -> frames it was prompted on
        self._last_present: dict[int, int] = {}
        self._absent: dict[int, int] = {}  # object -> consecutive frames absent
        self._splits: dict[int, _Split] = {}
        self._warned_ids = False

    # --- seeds -------------------------------------------------------------------------------

    def seed_from_labels(self, frame_index: int, labels: Any) -> list[int]:
        """One object per nonzero label of the (H, W) array, id = the label, prompted with
        its mask on ``frame_index``. Returns the ids."""
        frame = self._check_frame(frame_index)
        plane = np.asarray(labels)
        if plane.shape != (self.height, self.width):
            raise ValueError(
                f"seed labels of shape {plane.shape} do not match the frames "
                f"({self.height}, {self.width})"
            )
        if plane.dtype.kind not in "iub":
            raise TypeError(f"seed labels must have an integer dtype, got {plane.dtype}")
        self._seed_at(frame)
        ids = [int(k) for k in np.unique(plane) if k != 0]
        bad = [k for k in ids if not 1 <= k <= MAX_OBJECT_ID]
        if bad:
            raise ValueError(f"seed labels {bad[:5]} are outside 1..{MAX_OBJECT_ID}")
        taken = [k for k in ids if k in self.lineage or k in self.tracker.object_ids]
        if taken:
            raise ValueError(f"object ids {taken[:5]} are already used; ids are never reused")
        for k in ids:
            mask = plane == k
            self._seed(k, frame, mask)
            self._log(frame, "seed", k, (), f"label {k}, area {int(mask.sum())} px")
        return ids

    def seed_from_everything(self, frame_index: int) -> list[int]:
        """The segmenter's masks on ``frame_index`` that pass the area and overlap rules
        become objects with new ids (1, 2, ... on a fresh tracker). Returns the ids."""
        frame = self._check_frame(frame_index)
        self._seed_at(frame)
        labelled = self._seeded.get(frame, np.zeros((self.height, self.width), bool)).copy()
        ids = []
        for mask, reason in self._accepted(frame, labelled):
            got = self._new_ids(1)
            if got is None:
                break
            new = got[0]
            self._seed(new, frame, mask)
            self._log(frame, "seed", new, (), "segment everything: " + reason)
            ids.append(new)
        return ids

    # --- the run -----------------------------------------------------------------------------

    def run(
        self, start_frame: int | None = None, max_frames: int | None = None
    ) -> Iterator[AutoFrame]:
        """Track forward from ``start_frame`` (default: the seed frame) to the last frame, or
        to ``start_frame + max_frames`` (the start frame and ``max_frames`` more, as in
        ``Tracker.propagate``). Each frame is yielded once, in order, ``division_frames - 1``
        frames late while divisions are on. Closing the generator stops after the frame last
        yielded; the tracker stays usable."""
        if start_frame is None:
            if self._seed_frame is None:
                raise ValueError(
                    "nothing seeded: call seed_from_labels / seed_from_everything "
                    "first or give start_frame"
                )
            start_frame = self._seed_frame
        start = self._check_frame(start_frame)
        last = self.num_frames - 1
        if max_frames is not None:
            if int(max_frames) != max_frames or max_frames < 0:
                raise ValueError(f"max_frames must be a non-negative integer, got {max_frames}")
            last = min(last, start + int(max_frames))
        for k in self.tracker.object_ids:  # objects prompted before TrackAll saw them
            if k not in self.lineage:
                self.lineage.start(k, start)
                self._prompted.setdefault(k, set())
                self._last_present.setdefault(k, start)
                self._largest_id = max(self._largest_id, k)
                reason = f"object {k} was in the tracker when the run started on frame {start}"
                self._log(start, "seed", k, (), reason)
        self._splits.clear()
        lag = self.settings.division_frames - 1 if self.settings.divisions else 0
        return self._run(start, last, lag)

    def _run(self, start: int, last: int, lag: int) -> Iterator[AutoFrame]:
        held: list[list[Any]] = []  # [frame, result] processed, not yet yielded
        for t in range(start, last + 1):
            result, ended = self._step(t, start, held)
            held.append([t, result])
            for k in ended:
                self.tracker.remove_object(k)
            if t == self.num_frames - 1:
                self._divide_at_end(t, held)
            while held and (held[0][0] <= t - lag or t == last):
                frame, res = held.pop(0)
                yield self._emit(frame, res)

    def _step(self, t: int, start: int, held: list[list[Any]]) -> tuple[FrameResult, list[int]]:
        s = self.settings
        rows = _rows(self._propagate(t))
        ended: list[int] = []
        divide: list[int] = []
        for k, row in list(rows.items()):
            mask = _own_mask(row)
            if mask is None:
                self._splits.pop(k, None)
                self._absent[k] = self._absent.get(k, 0) + 1
                if self._absent[k] > s.end_after:
                    ended.append(k)
                continue
            self._absent[k] = 0
            self._last_present[k] = t
            if not s.divisions or t in self._prompted.get(k, ()):
                self._splits.pop(k, None)
                continue
            areas = self._split_areas(mask)
            if areas is None:
                self._splits.pop(k, None)
                continue
            run = self._splits.setdefault(k, _Split(t, []))
            run.areas.append(areas)
            if len(run.areas) >= s.division_frames:
                divide.append(k)
        for k in ended:
            first_absent = self._last_present[k] + 1
            self._log(
                self._last_present[k],
                "end",
                k,
                (),
                f"absent on frames {first_absent}-{t} ({t - first_absent + 1} consecutive "
                f"frames > {s.end_after})",
            )
        for k in divide:
            self._divide(k, t, rows, held)
        if s.discover_every and t > start and (t - start) % s.discover_every == 0:
            self._discover(t, rows)
        return _result_of(t, rows, self.height, self.width), ended

    # --- decisions ---------------------------------------------------------------------------

    def _split_areas(self, mask: np.ndarray) -> tuple[int, int] | None:
        """(larger, smaller) areas of the two largest parts if the mask is split enough."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        _, sizes = _parts(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        if sizes.size < 2:
            return None
        top = np.sort(sizes)[::-1]
        large, small = int(top[0]), int(top[1])
        s = self.settings
        if small < s.division_min_part_area or small / large < s.division_min_ratio:
            return None
        return large, small

    def _divide(
        self,
        parent: int,
        t: int,
        rows: dict[int, tuple[np.ndarray, float, bool]],
        held: list[list[Any]],
    ) -> None:
        s = self.settings
        run = self._splits.pop(parent)
        ids = self._new_ids(2)
        if ids is None:
            return
        first, second = ids
        logits, score, has = rows.pop(parent)
        parts = _assign_parts(logits > 0, None)
        # The frames since the split began, newest first: each part goes to the daughter its
        # pixels overlap on the next frame.
        later = parts
        for entry in sorted(
            (e for e in held if e[0] >= run.start), key=lambda e: e[0], reverse=True
        ):
            frame_rows = _rows(entry[1])
            p_logits, p_score, p_has = frame_rows.pop(parent)
            mine = _assign_parts(p_logits > 0, later)
            frame_rows[first] = (_part_logits(p_logits, mine[0]), p_score, p_has)
            frame_rows[second] = (_part_logits(p_logits, mine[1]), p_score, p_has)
            entry[1] = _result_of(entry[0], frame_rows, self.height, self.width)
            later = mine
        self.tracker.remove_object(parent)
        for k in (parent, first, second):
            self._absent.pop(k, None)
        for daughter, part in ((first, parts[0]), (second, parts[1])):
            added = self._start_object(daughter, t, part, parent, lineage_frame=run.start)
            rows[daughter] = _rows(added)[daughter]
        large, small = run.areas[-1]
        count = len(run.areas)
        frames = f"frames {run.start}-{t}" if t > run.start else f"frame {t}"
        last = "; the stack ends there" if count < s.division_frames else ""
        self._log(
            run.start,
            "division",
            parent,
            (first, second),
            f"split into parts of {large} and {small} px (ratio {small / large:.2f} >= "
            f"{s.division_min_ratio}, smaller part >= {s.division_min_part_area} px) on "
            f"{frames} ({count} of {s.division_frames} frames needed{last})",
        )

    def _divide_at_end(self, t: int, held: list[list[Any]]) -> None:
        """Splits still running on the last frame of the stack divide (see the module notes)."""
        pending = [k for k in self._splits if k in self.tracker.object_ids]
        if not pending:
            return
        entry = held[-1]
        rows = _rows(entry[1])
        for k in pending:
            self._divide(k, t, rows, held[:-1])
        entry[1] = _result_of(t, rows, self.height, self.width)

    def _discover(self, t: int, rows: dict[int, tuple[np.ndarray, float, bool]]) -> None:
        current = _result_of(t, rows, self.height, self.width)
        labelled = compose_labels(current, self.height, self.width) > 0
        for mask, reason in self._accepted(t, labelled):
            got = self._new_ids(1)
            if got is None:
                return
            new = got[0]
            added = self._start_object(new, t, mask, 0)
            rows[new] = _rows(added)[new]
            self._log(t, "new", new, (), reason)

    def _accepted(self, t: int, labelled: np.ndarray) -> Iterator[tuple[np.ndarray, str]]:
        """Segmenter masks on frame t that pass the area and overlap rules, with the reason;
        ``labelled`` grows with each accepted mask."""
        s = self.settings
        for candidate in self.segmenter(t):
            mask = np.asarray(candidate).astype(bool, copy=False)
            if mask.shape != (self.height, self.width):
                raise ValueError(
                    f"the segmenter returned a mask of shape {mask.shape} on frame {t}, "
                    f"expected ({self.height}, {self.width})"
                )
            area = int(np.count_nonzero(mask))
            if area == 0 or area < s.new_min_area:
                continue
            overlap = np.count_nonzero(mask & labelled) / area
            if overlap > s.new_max_overlap:
                continue
            labelled |= mask
            yield (
                mask,
                (
                    f"area {area} px >= {s.new_min_area}, overlap {overlap:.2f} <= "
                    f"{s.new_max_overlap} with labelled pixels"
                ),
            )

    # --- helpers -----------------------------------------------------------------------------

    def _propagate(self, t: int) -> FrameResult:
        if not self.tracker.object_ids:
            return _empty_result(t, self.height, self.width)
        results = list(self.tracker.propagate(start_frame=t, max_frames=0))
        if len(results) != 1 or int(results[0].frame_index) != t:
            raise RuntimeError(f"the tracker returned {len(results)} results for frame {t}")
        return results[0]

    def _seed(self, k: int, frame: int, mask: np.ndarray) -> None:
        self._start_object(k, frame, mask, 0)
        seeded = self._seeded.setdefault(frame, np.zeros((self.height, self.width), bool))
        seeded |= mask

    def _seed_at(self, frame: int) -> None:
        """Seeds were looked for on ``frame``: by default the run starts at the first such."""
        if self._seed_frame is None or frame < self._seed_frame:
            self._seed_frame = frame

    def _start_object(
        self, k: int, frame: int, mask: np.ndarray, parent: int, lineage_frame: int | None = None
    ) -> Any:
        """Prompt a new object with its mask on ``frame``; returns the tracker's result."""
        added = self.tracker.add_mask(frame, k, mask)
        self.lineage.start(k, frame if lineage_frame is None else lineage_frame, parent)
        self._largest_id = max(self._largest_id, k)
        self._prompted.setdefault(k, set()).add(frame)
        self._last_present[k] = frame
        self._absent[k] = 0
        return added

    def _new_ids(self, count: int) -> list[int] | None:
        """``count`` new ids above every id used so far, or None (and a warning, once) when
        they would pass 65535."""
        largest = max(
            self._largest_id,
            self._first_new_id - 1,
            max((int(k) for k in self.tracker.object_ids), default=0),
            max(self.lineage.spans, default=0),
        )
        if largest + count > MAX_OBJECT_ID:
            if not self._warned_ids:
                warnings.warn(
                    f"all object ids up to {MAX_OBJECT_ID} are used: no more new objects or "
                    "divisions in this run",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned_ids = True
            return None
        self._largest_id = largest + count
        return list(range(largest + 1, largest + count + 1))

    def _emit(self, frame: int, result: FrameResult) -> AutoFrame:
        labels = compose_labels(result, self.height, self.width)
        for k in np.unique(labels):
            if k and int(k) in self.lineage:
                self.lineage.seen(int(k), frame)
        if self.presence is not None:
            self.presence.record(result)
        return AutoFrame(frame, labels, result)

    def _log(self, frame: int, kind: str, k: int, related: tuple[int, ...], reason: str) -> None:
        self.decisions.append(Decision(int(frame), kind, int(k), tuple(related), reason))

    def _check_frame(self, frame_index: int) -> int:
        if int(frame_index) != frame_index or not 0 <= frame_index < self.num_frames:
            raise ValueError(f"frame {frame_index} is outside the stack (0..{self.num_frames - 1})")
        return int(frame_index)
