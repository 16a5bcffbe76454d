"""The dock widget with the real tracker and the small SAM 2.1 network of the tests (random
weights, built by the tests: no ``../shared`` needed) on generated stacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtpy.QtCore import QTimer

from small_model import moving_blob_stack


def click(points, coords, object_id, positive=True):
    points.feature_defaults = {"object_id": object_id, "positive": positive}
    points.add([coords])


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def frames():
    """A generated (8, 256, 256) uint8 time-lapse: a bright disc moving right."""
    return moving_blob_stack(frames=8, size=256)


def test_points_of_two_objects_give_labels_with_both_ids(
    add_widget, run_and_wait, small_model, frames, qtbot
):
    viewer, widget = add_widget(frames)
    widget.use_model(small_model, "small (test)")
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 128.0, 64.0), 1))
    output = widget._output_layer()
    assert 1 in output.data[0] and not output.data[1:].any()  # the clicked frame, at once
    run_and_wait(widget, lambda: click(points, (0, 64.0, 64.0), 2))
    assert {1, 2} <= set(np.unique(output.data[0]).tolist())
    workers = []
    widget.worker_started.connect(workers.append)
    widget.propagate()
    with qtbot.waitSignal(workers[-1].finished, timeout=60_000):
        pass
    assert widget.worker is None
    for t in range(8):
        present = {k for k in (1, 2) if widget.session.scores[k][t] > 0}
        assert set(np.unique(output.data[t]).tolist()) - {0} == present, t
    assert len(widget.session.table) == 2 * 8


def test_anisotropic_volume_keeps_scale_and_translate(
    add_widget, run_and_wait, small_model, frames
):
    viewer, widget = add_widget(frames, scale=(5, 0.8, 0.8), translate=(10, 2, 3))
    widget.use_model(small_model, "small (test)")
    points, shapes, masks = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (3, 120, 120), 1))
    run_and_wait(widget, lambda: widget.propagate("both"))
    output = widget._output_layer()
    np.testing.assert_allclose(output.scale, (5, 0.8, 0.8))
    np.testing.assert_allclose(output.translate, (10, 2, 3))
    np.testing.assert_allclose(points.scale, (5, 0.8, 0.8))
    assert widget.session.scores[1].keys() == set(range(8))


def test_time_channel_stack_after_choosing_axis_and_channel(
    add_widget, run_and_wait, small_model, frames
):
    tcyx = np.stack([255 - frames, frames], axis=1)  # (8, 2, 256, 256)
    viewer, widget = add_widget(tcyx)
    widget.use_model(small_model, "small (test)")
    widget.axis_combo.setCurrentIndex(widget.axis_combo.findData(0))
    widget.channel_axis_combo.setCurrentIndex(widget.channel_axis_combo.findData(1))
    widget.channel_combo.setCurrentIndex(widget.channel_combo.findData(1))
    plan = widget.plan()
    assert (plan.frame_axis, plan.channel_axis, plan.y_axis, plan.x_axis) == (0, 1, 2, 3)
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (2, 1, 128.0, 96.0), 1))
    run_and_wait(widget, lambda: widget.propagate(max_frames=2))
    output = widget._output_layer()
    assert output.data.shape == (8, 1, 256, 256)
    tracked = widget.session.tracker
    np.testing.assert_array_equal(tracked.frames.raw_frame(2), frames[2])  # channel 1
    assert sorted(widget.session.scores[1]) == [2, 3, 4]
    # The labels show at every channel position of the viewer.
    viewer.dims.set_current_step(0, 2)
    for c in (0, 1):
        viewer.dims.set_current_step(1, c)
        assert output._slice.image.view.any(), c


def test_viewer_stays_responsive_during_propagation(add_widget, run_and_wait, small_model, qtbot):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (12, 256, 256), dtype=np.uint8)
    viewer, widget = add_widget(stack)
    widget.use_model(small_model, "small (test)")
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 128, 128), 1))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(widget.worker is not None))
    timer.start(10)
    frames_seen = []
    widget.worker_started.connect(
        lambda w: w.yielded.connect(lambda item: frames_seen.append(item[0]))
    )
    with qtbot.waitSignal(widget.idle, timeout=120_000):
        widget.propagate()
    timer.stop()
    assert frames_seen.count("frame") == 12
    # The event loop kept running timers while the worker propagated.
    assert sum(ticks) >= 10


def test_choosing_bfloat16_runs_the_tracker_under_autocast_and_says_so(
    add_widget, run_and_wait, small_model, frames
):
    viewer, widget = add_widget(frames)
    widget.use_model(small_model, "small (test)")
    combo = widget.model_view.panel.precision_combo
    combo.setCurrentIndex(combo.findText("bfloat16"))  # what choosing it in the list does
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 128.0, 64.0), 1))
    assert widget.session.tracker._autocast_dtype == torch.bfloat16
    assert "bfloat16 autocast" in widget.model_status.text()
    assert 1 in widget._output_layer().data[0]

    combo.setCurrentIndex(combo.findText("float32"))  # back: a new session in float32
    run_and_wait(widget, lambda: click(points, (0, 64.0, 64.0), 2))
    assert widget.session.tracker._autocast_dtype is None
    assert "bfloat16" not in widget.model_status.text()
