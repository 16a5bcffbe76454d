"""Which stored frames a tracked frame attends to (SEMANTICS 4.1-4.5).

The selection is pure bookkeeping on frame indices, kept apart from the tensors so that it can
be tested on its own and so that :mod:`napari_sam2.tracking.state` can tell which stored
memories a future frame may still need.

For object o, frame f and direction d (+1 forward, -1 reverse) in a video of T frames:

- spatial memories: every conditioning frame of o, in the order they became conditioning
  frames (temporal row ``num_maskmem - 1``), then for k = num_maskmem - 1, ..., 1 the
  non-conditioning frame f - d*k if o has one there (row k - 1);
- object pointers: conditioning frames t in the past of the tracking direction
  ((f - t) * d >= 0, distance (f - t) * d), then for k = 1 .. min(T, max_pointers) - 1 the
  non-conditioning frame f - d*k (stopping at the first frame outside the video), distance k.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

__all__ = ["MemoryPlan", "plan_memory", "pointer_time_scale", "needed_window"]


@dataclass(frozen=True)
class MemoryPlan:
    """The memory of one tracked frame, in the order the tokens are concatenated.

    ``spatial`` holds ``(frame, temporal_row, is_conditioning)`` and ``pointers`` holds
    ``(frame, signed_distance, is_conditioning)``.
    """

    spatial: tuple[tuple[int, int, bool], ...]
    pointers: tuple[tuple[int, int, bool], ...]


def pointer_time_scale(num_frames: int, max_pointers: int) -> int:
    """t_max, the divisor of pointer distances: ``min(T, max_pointers) - 1`` (at least 1)."""
    return max(min(num_frames, max_pointers) - 1, 1)


def needed_window(num_maskmem: int, max_pointers: int) -> int:
    """How many frames back (in the tracking direction) a tracked frame reads non-conditioning
    memories: ``max(num_maskmem - 1, max_pointers - 1)``."""
    return max(num_maskmem - 1, max_pointers - 1)


def plan_memory(
    frame: int,
    direction: int,
    conditioning: Iterable[int],
    non_conditioning: Container[int],
    num_frames: int,
    num_maskmem: int,
    max_pointers: int,
) -> MemoryPlan:
    """Select the memories of ``frame`` tracked in ``direction`` (+1 or -1).

    ``conditioning`` is the object's conditioning frames in the order they became
    conditioning; ``non_conditioning`` the frames where it has a stored non-conditioning output
    (a frame in both counts as conditioning).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    cond = list(dict.fromkeys(int(t) for t in conditioning))
    cond_set = set(cond)

    spatial: list[tuple[int, int, bool]] = [(t, num_maskmem - 1, True) for t in cond]
    for k in range(num_maskmem - 1, 0, -1):
        t = frame - direction * k
        if 0 <= t < num_frames and t not in cond_set and t in non_conditioning:
            spatial.append((t, k - 1, False))

    pointers: list[tuple[int, int, bool]] = [
        (t, (frame - t) * direction, True) for t in cond if (frame - t) * direction >= 0
    ]
    for k in range(1, min(num_frames, max_pointers)):
        t = frame - direction * k
        if not 0 <= t < num_frames:
            break
        if t not in cond_set and t in non_conditioning:
            pointers.append((t, k, False))
    return MemoryPlan(tuple(spatial), tuple(pointers))
