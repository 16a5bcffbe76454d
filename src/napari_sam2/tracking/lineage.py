"""The lineage of automatically tracked objects: who started when, who ended, who divided.

A track is one object id (= label id) followed from its first to its last frame; a daughter
of a division is a new track whose parent is the divided track. Every decision the automatic
tracker takes (seed, new object, division, end) is kept as a :class:`Decision`, so that a
result can be explained frame by frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TrackSpan", "Decision", "Lineage", "DECISION_KINDS"]

DECISION_KINDS = ("seed", "new", "division", "end")


@dataclass
class TrackSpan:
    """One track: its id (the label), its first and last frame, and its parent (0: none).

    ``last_frame`` is the last frame the object was present on (or, while it is still being
    tracked, the last frame seen); frames in between where it was absent are gaps.
    """

    track_id: int
    first_frame: int
    last_frame: int
    parent_id: int = 0


@dataclass(frozen=True)
class Decision:
    """One decision of the automatic tracker.

    ``kind`` is one of :data:`DECISION_KINDS`: ``"seed"`` (an object from the start frame's
    labels or segment-everything), ``"new"`` (an object found by discovery), ``"division"``
    (``object_id`` ended on ``frame`` - 1 and its daughters ``related`` start on ``frame``),
    ``"end"`` (``object_id`` was absent too long; ``frame`` is its last frame present).
    ``reason`` says why in words and numbers, e.g. ``"area 312 >= 30, overlap 0.04 < 0.2"``.
    """

    frame: int
    kind: str
    object_id: int
    related: tuple[int, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["related"] = list(self.related)
        return record


@dataclass
class Lineage:
    """Tracks by id, with their parents; the graph a napari Tracks layer and the CTC and GEFF
    files are written from."""

    spans: dict[int, TrackSpan] = field(default_factory=dict)

    def start(self, track_id: int, frame: int, parent_id: int = 0) -> TrackSpan:
        """Begin a track on ``frame``; its id must be new."""
        if track_id in self.spans:
            raise ValueError(f"track {track_id} already exists; track ids are never reused")
        if parent_id and parent_id not in self.spans:
            raise ValueError(f"parent {parent_id} of track {track_id} is not a known track")
        span = self.spans[track_id] = TrackSpan(int(track_id), int(frame), int(frame), parent_id)
        return span

    def seen(self, track_id: int, frame: int) -> None:
        """The track is present on ``frame``: extend it."""
        span = self.spans[track_id]
        span.last_frame = max(span.last_frame, int(frame))

    def parent_of(self, track_id: int) -> int:
        return self.spans[track_id].parent_id

    def children_of(self, track_id: int) -> list[int]:
        return sorted(k for k, s in self.spans.items() if s.parent_id == track_id)

    def divisions(self) -> dict[int, list[int]]:
        """Parent id -> its daughters' ids, for every track that has daughters."""
        result: dict[int, list[int]] = {}
        for span in self.spans.values():
            if span.parent_id:
                result.setdefault(span.parent_id, []).append(span.track_id)
        return {k: sorted(v) for k, v in sorted(result.items())}

    def graph(self) -> dict[int, list[int]]:
        """Daughter id -> [parent id], the ``graph`` of a napari Tracks layer."""
        return {k: [s.parent_id] for k, s in sorted(self.spans.items()) if s.parent_id}

    def ctc_rows(self) -> list[tuple[int, int, int, int]]:
        """``(L, B, E, P)`` per track sorted by L, as in a CTC ``res_track.txt`` (before any
        track with gaps is split into continuous runs, which the CTC export does)."""
        return [
            (s.track_id, s.first_frame, s.last_frame, s.parent_id)
            for s in sorted(self.spans.values(), key=lambda s: s.track_id)
        ]

    def __len__(self) -> int:
        return len(self.spans)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.spans
