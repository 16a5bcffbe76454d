"""segment_everything: the automatic mask generator's grid, batching, filters and NMS, on the
tests' small random-weight network (the masks mean nothing; the semantics are checked)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.tracking import segment_everything
from napari_sam2.tracking.everything import _boxes, _nms, point_grid
from small_model import moving_blob_stack

KEYS = {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords"}


@pytest.fixture(scope="module")
def image():
    return moving_blob_stack(frames=1, size=96)[0]


def everything(model, image, **kwargs):
    options = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return segment_everything(model, image, **{**options, **kwargs})


def test_grid_is_the_cell_centres():
    grid = point_grid(2, 100, 60)
    np.testing.assert_allclose(grid, [[15, 25], [45, 25], [15, 75], [45, 75]])
    with pytest.raises(ValueError, match="points_per_side"):
        point_grid(0, 10, 10)


def test_without_filters_every_point_gives_three_masks(small_model, image):
    records = everything(small_model, image, box_nms_thresh=1.0)
    assert len(records) == 3 * 6 * 6
    prompts = {tuple(r["point_coords"][0]) for r in records}
    assert prompts == {tuple(p) for p in point_grid(6, 96, 96)}
    for r in records:
        assert KEYS <= set(r) and r["crop_box"] == [0, 0, 96, 96]
        seg = r["segmentation"]
        assert seg.dtype == bool and seg.shape == (96, 96) and r["area"] == int(seg.sum())
        if r["area"]:
            ys, xs = np.nonzero(seg)
            assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_batches_do_not_change_the_result(small_model, image):
    one = everything(small_model, image, points_per_batch=64)
    other = everything(small_model, image, points_per_batch=5)
    assert [r["point_coords"] for r in one] == [r["point_coords"] for r in other]
    for a, b in zip(one, other, strict=True):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-5)


def test_thresholds_filter_and_nms_thins_overlaps(small_model, image):
    everything_kept = everything(small_model, image, box_nms_thresh=1.0)
    ious = sorted(r["predicted_iou"] for r in everything_kept)
    stabilities = sorted(r["stability_score"] for r in everything_kept)
    iou_cut, stability_cut = ious[len(ious) // 2], stabilities[len(stabilities) // 2]
    by_iou = everything(small_model, image, pred_iou_thresh=iou_cut, box_nms_thresh=1.0)
    assert len(by_iou) == sum(i > iou_cut for i in ious)
    by_stability = everything(
        small_model, image, stability_score_thresh=stability_cut, box_nms_thresh=1.0
    )
    assert len(by_stability) == sum(s >= stability_cut for s in stabilities)

    thinned = everything(small_model, image, box_nms_thresh=0.7)
    assert 0 < len(thinned) < len(everything_kept)
    boxes = _boxes(torch.from_numpy(np.stack([r["segmentation"] for r in thinned])))
    assert _nms(boxes, torch.tensor([r["predicted_iou"] for r in thinned]), 0.7) == list(
        range(len(thinned))
    )  # nothing left to suppress, and records come highest predicted IoU first
    assert [r["predicted_iou"] for r in thinned] == sorted(
        (r["predicted_iou"] for r in thinned), reverse=True
    )


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    assert _nms(boxes, torch.tensor([0.5, 0.9, 0.1]), 0.7) == [1, 2]
    assert _nms(boxes, torch.tensor([0.5, 0.9, 0.1]), 0.9) == [1, 0, 2]


def test_small_regions_and_holes_are_removed(small_model, image):
    records = everything(small_model, image, min_mask_region_area=20, box_nms_thresh=1.0)
    from scipy import ndimage

    for r in records:
        seg = r["segmentation"]
        labels, count = ndimage.label(seg)
        assert count == 0 or np.bincount(labels.ravel())[1:].min() >= 20
        holes, n_holes = ndimage.label(~seg)
        assert n_holes == 0 or np.bincount(holes.ravel())[1:].min() >= 20


def test_bad_images_are_refused(small_model):
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        segment_everything(small_model, np.zeros((2, 3, 4, 5)))


def test_tracker_segments_a_frame_on_its_cached_features(small_model):
    from napari_sam2.tracking import Tracker

    stack = moving_blob_stack(frames=3, size=96)
    alone = everything(small_model, stack[1], contrast_limits=(0, 255))
    with Tracker(small_model, stack, contrast_limits=(0, 255)) as tracker:
        calls = []
        encode = small_model.encode_image
        small_model.encode_image = lambda x: calls.append(1) or encode(x)
        try:
            first = tracker.segment_everything(
                1, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0
            )
            again = tracker.segment_everything(
                1, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0
            )
        finally:
            del small_model.encode_image
    assert len(calls) == 1  # the second call used the cached features
    assert [r["point_coords"] for r in first] == [r["point_coords"] for r in alone]
    for a, b, c in zip(first, alone, again, strict=True):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        np.testing.assert_array_equal(a["segmentation"], c["segmentation"])
