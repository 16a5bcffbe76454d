"""Which frames a propagation visits, in order: the one definition of it.

The tracker iterates this range, and front ends (the command line, the widget's progress bar)
size their progress counts from it, so a count always equals the results actually yielded.
"""

from __future__ import annotations

__all__ = ["propagation_frames"]


def propagation_frames(
    num_frames: int, start: int, reverse: bool = False, max_frames: int | None = None
) -> range:
    """The frame indices one propagation pass visits, in the order it visits them.

    ``start`` is the (resolved) start frame, ``0 <= start < num_frames``. Forward runs from
    ``start`` to the last frame; ``reverse`` runs from ``start`` down to frame 0, except that a
    reverse pass from frame 0 visits nothing (as the reference implementation does: frame 0
    has no earlier frame to track into). ``max_frames=k`` visits the start frame and at most
    ``k`` more; ``None`` goes to the end of the stack.

    >>> list(propagation_frames(5, 1))
    [1, 2, 3, 4]
    >>> list(propagation_frames(5, 3, reverse=True, max_frames=1))
    [3, 2]
    >>> len(propagation_frames(5, 0, reverse=True))
    0
    """
    num_frames, start = int(num_frames), int(start)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not 0 <= start < num_frames:
        raise ValueError(f"start frame {start} is outside the stack's {num_frames} frames")
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 0):
        raise ValueError(f"max_frames must be a non-negative integer, got {max_frames}")
    span = num_frames if max_frames is None else int(max_frames)
    if reverse:
        if start == 0:
            return range(0)
        return range(start, max(start - span, 0) - 1, -1)
    return range(start, min(start + span, num_frames - 1) + 1)
