"""Drive a tracker's propagation straight into a label array and a presence table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from napari_sam2.outputs.labels import LabelsWriter
from napari_sam2.outputs.presence import PresenceTable

__all__ = ["DIRECTIONS", "propagate_into"]

DIRECTIONS = ("forward", "reverse", "both")


def propagate_into(
    tracker: Any,
    writer: LabelsWriter,
    table: PresenceTable | None = None,
    *,
    start_frame: int | None = None,
    direction: str = "forward",
    max_frames: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Run ``tracker.propagate`` and write every result as it comes; yields each result.

    ``direction``: ``"forward"``, ``"reverse"`` or ``"both"`` (forward, then reverse from the
    same ``start_frame``; with ``start_frame=None`` forward starts at the first prompted frame
    and reverse at the last one, decision D3, so "both" covers the whole stack).
    ``max_frames`` has the tracker's meaning (the start frame plus that many more, per pass).
    ``should_stop()`` is checked before each frame: when it returns True propagation ends and
    the frames already written stay written. The result is written and recorded before it is
    yielded, so a GUI worker can report progress from the yielded value.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    passes = {"forward": [False], "reverse": [True], "both": [False, True]}[direction]
    for reverse in passes:
        results = tracker.propagate(start_frame=start_frame, reverse=reverse, max_frames=max_frames)
        try:
            while True:
                if should_stop is not None and should_stop():
                    return
                try:
                    result = next(results)
                except StopIteration:
                    break
                writer.write(result)
                if table is not None:
                    table.record(result)
                yield result
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
