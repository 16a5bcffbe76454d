"""Tracker API: errors, propagation ranges (D3), objects, prompts, results (small test model)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_sam2.tracking import FrameResult, Tracker
from small_model import moving_blob_stack

T, H, W = 8, 48, 40  # frames are resized to the small model's 256 x 256


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    frames = []
    for t in range(T):
        blob = np.exp(-((y - 20 - t) ** 2 + (x - 15 - t) ** 2) / 60.0)
        frames.append(200 * blob + 30 * rng.random((H, W)))
    return np.stack(frames).astype(np.uint8)


@pytest.fixture
def tracker(small_model, stack) -> Tracker:
    return Tracker(small_model, stack)


def _frames(results) -> list[int]:
    return [r.frame_index for r in results]


def test_result_layout_and_placeholders(tracker):
    r = tracker.add_points(3, 7, [(20.0, 15.5)], [1])
    assert isinstance(r, FrameResult)
    assert r.frame_index == 3 and r.object_ids == (7,)
    assert r.mask_logits.shape == (1, H, W) and r.mask_logits.dtype == np.float32
    assert r.object_score_logits.shape == (1,) and r.object_score_logits.dtype == np.float32
    assert r.has_output.tolist() == [True]
    assert r.masks.dtype == bool and r.masks.shape == (1, H, W)
    np.testing.assert_array_equal(r.mask(7), r.masks[0])
    with pytest.raises(KeyError, match="object 5"):
        r.mask(5)

    # Objects in order of first use (not sorted); others without output are placeholders.
    r2 = tracker.add_box(5, 2, (10, 5, 30, 25))
    assert r2.object_ids == (7, 2)
    assert r2.has_output.tolist() == [False, True]
    assert r2.object_score_logits[0] == -1024.0
    assert np.all(r2.mask_logits[0] == -1024.0)
    assert not r2.masks[0].any()
    # The other object's prompt output is shown on its own frame.
    r3 = tracker.clear_prompts(0)
    assert r3.has_output.tolist() == [False, False]


def test_masks_are_empty_where_absent():
    logits = np.ones((2, 3, 4), dtype=np.float32)
    r = FrameResult(0, (1, 2), logits, np.array([0.5, -0.5], np.float32), np.ones(2, bool))
    assert r.present.tolist() == [True, False]
    assert r.masks[0].all() and not r.masks[1].any()


def test_points_accumulate(tracker):
    tracker.debug_trace = []
    tracker.add_points(1, 1, [(20.0, 15.0)], [1])
    tracker.add_points(1, 1, [(5.0, 30.0)], [0])
    yx, labels = tracker._objects[1].points[1]
    np.testing.assert_array_equal(yx, [[20.0, 15.0], [5.0, 30.0]])
    assert labels.tolist() == [1, 0]
    first, second = tracker.debug_trace
    assert first["decision"]["multimask"] and not first["mask_prompt"]
    # two points plus the padding token, single mask, previous logits as mask prompt
    assert second["decision"]["num_sparse_tokens"] == 3
    assert not second["decision"]["multimask"] and second["mask_prompt"]
    # a box replaces the points; clicks after it are appended (labels 2, 3, 1)
    tracker.add_box(1, 1, (30, 20, 10, 5))  # corners in any order
    tracker.add_points(1, 1, [(12.0, 12.0)], [1])
    yx, labels = tracker._objects[1].points[1]
    np.testing.assert_array_equal(yx, [[10, 5], [30, 20], [12, 12]])
    assert labels.tolist() == [2, 3, 1]


def test_feature_cache_encodes_a_frame_once(small_model, stack, monkeypatch):
    tracker = Tracker(small_model, stack)
    calls = []
    original = small_model.encode_image

    def counting(images):
        calls.append(images.shape)
        return original(images)

    monkeypatch.setattr(small_model, "encode_image", counting)
    tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    tracker.add_points(2, 1, [(25.0, 18.0)], [1])
    tracker.add_points(2, 2, [(10.0, 10.0)], [1])
    assert len(calls) == 1
    list(tracker.propagate())
    assert len(calls) == 1 + 5  # frames 3..7 encoded once for both objects, 2 was cached
    first = len(calls)
    tracker.add_points(5, 1, [(22.0, 20.0)], [1])  # correction: features of frame 5 cached
    list(tracker.propagate())
    assert len(calls) == first  # re-propagation reuses every cached frame


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, [2, 3, 4, 5, 6, 7]),
        ({"reverse": True}, [4, 3, 2, 1, 0]),  # D3: the last conditioning frame
        ({"start_frame": 1, "max_frames": 3}, [1, 2, 3, 4]),
        ({"start_frame": 7, "reverse": True, "max_frames": 3}, [7, 6, 5, 4]),
        ({"start_frame": 0, "reverse": True}, []),
        ({"start_frame": 6, "max_frames": 0}, [6]),
        ({"start_frame": 6, "max_frames": 5}, [6, 7]),
        ({"reverse": True, "max_frames": 1}, [4, 3]),
    ],
)
def test_propagation_ranges(tracker, kwargs, expected):
    tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    tracker.add_points(4, 2, [(10.0, 30.0)], [1])
    results = list(tracker.propagate(**kwargs))
    assert _frames(results) == expected
    for r in results:
        assert r.object_ids == (1, 2)
        assert r.has_output.all()


def test_conditioning_frames_are_reused_and_others_tracked(tracker):
    r0 = tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    results = {r.frame_index: r for r in tracker.propagate()}
    # the prompted frame is yielded again unchanged
    np.testing.assert_array_equal(results[2].mask_logits, r0.mask_logits)
    obj = tracker._objects[1]
    assert list(obj.conditioning) == [2]
    assert sorted(obj.non_conditioning) == [3, 4, 5, 6, 7]
    assert obj.tracked == {f: 1 for f in range(2, 8)}
    assert all(out.memory.dtype == torch.bfloat16 for out in obj.non_conditioning.values())


def test_correction_becomes_conditioning_frame(tracker):
    """D1: a click on a tracked frame is kept as a conditioning frame."""
    tracker.debug_trace = []
    tracker.add_points(0, 1, [(20.0, 15.0)], [1])
    list(tracker.propagate())
    before = tracker.stored_output(1, 5)
    corrected = tracker.add_points(5, 1, [(25.0, 20.0)], [1])
    entry = tracker.debug_trace[-1]
    assert entry["kind"] == "prompt" and entry["spatial"] is not None  # computed with memory
    assert entry["mask_prompt"]  # previous logits fed back
    rerun = {r.frame_index: r for r in tracker.propagate()}
    np.testing.assert_array_equal(rerun[5].mask_logits, corrected.mask_logits)
    assert list(tracker._objects[1].conditioning) == [0, 5]
    assert 5 not in tracker._objects[1].non_conditioning
    assert not torch.equal(tracker.stored_output(1, 5).low_res, before.low_res)


def test_objects_are_independent_and_removable(small_model, stack):
    solo = Tracker(small_model, stack)
    solo.add_points(1, 1, [(20.0, 15.0)], [1])
    expected = [r.mask_logits[0] for r in solo.propagate()]

    pair = Tracker(small_model, stack)
    pair.add_points(1, 1, [(20.0, 15.0)], [1])
    pair.add_box(3, 2, (5, 5, 30, 30))
    got = [r.mask_logits[0] for r in pair.propagate()]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)

    pair.remove_object(2)
    assert pair.object_ids == (1,)
    again = [r for r in pair.propagate()]
    assert all(r.object_ids == (1,) for r in again)
    for r, b in zip(again, expected, strict=True):
        np.testing.assert_array_equal(r.mask_logits[0], b)
    with pytest.raises(KeyError, match="unknown object id 2"):
        pair.remove_object(2)


def test_reset_forgets_objects_but_keeps_features(tracker):
    first = tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    tracker.reset()
    assert tracker.object_ids == ()
    with pytest.raises(RuntimeError, match="nothing to propagate"):
        tracker.propagate()
    hits = tracker.features.hits
    again = tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    assert tracker.features.hits == hits + 1
    np.testing.assert_array_equal(again.mask_logits, first.mask_logits)


def test_clear_prompts(tracker):
    tracker.debug_trace = []
    tracker.add_points(2, 1, [(20.0, 15.0)], [1])
    tracker.add_points(2, 2, [(10.0, 30.0)], [1])
    # clearing before any propagation forgets the pending prompt of that object only
    r = tracker.clear_prompts(2, object_id=2)
    assert r.has_output.tolist() == [True, False]
    with pytest.raises(RuntimeError, match=r"object\(s\) \[2\] have no prompt"):
        tracker.propagate()
    tracker.remove_object(2)
    list(tracker.propagate())
    # a conditioning output becomes a tracked one and the frame counts as untracked again
    tracker.clear_prompts(2)
    obj = tracker._objects[1]
    assert 2 not in obj.conditioning and 2 in obj.non_conditioning and 2 not in obj.tracked
    with pytest.raises(RuntimeError, match="no prompt"):
        tracker.propagate()
    tracker.add_points(2, 1, [(21.0, 16.0)], [1])
    entry = tracker.debug_trace[-1]
    assert entry["spatial"] is None  # initial again: no memory attention
    assert entry["mask_prompt"]  # but the old output is still fed back (SEMANTICS 2.4)
    assert _frames(tracker.propagate()) == [2, 3, 4, 5, 6, 7]
    with pytest.raises(KeyError, match="unknown object id 9"):
        tracker.clear_prompts(2, object_id=9)


def test_mask_prompt(tracker):
    mask = np.zeros((H, W), bool)
    mask[10:30, 8:20] = True
    r = tracker.add_mask(4, 3, mask)
    assert r.object_score_logits[0] == pytest.approx(10.0)
    assert r.present.all()
    # inside the mask the logits are +10 well away from its border
    assert r.mask_logits[0, 15:25, 11:17].min() > 5
    assert r.mask_logits[0, 40:, 30:].max() < -5
    # a mask replaces the points of that frame, points replace the mask
    tracker.add_points(4, 3, [(20.0, 15.0)], [1])
    assert 4 not in tracker._objects[3].mask_prompts
    tracker.add_mask(4, 3, mask)
    assert 4 not in tracker._objects[3].points


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: t.add_points(0, 1, [(50.0, 10.0)], [1]), ValueError, "outside"),
        (lambda t: t.add_points(0, 1, [(10.0, -3.0)], [1]), ValueError, "outside"),
        (lambda t: t.add_points(8, 1, [(10.0, 10.0)], [1]), IndexError, "out of range"),
        (lambda t: t.add_points(-1, 1, [(10.0, 10.0)], [1]), IndexError, "out of range"),
        (lambda t: t.add_points(0, 1, [(10.0, 10.0)], [2]), ValueError, "labels must be 1"),
        (lambda t: t.add_points(0, 1, [(10.0, 10.0)], [1, 0]), ValueError, "labels must have"),
        (lambda t: t.add_points(0, 1, np.zeros((0, 2)), []), ValueError, r"shape \(N, 2\)"),
        (lambda t: t.add_points(0, 1, [(np.nan, 1.0)], [1]), ValueError, "NaN"),
        (lambda t: t.add_points(0, 1.5, [(1.0, 1.0)], [1]), TypeError, "object id"),
        (lambda t: t.add_box(0, 1, (5, 5, 5, 20)), ValueError, "zero area"),
        (lambda t: t.add_box(0, 1, (5, 5, 60, 20)), ValueError, "outside"),
        (lambda t: t.add_box(0, 1, (5, 5, 20)), ValueError, "4 finite numbers"),
        (lambda t: t.add_mask(0, 1, np.zeros((H, W), bool)), ValueError, "empty"),
        (lambda t: t.add_mask(0, 1, np.ones((W, H), bool)), ValueError, "shape"),
        (lambda t: t.propagate(), RuntimeError, "nothing to propagate"),
        (lambda t: t.remove_object(3), KeyError, "unknown object id 3"),
        (lambda t: t.stored_output(3, 0), KeyError, "unknown object id 3"),
    ],
)
def test_errors(tracker, call, error, match):
    with pytest.raises(error, match=match):
        call(tracker)
    assert tracker.object_ids == ()  # a rejected prompt creates no object


def test_propagate_argument_errors(tracker):
    tracker.add_points(0, 1, [(10.0, 10.0)], [1])
    with pytest.raises(IndexError, match="out of range"):
        tracker.propagate(start_frame=T)
    with pytest.raises(ValueError, match="max_frames"):
        tracker.propagate(max_frames=-1)


def test_constructor_errors(small_model, stack):
    with pytest.raises(ValueError, match="fill_hole_area"):
        Tracker(small_model, stack, fill_hole_area=-1)
    with pytest.raises(ValueError, match="differs from the model"):
        Tracker(small_model, stack, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown dtype"):
        Tracker(small_model, stack, dtype="float17")


def _autocast_matches_float32(model, device, dtype, agreement: float = 0.99) -> None:
    # grey uint8 blob, repeated to RGB: with the small model's random weights the prompted frame
    # is all foreground and frame 1 a partial mask, so the comparison is not all-or-nothing
    frames = moving_blob_stack(3)
    ref = Tracker(model, frames)
    # a tracker on another device moves its model, so that one needs a model of its own
    fast_model = model if device is None else copy.deepcopy(model)
    fast = Tracker(fast_model, frames, device=device, dtype=dtype)
    ref.add_points(0, 1, [(48.25, 24.5)], [1])
    b = fast.add_points(0, 1, [(48.25, 24.5)], [1])
    assert b.mask_logits.dtype == np.float32
    assert fast.stored_output(1, 0).low_res.dtype == torch.float32  # stored in float32
    expected = list(ref.propagate())  # the prompted frame comes first, as it was computed
    got = list(fast.propagate())
    assert [r.frame_index for r in got] == list(range(len(frames)))
    assert any(0.05 < r.masks.mean() < 0.95 for r in expected)
    for x, y in zip(expected, got, strict=True):
        assert (x.masks == y.masks).mean() > agreement, x.frame_index
        # the small model's object-score head is scaled up, so half-precision errors in the
        # scores are larger than with trained weights
        assert abs(x.object_score_logits[0] - y.object_score_logits[0]) < 0.15, x.frame_index
    assert fast.stored_output(1, 1).memory.dtype == torch.bfloat16


def test_autocast_bfloat16_on_cpu(small_model):
    # oneDNN's bfloat16 kernels round differently per CPU: the partial mask of frame 1 agrees
    # on over 99 % of pixels with AMX, 99.66 % with oneDNN held to AVX512_CORE, and 98.97 %
    # (IoU 0.945, 1,620 against 1,715 pixels) with AVX512-BF16 without AMX (Xeon family 6
    # model 207); presence agrees on every frame
    _autocast_matches_float32(small_model, None, torch.bfloat16, agreement=0.98)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cuda(small_config, small_checkpoint, dtype):
    from napari_sam2.model import build_sam2

    model = build_sam2(small_config, checkpoint=small_checkpoint)
    # bfloat16 on an H200 gave 98.96 % of frame 1's pixels the same as float32 on the CPU (the
    # random weights amplify rounding; float16 passed at 0.99); on the CPU bfloat16 passes 0.99
    agreement = 0.98 if dtype == torch.bfloat16 else 0.99
    _autocast_matches_float32(model, "cuda", dtype, agreement)


def test_a_model_moved_under_a_tracker_is_a_clear_error(small_model):
    model = copy.deepcopy(small_model)
    tracker = Tracker(model, moving_blob_stack(2))
    model.to("meta")  # as another Tracker(model, ..., device="cuda") would move it
    with pytest.raises(RuntimeError, match="runs on cpu, but its model has since been moved"):
        tracker.add_points(0, 1, [(10.0, 10.0)], [1])


def test_points_on_the_frame_edges_are_inside(tracker):
    r = tracker.add_points(0, 1, [(-0.5, -0.5), (H - 0.5, W - 0.5)], [1, 0])
    assert r.has_output.all()


def test_frames_as_frame_source(small_model, stack):
    from napari_sam2.tracking import FrameSource

    source = FrameSource(stack, 256, contrast_limits=(0, 255))
    tracker = Tracker(small_model, source)
    assert tracker.frames is source and tracker.num_frames == T
    assert (tracker.height, tracker.width) == (H, W)
    with pytest.raises(ValueError, match="set contrast_limits on the FrameSource"):
        Tracker(small_model, source, contrast_limits=(0, 1))
    with pytest.raises(ValueError, match="image_size=256"):
        Tracker(small_model, FrameSource(stack, 512))
