"""Bad input to the Tracker is refused early and clearly, and nothing the user has is lost.

Object ids are labels 1..65535, non-finite prompts name the prompt, a missing device is a clear
error before anything moves, and one propagation runs at a time: a second one, or a change of
prompts while one is open, raises instead of sharing the memory bank silently.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from napari_sam2.tracking import Tracker
from napari_sam2.tracking import device as device_module
from napari_sam2.tracking.device import resolve_device
from napari_sam2.tracking.prompt_checks import MAX_OBJECT_ID
from small_model import moving_blob_stack

RUNNING = "a propagation is running"


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return moving_blob_stack(frames=5, size=48)


@pytest.fixture
def tracker(small_model, stack) -> Tracker:
    return Tracker(small_model, stack)


@pytest.fixture
def prompted(tracker) -> Tracker:
    tracker.add_points(0, 1, [(24.0, 12.0)], [1])
    return tracker


def _disc_mask() -> np.ndarray:
    mask = np.zeros((48, 48), bool)
    mask[20:28, 10:18] = True
    return mask


# --- object ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("object_id", [0, -1, -(2**31), MAX_OBJECT_ID + 1, 2**40])
def test_object_ids_outside_the_label_range_are_refused(tracker, object_id) -> None:
    calls = [
        lambda: tracker.add_points(0, object_id, [(24.0, 12.0)], [1]),
        lambda: tracker.add_box(0, object_id, (20, 8, 28, 16)),
        lambda: tracker.add_mask(0, object_id, _disc_mask()),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"object id {object_id} .*1 to {MAX_OBJECT_ID}"):
            call()
    assert tracker.object_ids == ()  # nothing half added


def test_object_id_zero_says_it_is_the_background(tracker) -> None:
    with pytest.raises(ValueError, match="background"):
        tracker.add_points(0, 0, [(24.0, 12.0)], [1])


@pytest.mark.parametrize("object_id", [1.0, 2.5, "3", True, None])
def test_object_ids_that_are_not_integers_are_refused(tracker, object_id) -> None:
    with pytest.raises(TypeError, match="object id must be an integer"):
        tracker.add_points(0, object_id, [(24.0, 12.0)], [1])


def test_largest_label_and_numpy_integers_are_object_ids(tracker) -> None:
    tracker.add_points(0, MAX_OBJECT_ID, [(24.0, 12.0)], [1])
    tracker.add_points(1, np.uint16(7), [(24.0, 14.0)], [1])
    assert tracker.object_ids == (MAX_OBJECT_ID, 7)
    assert all(isinstance(k, int) for k in tracker.object_ids)


# --- non-finite prompts --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_are_refused_naming_the_prompt(tracker, bad) -> None:
    with pytest.raises(ValueError, match=r"object 4 on frame 2.*NaN or infinite"):
        tracker.add_points(2, 4, [(10.0, 10.0), (bad, 3.0)], [1, 1])
    assert tracker.object_ids == ()


def test_non_finite_box_is_refused_naming_the_prompt(tracker) -> None:
    with pytest.raises(ValueError, match=r"box of object 3 on frame 1 must be 4 finite"):
        tracker.add_box(1, 3, (np.nan, 0, 10, 10))


def test_points_that_are_not_numbers_are_a_value_error_naming_the_prompt(tracker) -> None:
    with pytest.raises(ValueError, match=r"points of object 2 on frame 0 must be numbers"):
        tracker.add_points(0, 2, [("a", "b")], [1])


# --- devices -------------------------------------------------------------------------------


def test_cuda_without_cuda_is_a_clear_error(small_model, stack, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(ValueError, match="no CUDA GPU is available to torch here"):
            resolve_device(name)
    model = copy.deepcopy(small_model)  # the shared model must not move, whatever happens
    with pytest.raises(ValueError, match="use device='cpu' or 'auto'"):
        Tracker(model, stack, device="cuda")
    assert next(model.parameters()).device.type == "cpu"


def test_mps_without_mps_is_a_clear_error(small_model, stack, monkeypatch) -> None:
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="no Apple MPS GPU is available to torch here"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="use device='cpu' or 'auto'"):
        Tracker(copy.deepcopy(small_model), stack, device="mps")


def test_unknown_device_names_are_refused(small_model, stack) -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        Tracker(small_model, stack, device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice of 'auto'")
def test_auto_and_cpu_devices_work(small_model, stack) -> None:
    assert Tracker(small_model, stack, device="auto").device == torch.device("cpu")
    assert Tracker(small_model, stack, device=torch.device("cpu")).device.type == "cpu"


# --- one propagation at a time -------------------------------------------------------------


def test_a_second_propagation_while_one_runs_is_refused(prompted) -> None:
    first = prompted.propagate()
    assert next(first).frame_index == 0
    with pytest.raises(RuntimeError, match=RUNNING):
        prompted.propagate()
    with pytest.raises(RuntimeError, match=RUNNING):
        prompted.propagate(reverse=True)
    # The running one is unharmed and finishes; then the guard is released.
    assert [r.frame_index for r in first] == [1, 2, 3, 4]
    assert [r.frame_index for r in prompted.propagate(start_frame=2)] == [2, 3, 4]


def test_a_generator_created_first_but_started_second_is_refused(prompted) -> None:
    first = prompted.propagate()
    second = prompted.propagate(start_frame=1)  # neither has started: nothing holds the bank
    assert next(second).frame_index == 1
    with pytest.raises(RuntimeError, match=RUNNING):
        next(first)
    second.close()
    assert len(list(prompted.propagate())) == 5


def test_closing_or_dropping_a_propagation_releases_it(prompted) -> None:
    results = prompted.propagate()
    next(results)
    results.close()
    prompted.add_points(2, 1, [(24.0, 20.0)], [1])  # allowed again
    for _ in prompted.propagate():
        break  # the temporary generator is dropped here, which closes it
    prompted.add_points(3, 1, [(24.0, 22.0)], [1])
    assert len(list(prompted.propagate())) == 5


def test_an_error_during_propagation_releases_it(prompted, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("the disk went away")

    with monkeypatch.context() as patch:
        patch.setattr(prompted, "_track", broken)
        results = prompted.propagate()
        assert next(results).frame_index == 0  # the prompted frame needs no tracking
        with pytest.raises(OSError, match="disk went away"):
            next(results)
    assert [r.frame_index for r in prompted.propagate(start_frame=3)] == [3, 4]


def test_changes_while_a_propagation_runs_are_refused_and_change_nothing(prompted) -> None:
    prompted.add_points(0, 2, [(10.0, 10.0)], [1])
    results = prompted.propagate()
    next(results)
    changes = {
        "add_points": lambda: prompted.add_points(1, 1, [(24.0, 14.0)], [1]),
        "add_points, new object": lambda: prompted.add_points(1, 3, [(24.0, 14.0)], [1]),
        "add_box": lambda: prompted.add_box(1, 1, (20, 8, 28, 16)),
        "add_mask": lambda: prompted.add_mask(1, 1, _disc_mask()),
        "clear_prompts": lambda: prompted.clear_prompts(0, 1),
        "clear_prompts, all": lambda: prompted.clear_prompts(0),
        "remove_object": lambda: prompted.remove_object(2),
        "reset": prompted.reset,
    }
    for name, change in changes.items():
        with pytest.raises(RuntimeError, match="stop it .* before changing prompts"):
            change()
        assert prompted.object_ids == (1, 2), name
    rest = list(results)
    assert [r.frame_index for r in rest] == [1, 2, 3, 4]
    assert all(r.object_ids == (1, 2) for r in rest)
    prompted.remove_object(2)  # allowed once the run is over
    assert prompted.object_ids == (1,)


def test_prompts_changed_before_the_first_result_are_checked_again(prompted) -> None:
    # a propagation runs from its first next(): prompts may still change before it
    results = prompted.propagate()
    prompted.clear_prompts(0)
    with pytest.raises(RuntimeError, match="object\\(s\\) \\[1\\] have no prompt"):
        next(results)
    prompted.remove_object(1)  # the refused run left no guard behind
    prompted.add_points(0, 2, [(24.0, 12.0)], [1])
    results = prompted.propagate()
    prompted.remove_object(2)
    with pytest.raises(RuntimeError, match="nothing to propagate"):
        next(results)
    prompted.add_points(0, 3, [(24.0, 12.0)], [1])
    assert len(list(prompted.propagate())) == 5


def test_reading_results_while_a_propagation_runs_is_allowed(prompted) -> None:
    results = prompted.propagate()
    next(results)
    next(results)
    assert prompted.stored_output(1, 1) is not None
    assert prompted.stored_bytes() > 0
    results.close()


# --- mask prompts at the model's resolution ------------------------------------------------


def test_a_mask_that_vanishes_at_the_model_resolution_is_said(small_model) -> None:
    size = 4 * small_model.config.image_size  # frames shrink 4x on their way in
    frames = np.zeros((2, size, size), np.uint8)
    tracker = Tracker(small_model, frames)
    dot = np.zeros((size, size), bool)
    dot[500, 500] = True
    with pytest.warns(UserWarning, match=r"object 1 on frame 0 \(1 pixels\) vanishes"):
        result = tracker.add_mask(0, 1, dot)
    assert not (result.object_score_logits > 0).any()
    blob = np.zeros((size, size), bool)
    blob[480:520, 480:520] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mask that stays says nothing
        result = tracker.add_mask(0, 2, blob)
    assert result.object_score_logits[result.object_ids.index(2)] > 0
