"""Memory-bank selection, bounded state (issue 4), hole filling (D4) and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.tracking import Tracker
from napari_sam2.tracking.feature_cache import FeatureCache
from napari_sam2.tracking.holes import fill_holes
from napari_sam2.tracking.memory_bank import needed_window, plan_memory, pointer_time_scale
from small_model import moving_blob_stack

# --- memory bank --------------------------------------------------------------------------


def test_plan_forward_with_two_conditioning_frames():
    """SEMANTICS 4.4 [E9]: frame 19 of 20, conditioning frames 0 and 10, all others tracked."""
    plan = plan_memory(19, 1, [0, 10], set(range(20)) - {0, 10}, 20, 7, 16)
    assert plan.spatial == (
        (0, 6, True),
        (10, 6, True),
        *((19 - k, k - 1, False) for k in range(6, 0, -1)),
    )
    distances = [d for _, d, _ in plan.pointers]
    assert distances == [19, 9] + [k for k in range(1, 16) if k != 9]
    assert len(plan.pointers) == 16


def test_plan_reverse_and_future_conditioning_frames():
    # Conditioning frames in the future are spatial memories but not pointers (SEMANTICS 4.3).
    plan = plan_memory(3, -1, [7, 1], {4, 5, 6, 2}, 8, 7, 16)
    assert [(t, r) for t, r, _ in plan.spatial] == [(7, 6), (1, 6), (6, 2), (5, 1), (4, 0)]
    assert [(t, d) for t, d, _ in plan.pointers] == [(7, 4), (4, 1), (5, 2), (6, 3)]
    # a conditioning frame on the frame itself has distance 0; outside frames are skipped
    plan = plan_memory(0, 1, [0], {1}, 8, 7, 16)
    assert [(t, r) for t, r, _ in plan.spatial] == [(0, 6)]
    assert [(t, d) for t, d, _ in plan.pointers] == [(0, 0)]
    with pytest.raises(ValueError, match="direction"):
        plan_memory(0, 0, [0], set(), 8, 7, 16)


def test_time_scale_and_window():
    assert pointer_time_scale(8, 16) == 7
    assert pointer_time_scale(100, 16) == 15
    assert pointer_time_scale(1, 16) == 1
    assert needed_window(7, 16) == 15


# --- bounded state ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_stack() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((40, 32, 32)) * 255).astype(np.uint8)


@pytest.mark.slow
def test_bounded_state_matches_unbounded(small_model, long_stack):
    bounded = Tracker(small_model, long_stack)
    unbounded = Tracker(small_model, long_stack, memory_window=0)
    window = bounded.memory_window
    assert window == 15
    for tracker in (bounded, unbounded):
        tracker.add_points(0, 1, [(16.0, 16.0)], [1])
        tracker.add_box(0, 2, (4, 4, 20, 24))
    counts = []
    sizes = []
    for a, b in zip(bounded.propagate(), unbounded.propagate(), strict=True):
        # a tracked frame reads at most 15 frames back: releasing the rest changes nothing
        np.testing.assert_array_equal(a.mask_logits, b.mask_logits)
        np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)
        counts.append(max(bounded.num_non_conditioning(o) for o in (1, 2)))
        sizes.append(bounded.stored_bytes())
    assert max(counts) <= window
    assert counts[-1] == window
    assert unbounded.num_non_conditioning(1) == 39
    assert sizes[-1] == sizes[window]  # constant once the window is full
    assert bounded.stored_bytes() < unbounded.stored_bytes() / 2

    # Reverse from the end keeps at most the window behind the head plus the window ahead.
    list(bounded.propagate(start_frame=39, reverse=True, max_frames=20))
    assert bounded.num_non_conditioning(1) <= 2 * window - 1
    # conditioning outputs are never released
    assert list(bounded._objects[1].conditioning) == [0]


# --- hole filling (D4) --------------------------------------------------------------------


def test_fill_holes_small_components_only():
    logits = torch.full((1, 1, 12, 12), 5.0, dtype=torch.float64)
    logits[..., 1:3, 1:3] = -2.0  # 4-pixel hole
    logits[..., 6, 6] = 0.0  # 1-pixel hole (0 counts as background)
    logits[..., 5, 5] = -1.0  # touches (6, 6) diagonally: one 2-pixel component
    logits[..., 8:11, 8:11] = -3.0  # 9-pixel hole: kept at max_area 8
    out = fill_holes(logits, 8)
    assert out.dtype == logits.dtype and out.shape == logits.shape
    assert torch.all(out[..., 1:3, 1:3] == 0.1)
    assert out[..., 6, 6] == 0.1 and out[..., 5, 5] == 0.1
    assert torch.all(out[..., 8:11, 8:11] == -3.0)
    changed = out != logits
    assert changed.sum() == 6
    assert torch.equal(fill_holes(logits, 0), logits)
    nine = torch.full((3, 3), 0.1, dtype=torch.float64)
    assert torch.equal(fill_holes(logits, 9)[0, 0, 8:11, 8:11], nine)


def test_fill_holes_diagonal_connectivity_and_absent_masks():
    # a diagonal line of 9 background pixels is one 8-connected component (not 9 holes)
    logits = torch.ones(1, 1, 12, 12)
    idx = torch.arange(1, 10)
    logits[0, 0, idx, idx] = -1.0
    assert torch.equal(fill_holes(logits, 8), logits)
    # an absent object (-1024 everywhere) is one large component: unchanged
    absent = torch.full((2, 1, 16, 16), -1024.0)
    assert torch.equal(fill_holes(absent, 8), absent)
    # each mask of a batch is labelled on its own
    batch = torch.ones(2, 1, 6, 6)
    batch[0, 0, 2, 2] = -1.0
    out = fill_holes(batch, 8)
    assert out[0, 0, 2, 2] == 0.1 and torch.equal(out[1], batch[1])


def test_tracker_fills_holes_where_the_reference_cuda_build_does(small_model):
    # With the small model's random weights, this stack and click give outputs with small holes
    # on every frame (checked below on the unfilled run), and on the prompted frame holes deep
    # enough to show in the upsampled mask its memory is encoded from.
    frames = moving_blob_stack(4, size=64, seed=2)
    plain = Tracker(small_model, frames)
    filled = Tracker(small_model, frames, fill_hole_area=8)
    results = [t.add_points(0, 1, [(10.0, 10.0)], [1]) for t in (plain, filled)]
    raw = plain.stored_output(1, 0).low_res
    got = filled.stored_output(1, 0).low_res
    assert not torch.equal(raw, got)
    torch.testing.assert_close(got, fill_holes(raw, 8), rtol=0, atol=0)
    assert (results[1].masks.sum() > results[0].masks.sum()) and results[1].masks[
        results[0].masks
    ].all()
    list(plain.propagate())
    list(filled.propagate())
    # the prompted frame's memory is encoded from the filled logits (SEMANTICS 1.8)
    assert not torch.equal(plain.stored_output(1, 0).memory, filled.stored_output(1, 0).memory)
    for f in (1, 2, 3):  # tracked frames are returned and stored filled
        unfilled = plain.stored_output(1, f).low_res
        assert not torch.equal(unfilled, fill_holes(unfilled, 8)), f"frame {f} has no holes"
        low = filled.stored_output(1, f).low_res
        assert (low > 0).any(), f"frame {f}: the object must be present to have holes"
        assert torch.equal(low, fill_holes(low, 8))


# --- feature cache ------------------------------------------------------------------------


def test_feature_cache_lru_under_budget():
    cache = FeatureCache(max_bytes=3 * 400)
    for i in range(3):
        cache.put(i, torch.zeros(100))  # 400 bytes each
    assert len(cache) == 3 and cache.nbytes == 1200
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(3, torch.zeros(100))
    assert 1 not in cache and 0 in cache and 3 in cache
    assert cache.get(1) is None and cache.misses == 1 and cache.hits == 1
    cache.put(4, torch.zeros(1000))  # larger than the budget: kept alone
    assert list(cache._entries) == [4]
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError):
        FeatureCache(-1)
    with pytest.raises(ValueError, match="max_frames"):
        FeatureCache(100, max_frames=-1)


def test_feature_cache_frame_limit_evicts_under_the_byte_budget():
    cache = FeatureCache(max_bytes=10**6, max_frames=2)
    for i in range(4):
        cache.put(i, torch.zeros(100))
    assert list(cache._entries) == [2, 3] and cache.nbytes == 800
    unlimited = FeatureCache(max_bytes=10**6, max_frames=None)
    for i in range(4):
        unlimited.put(i, torch.zeros(100))
    assert len(unlimited) == 4


def test_tracker_caches_at_most_16_frames_by_default(small_model, long_stack):
    """The default cache is 16 frames whatever their size (bfloat16, smaller models); the
    byte budget alone would let it grow over the whole stack."""
    stack = long_stack[:20]
    default = Tracker(small_model, stack)
    by_bytes = Tracker(small_model, stack, feature_cache_frames=None)
    for tracker in (default, by_bytes):
        tracker.add_points(0, 1, [(16.0, 16.0)], [1])
        for _ in tracker.propagate():
            pass
    assert len(default.features) == 16 and sorted(default.features._entries) == list(range(4, 20))
    assert len(by_bytes.features) == 20
    assert by_bytes.features.nbytes < by_bytes.features.max_bytes


@pytest.mark.parametrize("option", ["feature_cache_bytes", "feature_cache_frames"])
def test_negative_cache_limits_are_refused_by_name(small_model, long_stack, option):
    with pytest.raises(ValueError, match=f"{option} must be >= 0"):
        Tracker(small_model, long_stack, **{option: -1})
