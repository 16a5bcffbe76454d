"""What ``napari_sam2.track`` and the Tracker take: channel stacks given the way users have
them, plain lists, a single prompt record; and clear errors where the input cannot be used."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.api import track
from napari_sam2.tracking import FrameSource, Tracker
from napari_sam2.tracking.prompts_io import PromptFileError, PromptRecord
from small_model import moving_blob_stack


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return moving_blob_stack(frames=3, size=48)


def _points(yx=(24.0, 12.0), labels=(1,)) -> PromptRecord:
    return PromptRecord(0, 1, "points", (np.array([yx], float), np.array(labels)))


def _track(small_model, data, prompts, **options):
    return track(data, prompts, model=small_model, device="cpu", **options)


@pytest.fixture(scope="module")
def grey_labels(small_model, stack) -> np.ndarray:
    labels = _track(small_model, stack, [_points()]).labels
    assert labels.any()  # the comparisons below are not between empty label maps
    return labels


def test_a_last_axis_of_one_channel_is_a_grey_stack(small_model, stack, grey_labels):
    got = _track(small_model, stack[..., None], [_points()])
    np.testing.assert_array_equal(got.labels, grey_labels)


def test_two_channels_are_tracked_when_the_user_chooses_them(small_model, stack):
    two = np.stack([stack, stack // 2], axis=-1)  # (T, H, W, 2): two fluorescence channels
    got = _track(small_model, two, [_points()], channels=[0, 1])
    explicit = _track(small_model, two, [_points()], channel_axis=3, channels=[0, 1])
    assert got.labels.shape == stack.shape
    np.testing.assert_array_equal(got.labels, explicit.labels)


def test_two_channels_without_a_choice_ask_for_channels(small_model, stack):
    two = np.stack([stack, stack // 2], axis=-1)
    with pytest.raises(ValueError, match=r"2 channels .*channels="):
        _track(small_model, two, [_points()])


def test_the_tracker_takes_the_channels_too(small_model, stack):
    two = np.stack([stack // 2, stack], axis=-1)
    by_tracker = Tracker(small_model, two, channels=[1]).add_points(0, 1, [(24.0, 12.0)], [1])
    grey = Tracker(small_model, stack).add_points(0, 1, [(24.0, 12.0)], [1])
    np.testing.assert_array_equal(by_tracker.mask_logits, grey.mask_logits)
    source = FrameSource(two, small_model.config.image_size, channels=[1])
    with pytest.raises(ValueError, match="set channels on the FrameSource"):
        Tracker(small_model, source, channels=[0])


def test_nested_lists_and_one_prompt_record_are_taken(small_model, stack):
    # lists of ints become int64, whose limits would come from percentiles: fix them
    limits = (0, 255)
    got = _track(small_model, stack.tolist(), _points(), contrast_limits=limits)
    ref = _track(small_model, stack, [_points()], contrast_limits=limits)
    assert ref.labels.any()
    np.testing.assert_array_equal(got.labels, ref.labels)


def test_prompts_that_are_neither_a_file_nor_records_are_refused(small_model, stack):
    with pytest.raises(TypeError, match="list of PromptRecord"):
        _track(small_model, stack, 42)


def test_prompt_records_made_of_lists_get_the_prompt_errors(small_model, stack):
    bad_label = PromptRecord(0, 1, "points", ([[24.0, 12.0]], [2]))
    with pytest.raises(PromptFileError, match=r"labels must be 1 or 0, got \[2\]"):
        _track(small_model, stack, [bad_label])
    wrong_shape = PromptRecord(0, 1, "mask", np.ones((40, 48), bool).tolist())
    with pytest.raises(PromptFileError, match=r"mask of shape \(40, 48\) does not match"):
        _track(small_model, stack, [wrong_shape])
    empty = PromptRecord(0, 1, "mask", np.zeros((48, 48), bool).tolist())
    with pytest.raises(PromptFileError, match="the mask is empty"):
        _track(small_model, stack, [empty])
