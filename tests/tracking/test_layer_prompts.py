"""Prompt layers' data to per-(frame, object) prompts, without napari or Qt."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.tracking.layer_prompts import (
    AxisPlan,
    PointPrompt,
    PromptSet,
    box_prompts,
    collect_prompts,
    diff_prompts,
    mask_prompts,
    point_prompts,
)


def test_plan_for_time_lapse_and_extra_axes():
    plan = AxisPlan.from_shape((5, 32, 40), frame_axis=0)
    assert (plan.frame_axis, plan.y_axis, plan.x_axis, plan.num_frames) == (0, 1, 2, 5)
    tczyx = AxisPlan.from_shape((4, 2, 6, 32, 40), frame_axis=2, channel_axis=1, fixed={0: 3})
    assert (tczyx.y_axis, tczyx.x_axis, tczyx.num_frames) == (3, 4, 6)
    assert tczyx.labels_shape((4, 2, 6, 32, 40)) == (4, 1, 6, 32, 40)
    rgb = AxisPlan.from_shape((5, 32, 40, 3), frame_axis=0, rgb=True)
    assert rgb.layer_ndim == 3 and rgb.labels_shape((5, 32, 40, 3)) == (5, 32, 40)


def test_plan_errors_say_what_to_choose():
    with pytest.raises(ValueError, match=r"fixed index for axes \[1\]"):
        AxisPlan.from_shape((4, 6, 32, 40), frame_axis=0)
    with pytest.raises(ValueError, match="channel axis cannot be"):
        AxisPlan.from_shape((4, 2, 32, 40), frame_axis=1, channel_axis=1)
    with pytest.raises(ValueError, match="out of range"):
        AxisPlan.from_shape((4, 6, 32, 40), frame_axis=0, fixed={1: 6})
    with pytest.raises(ValueError, match="RGB image keeps its colours in the last axis"):
        AxisPlan.from_shape((5, 32, 40, 3), frame_axis=0, channel_axis=1, rgb=True)


def test_labels_view_writes_into_the_label_array():
    # (T, Z, Y, X) propagated along Z at time 2: the view is (Z, Y, X) of that time point.
    plan = AxisPlan.from_shape((3, 5, 8, 9), frame_axis=1, fixed={0: 2})
    labels = np.zeros(plan.labels_shape((3, 5, 8, 9)), np.uint16)
    view = plan.labels_view(labels)
    assert view.shape == (5, 8, 9)
    view[4, 1, 2] = 7
    assert labels[2, 4, 1, 2] == 7 and labels.sum() == 7
    # Frame axis after Y/X is moved to the front.
    plan = AxisPlan.from_shape((8, 9, 5), frame_axis=2)
    labels = np.zeros((8, 9, 5), np.uint8)
    plan.labels_view(labels)[3, 1, 2] = 1
    assert labels[1, 2, 3] == 1


def test_points_grouped_by_frame_and_object_in_click_order():
    plan = AxisPlan.from_shape((4, 32, 32), frame_axis=0)
    coords = [[1, 10.4, 11], [1, 12, 13], [2, 5, 6], [1.2, 20, 21], [7, 1, 1], [-1, 1, 1]]
    out = point_prompts(coords, [1, 2, 1, 1, 1, 1], [True, True, False, False, True, True], plan)
    assert sorted(out) == [(1, 1), (1, 2), (2, 1)]  # frames 7 and -1 do not exist
    np.testing.assert_allclose(out[(1, 1)].points, [[10.4, 11], [20, 21]])
    np.testing.assert_array_equal(out[(1, 1)].labels, [1, 0])
    np.testing.assert_array_equal(out[(2, 1)].labels, [0])


def test_points_off_the_fixed_slice_are_ignored_and_channel_does_not_matter():
    plan = AxisPlan.from_shape((4, 3, 6, 32, 32), frame_axis=0, channel_axis=1, fixed={2: 4})
    coords = [[0, 2, 4, 3, 3], [0, 0, 3, 5, 5], [1, 1, 4.2, 7, 8]]
    out = point_prompts(coords, None, None, plan, default_object=5)
    assert sorted(out) == [(0, 5), (1, 5)]
    np.testing.assert_allclose(out[(1, 5)].points, [[7, 8]])


def test_bad_object_ids_are_rejected():
    plan = AxisPlan.from_shape((4, 32, 32), frame_axis=0)
    with pytest.raises(ValueError, match="0 is the background"):
        point_prompts([[0, 1, 1]], [0], None, plan)
    with pytest.raises(ValueError, match="expected 1 object ids"):
        point_prompts([[0, 1, 1]], [1, 2], None, plan)


def test_rectangles_become_boxes_and_other_shapes_are_skipped():
    plan = AxisPlan.from_shape((4, 32, 32), frame_axis=0)
    rect = np.array([[2, 10, 4], [2, 10, 20], [2, 3, 20], [2, 3, 4]], float)
    poly = np.array([[1, 1, 1], [1, 5, 5], [1, 1, 5]], float)
    out = box_prompts([rect, poly], ["rectangle", "polygon"], [3, 1], plan)
    assert out == {(2, 3): (3.0, 4.0, 10.0, 20.0)}


def test_labels_painted_frames_become_masks():
    plan = AxisPlan.from_shape((3, 2, 8, 8), frame_axis=0, channel_axis=1)
    labels = np.zeros((3, 1, 8, 8), np.uint8)
    labels[1, 0, 2:4, 2:5] = 2
    labels[1, 0, 6, 6] = 1
    out = mask_prompts(labels, plan)
    assert sorted(out) == [(1, 1), (1, 2)]
    assert out[(1, 2)].sum() == 6 and out[(1, 2)][3, 4]


def test_diff_sends_only_appended_clicks_and_clears_on_other_changes():
    a = PointPrompt(np.array([[1.0, 2.0]]), np.array([1]))
    ab = PointPrompt(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0]))
    moved = PointPrompt(np.array([[1.5, 2.0]]), np.array([1]))
    old = PromptSet(points={(0, 1): a, (2, 1): a})
    new = PromptSet(points={(0, 1): ab, (3, 2): a}, boxes={(2, 1): (0, 0, 5, 5)})
    changes = {(c.frame, c.object_id): c for c in diff_prompts(old, new)}
    assert set(changes) == {(0, 1), (2, 1), (3, 2)}
    assert not changes[(0, 1)].clear
    np.testing.assert_array_equal(changes[(0, 1)].points.points, [[3.0, 4.0]])
    # Points removed and a box added on frame 2: cleared, box sent, no clicks left.
    assert changes[(2, 1)].clear and changes[(2, 1)].box == (0, 0, 5, 5)
    assert changes[(2, 1)].points is None
    assert not changes[(3, 2)].clear
    moved_change = diff_prompts(PromptSet(points={(0, 1): a}), PromptSet(points={(0, 1): moved}))
    assert len(moved_change) == 1 and moved_change[0].clear
    removed = diff_prompts(PromptSet(points={(0, 1): a}), PromptSet())
    assert removed[0].clear and removed[0].empty
    assert diff_prompts(new, new) == []


def test_collect_prompts_combines_layers():
    plan = AxisPlan.from_shape((3, 8, 8), frame_axis=0)
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[2, 1:3, 1:3] = 4
    rect = np.array([[0, 1, 1], [0, 1, 6], [0, 6, 6], [0, 6, 1]], float)
    prompts = collect_prompts(
        plan,
        points=([[1, 2, 2]], [2], [True]),
        shapes=([rect], ["rectangle"], None),
        labels=labels,
        default_object=3,
    )
    assert prompts.keys() == {(1, 2), (0, 3), (2, 4)}
    assert prompts.object_ids() == {2, 3, 4} and prompts.frames() == {0, 1, 2}
