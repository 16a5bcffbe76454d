"""The tracker hands freed heap pages back once per propagated frame (memory_trim)."""

from __future__ import annotations

import numpy as np

from napari_sam2.tracking import Tracker, memory_trim
from small_model import moving_blob_stack


def test_release_freed_memory_is_safe_to_call():
    # On glibc it trims the heap; elsewhere it is a no-op. Either way it returns a bool.
    assert isinstance(memory_trim.release_freed_memory(), bool)
    assert isinstance(memory_trim.release_freed_memory(), bool)


def test_trim_runs_once_per_propagated_frame_and_leaves_results_unchanged(small_model, monkeypatch):
    frames = moving_blob_stack(5, size=64, seed=3)

    def run(trim) -> list:
        monkeypatch.setattr(memory_trim, "release_freed_memory", trim)
        tracker = Tracker(small_model, frames)
        tracker.add_points(0, 1, [(32.0, 16.0)], [1])
        return list(tracker.propagate())

    calls: list[int] = []

    def counting_trim() -> bool:
        calls.append(1)
        return True

    trimmed = run(counting_trim)
    assert len(calls) == len(trimmed) == 5  # one call per yielded frame, before its yield
    plain = run(lambda: False)
    for a, b in zip(trimmed, plain, strict=True):
        assert a.frame_index == b.frame_index
        np.testing.assert_array_equal(a.mask_logits, b.mask_logits)
        np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)


def test_trim_is_called_before_each_frame_is_handed_out(small_model, monkeypatch):
    # A caller that stops after the first frame has already had that frame's memory trimmed.
    calls: list[int] = []
    monkeypatch.setattr(memory_trim, "release_freed_memory", lambda: calls.append(1) or True)
    tracker = Tracker(small_model, moving_blob_stack(4, size=64, seed=3))
    tracker.add_points(0, 1, [(32.0, 16.0)], [1])
    gen = tracker.propagate()
    next(gen)
    assert len(calls) == 1
    gen.close()
