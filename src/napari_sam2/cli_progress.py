"""Progress of ``napari-sam2 track``: the propagation passes, the frames they visit, and the
frame counters on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any


class Progress:
    """Frame counters on stderr, one line per propagation pass ("forward", "reverse").

    ``passes`` gives each pass's name and the number of results it yields (from
    :func:`napari_sam2.tracking.propagation_frames`), so every count ends at its total. With
    ``--direction both`` the frames between the first and the last prompt are visited by both
    passes; the final message counts distinct frames.
    """

    def __init__(self, passes: Sequence[tuple[str, int]], quiet: bool) -> None:
        # a pass that visits nothing (reverse from frame 0) gets no line
        self.passes = [(name, total) for name, total in passes if total > 0]
        self.quiet = quiet
        self.index, self.done = 0, 0
        self.start = time.perf_counter()
        self.open_line = False

    def step(self, frame: int) -> None:
        """Count one yielded result on ``frame``."""
        if self.index < len(self.passes) - 1 and self.done >= self.passes[self.index][1]:
            self._close_line()
            self.index, self.done = self.index + 1, 0
            self.start = time.perf_counter()
        self.done += 1
        if self.quiet or not self.passes:
            return
        name, total = self.passes[self.index]
        rate = (time.perf_counter() - self.start) / self.done
        sys.stderr.write(
            f"\rtracking {name}: {self.done}/{total} frames (frame {frame}, {rate:.2f} s/frame)"
        )
        sys.stderr.flush()
        self.open_line = True

    def _close_line(self) -> None:
        if self.open_line:
            sys.stderr.write("\n")
            self.open_line = False

    def end(self) -> None:
        """Finish the current line (after the last result or an interruption)."""
        self._close_line()


def propagation_passes(
    num_frames: int,
    prompted: Sequence[int],
    direction: str,
    start: int | None,
    max_frames: int | None,
) -> list[tuple[str, int]]:
    """Each pass of ``direction`` with the number of frames it visits, in order.

    The start frame resolves as the tracker resolves it: ``start``, else the first prompted
    frame forward and the last one in reverse.
    """
    from napari_sam2.tracking import propagation_frames

    passes = []
    if direction in ("forward", "both"):
        s = min(prompted) if start is None else start
        passes.append(("forward", len(propagation_frames(num_frames, s, False, max_frames))))
    if direction in ("reverse", "both"):
        s = max(prompted) if start is None else start
        passes.append(("reverse", len(propagation_frames(num_frames, s, True, max_frames))))
    return passes


def _planned_frames(num_frames: int, records: Sequence[Any], args: argparse.Namespace) -> int:
    """How many distinct frames the run visits (both directions overlap between prompts)."""
    from napari_sam2.tracking import propagation_frames

    prompted = [r.frame for r in records]
    visited: set[int] = set()
    if args.direction in ("forward", "both"):
        start = min(prompted) if args.start is None else args.start
        visited.update(propagation_frames(num_frames, start, False, args.max_frames))
    if args.direction in ("reverse", "both"):
        start = max(prompted) if args.start is None else args.start
        visited.update(propagation_frames(num_frames, start, True, args.max_frames))
    return len(visited)
