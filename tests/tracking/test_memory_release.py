"""The tracker hands freed heap pages back between frames (memory_trim.HeapTrimmer): every
few frames under bfloat16 autocast, after each in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.tracking import Tracker, memory_trim
from small_model import moving_blob_stack


def test_release_freed_memory_is_safe_to_call():
    # On glibc it trims the heap; elsewhere it is a no-op. Either way it returns a bool.
    assert isinstance(memory_trim.release_freed_memory(), bool)
    assert isinstance(memory_trim.release_freed_memory(), bool)


def count_trims(monkeypatch) -> list[int]:
    trims: list[int] = []
    monkeypatch.setattr(memory_trim, "release_freed_memory", lambda: trims.append(1) or True)
    return trims


def test_trimmer_trims_after_every_nth_frame(monkeypatch):
    trims = count_trims(monkeypatch)
    trimmer = memory_trim.HeapTrimmer(every_frames=3)
    done = [trimmer.after_frame() for _ in range(7)]
    assert done == [False, False, True, False, False, True, False]
    assert len(trims) == 2
    every = memory_trim.HeapTrimmer(every_frames=1)
    assert [every.after_frame() for _ in range(3)] == [True, True, True]


def test_trimmer_refuses_a_period_below_one():
    with pytest.raises(ValueError, match="every_frames must be >= 1"):
        memory_trim.HeapTrimmer(every_frames=0)


def test_bfloat16_tracker_trims_every_few_frames_float32_after_each(small_model, monkeypatch):
    frames = moving_blob_stack(5, size=64, seed=3)
    monkeypatch.setattr(memory_trim, "TRIM_EVERY_FRAMES", 2)
    trims = count_trims(monkeypatch)

    def run(dtype) -> list:
        trims.clear()
        tracker = Tracker(small_model, frames, dtype=dtype)
        tracker.add_points(0, 1, [(32.0, 16.0)], [1])
        return list(tracker.propagate())

    assert len(run(torch.bfloat16)) == 5
    assert len(trims) == 2  # after frames 2 and 4
    assert len(run(None)) == 5
    assert len(trims) == 5


def test_results_do_not_depend_on_when_the_heap_is_trimmed(small_model, monkeypatch):
    frames = moving_blob_stack(5, size=64, seed=3)

    def run(every_frames: int) -> list:
        monkeypatch.setattr(memory_trim, "TRIM_EVERY_FRAMES", every_frames)
        tracker = Tracker(small_model, frames, dtype=torch.bfloat16)
        tracker.add_points(0, 1, [(32.0, 16.0)], [1])
        return list(tracker.propagate())

    every_other, each = run(2), run(1)
    for a, b in zip(every_other, each, strict=True):
        assert a.frame_index == b.frame_index
        np.testing.assert_array_equal(a.mask_logits, b.mask_logits)
        np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)


def test_trim_comes_before_the_frame_is_handed_out(small_model, monkeypatch):
    # A caller that stops after the trimming frame has already had its memory trimmed.
    monkeypatch.setattr(memory_trim, "TRIM_EVERY_FRAMES", 2)
    trims = count_trims(monkeypatch)
    tracker = Tracker(small_model, moving_blob_stack(4, size=64, seed=3), dtype=torch.bfloat16)
    tracker.add_points(0, 1, [(32.0, 16.0)], [1])
    gen = tracker.propagate()
    next(gen)
    assert trims == []
    next(gen)
    assert trims == [1]
    gen.close()
