"""``propagation_frames``: the one definition of the frames a propagation visits."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.tracking import Tracker, propagation_frames
from small_model import moving_blob_stack


@pytest.mark.parametrize(
    ("num_frames", "start", "reverse", "max_frames", "expected"),
    [
        (6, 0, False, None, [0, 1, 2, 3, 4, 5]),
        (6, 2, False, None, [2, 3, 4, 5]),
        (6, 2, False, 0, [2]),
        (6, 2, False, 2, [2, 3, 4]),
        (6, 5, False, 3, [5]),
        (6, 3, True, None, [3, 2, 1, 0]),
        (6, 3, True, 1, [3, 2]),
        (6, 3, True, 0, [3]),
        (6, 3, True, 10, [3, 2, 1, 0]),
        # the reference yields nothing for a reverse pass from frame 0, not even frame 0
        (6, 0, True, None, []),
        (6, 0, True, 3, []),
        (1, 0, False, None, [0]),
    ],
)
def test_frames_visited(num_frames, start, reverse, max_frames, expected):
    order = propagation_frames(num_frames, start, reverse, max_frames)
    assert isinstance(order, range)
    assert list(order) == expected


@pytest.mark.parametrize(
    ("num_frames", "start", "max_frames"), [(6, 6, None), (6, -1, None), (0, 0, None), (6, 1, -1)]
)
def test_bad_arguments(num_frames, start, max_frames):
    with pytest.raises(ValueError):
        propagation_frames(num_frames, start, False, max_frames)


@pytest.mark.parametrize(
    ("start", "reverse", "max_frames"),
    [
        (None, False, None),
        (None, True, None),
        (3, False, 1),
        (3, True, 1),
        (0, True, None),
        (5, False, None),
        (4, True, 0),
    ],
)
def test_tracker_yields_exactly_these_frames(small_model, start, reverse, max_frames):
    stack = moving_blob_stack(frames=6, size=64)
    with Tracker(small_model, stack) as tracker:
        tracker.add_points(2, 1, np.array([[32.0, 20.0]]), np.array([1]))
        visited = [
            r.frame_index
            for r in tracker.propagate(start_frame=start, reverse=reverse, max_frames=max_frames)
        ]
    resolved = 2 if start is None else start
    assert visited == list(propagation_frames(6, resolved, reverse, max_frames))
