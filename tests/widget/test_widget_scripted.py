"""The dock widget driven by the scripted tracker (fast and deterministic)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam2.widget import timeline as timeline_module
from napari_sam2.widget.session import FrameState
from scripted_tracker import ScriptedObject, ScriptedTracker


def click(points, coords, object_id, positive=True):
    """Add one prompt point as a click does: the layer's feature defaults, then ``add``."""
    points.feature_defaults = {"object_id": object_id, "positive": positive}
    points.add([coords])


def script():
    return [
        ScriptedObject(1, center=(20, 10), velocity=(0, 3), radius=5, absent={6}),
        ScriptedObject(2, center=(45, 45), radius=6),
    ]


@pytest.fixture
def scripted(add_widget):
    """A (10, 64, 64) time-lapse, the widget with a scripted tracker, and new prompt layers."""
    trackers = []

    def factory(frames, **kwargs):
        trackers.append(ScriptedTracker(frames, script(), **kwargs))
        return trackers[-1]

    viewer, widget = add_widget(np.random.default_rng(0).random((10, 64, 64), np.float32))
    widget.use_tracker_factory(factory)
    points, shapes, masks = widget.new_prompt_layers()
    return viewer, widget, points, shapes, masks, trackers


def labels_present(output, t):
    return set(np.unique(output.data[t]).tolist()) - {0}


def test_clicks_show_the_frame_at_once_then_propagation_fills_all_frames(scripted, run_and_wait):
    viewer, widget, points, _, _, trackers = scripted
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    output = widget._output_layer()
    assert labels_present(output, 0) == {1}
    assert all(not labels_present(output, t) for t in range(1, 10))  # nothing propagated yet
    run_and_wait(widget, lambda: click(points, (0, 45, 45), 2))
    assert labels_present(output, 0) == {1, 2}
    assert trackers[-1].fill_hole_area == 8  # decision D4
    run_and_wait(widget, widget.propagate)
    for t in range(10):
        assert labels_present(output, t) == ({2} if t == 6 else {1, 2}), t
    # Points take their object's label colour; negatives are crosses with a red border.
    click(points, (0, 30, 30), 1, positive=False)
    np.testing.assert_allclose(points.face_color[0], output.get_color(1))
    assert str(points.symbol[-1]) in ("x", "Symbol.X") and points.border_color[-1][1] < 0.5


def test_cancel_keeps_finished_frames_and_leaves_the_rest(scripted, run_and_wait, qtbot):
    viewer, widget, points, _, _, trackers = scripted
    gate = threading.Event()
    run_and_wait(widget, lambda: click(points, (0, 45, 45), 2))
    tracker = trackers[-1]
    plain = tracker.propagate

    def gated(*args, **kwargs):
        for result in plain(*args, **kwargs):
            if result.frame_index == 4:
                assert gate.wait(30)  # held until the test has pressed Cancel
            yield result

    tracker.propagate = gated
    output = widget._output_layer()
    output.data[7:, 60:, 60:] = 9  # the user's own labels in frames not reached
    before = output.data.copy()

    def cancel_on_frame_3(item):
        if item[0] == "frame" and item[1].frame_index == 3:
            widget.cancel()
            gate.set()

    def watch(worker):
        widget.worker_started.disconnect(watch)  # only the first run is cancelled
        worker.yielded.connect(cancel_on_frame_3)

    widget.worker_started.connect(watch)
    with qtbot.waitSignal(widget.idle, timeout=30_000):
        widget.propagate()
    done = [t for t in range(10) if 2 in labels_present(output, t)]
    assert done == [0, 1, 2, 3, 4]  # within one frame of the cancel
    np.testing.assert_array_equal(output.data[5:], before[5:])
    assert widget.session.edited_frames  # the run did not finish: the next one starts over
    run_and_wait(widget, widget.propagate)
    assert all(2 in labels_present(output, t) for t in range(10))


def test_correction_changes_only_frames_on_its_side(scripted, run_and_wait):
    viewer, widget, points, _, _, trackers = scripted
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    run_and_wait(widget, widget.propagate)
    output = widget._output_layer()
    before = output.data.copy()
    run_and_wait(widget, lambda: click(points, (5, 40, 40), 1))  # the object is elsewhere
    assert widget.session.start_frame("forward") == 5
    run_and_wait(widget, widget.propagate)
    np.testing.assert_array_equal(output.data[:5], before[:5])
    for t in (5, 7, 8, 9):
        assert not np.array_equal(output.data[t], before[t]), t
        assert output.data[t][40, 40 + 3 * (t - 5)] == 1
    assert ("propagate", (5, False, None)) in trackers[-1].calls


def test_box_and_mask_layers_are_prompts(scripted, run_and_wait):
    viewer, widget, points, shapes, masks, trackers = scripted
    shapes.feature_defaults = {"object_id": 3}

    def add_box():
        shapes.add_rectangles(np.array([[2, 10, 30], [2, 10, 40], [2, 20, 40], [2, 20, 30]]))

    run_and_wait(widget, add_box)
    output = widget._output_layer()
    assert labels_present(output, 2) == {3}
    assert trackers[-1].calls[0] == ("add_box", (2, 3, (10.0, 30.0, 20.0, 40.0)))

    def paint():
        masks.data[4, 50:56, 5:12] = 4
        masks.events.data(value=masks.data)

    run_and_wait(widget, paint)
    assert labels_present(output, 4) == {4}
    run_and_wait(widget, lambda: widget.propagate("both"))
    assert all({3, 4} <= labels_present(output, t) for t in range(10))


def test_remove_object_erases_its_labels_and_keeps_painted_ones(scripted, run_and_wait):
    viewer, widget, points, _, _, _ = scripted
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    run_and_wait(widget, lambda: click(points, (0, 45, 45), 2))
    run_and_wait(widget, widget.propagate)
    output = widget._output_layer()
    output.data[:, 0:3, 0:3] = 7  # painted by hand
    widget.remove_object(1)
    assert all(1 not in labels_present(output, t) for t in range(10))
    assert all({2, 7} <= labels_present(output, t) for t in range(10))
    assert set(points.features["object_id"]) == {2}
    assert widget.session.object_ids() == [2]


def test_swim_lanes_show_absence_and_jump_to_frames(scripted, run_and_wait, qtbot):
    viewer, widget, points, _, _, _ = scripted
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    run_and_wait(widget, widget.propagate)
    lanes = widget.timeline
    assert lanes.object_ids == [1]
    assert lanes.states[0, 6] == FrameState.ABSENT and lanes.states[0, 5] == FrameState.PRESENT
    lanes.resize(400, lanes.height())
    image = lanes.grab().toImage()
    absent = lanes.cell_rect(0, 6).center()
    present = lanes.cell_rect(0, 5).center()
    assert image.pixelColor(int(absent.x()), int(absent.y())) == timeline_module.ABSENT_COLOR
    assert image.pixelColor(int(present.x()), int(present.y())) != timeline_module.ABSENT_COLOR
    qtbot.mouseClick(
        lanes, timeline_module.Qt.LeftButton, pos=lanes.cell_rect(0, 7).center().toPoint()
    )
    assert viewer.dims.current_step[0] == 7
    assert lanes.current_frame == 7


def test_keyboard_shortcuts_switch_object_and_polarity(scripted):
    viewer, widget, points, _, _, _ = scripted
    keys = {str(k): f for k, f in points.keymap.items()}
    assert {"N", "T"} <= {k.upper() for k in keys}
    toggle = next(f for k, f in keys.items() if k.upper() == "T")
    nxt = next(f for k, f in keys.items() if k.upper() == "N")
    toggle(points)
    assert not widget.positive and points.feature_defaults["positive"][0] == False  # noqa: E712
    click(points, (0, 5, 5), widget.object_spin.value(), positive=widget.positive)
    nxt(points)
    assert widget.object_spin.value() == 2 and widget.positive
    assert int(points.feature_defaults["object_id"][0]) == 2
    # boxes and mask prompts: `n` starts the next object there too
    for layer in (widget.shapes_layer, widget.masks_layer):
        next_key = next(f for k, f in layer.keymap.items() if str(k).upper() == "N")
        before = widget.object_spin.value()
        click(points, (0, 6, 6), before)  # the current object is in use
        next_key(layer)
        assert widget.object_spin.value() == before + 1
    assert widget.masks_layer.selected_label == widget.object_spin.value()


def test_errors_reach_the_user_and_keep_labels(scripted, run_and_wait, monkeypatch):
    viewer, widget, points, _, _, trackers = scripted
    messages = []
    monkeypatch.setattr(
        "napari_sam2.widget.propagate_view.notify_failure",
        lambda short, exc, detail=None: messages.append(short),
    )
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    output = widget._output_layer()
    before = output.data.copy()

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")
        yield  # a generator, like the real one

    trackers[-1].propagate = broken
    run_and_wait(widget, widget.propagate)
    assert len(messages) == 1 and messages[0].startswith("SAM 2: propagation failed")
    assert "device lost" in widget.status_label.toolTip()
    assert "kept" in widget.status_label.toolTip()
    np.testing.assert_array_equal(output.data, before)
    assert widget.propagate_button.isEnabled()


def test_exports_write_files(scripted, run_and_wait, tmp_path):
    viewer, widget, points, _, _, _ = scripted
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    run_and_wait(widget, widget.propagate)
    import tifffile

    tif = widget.export("tiff", tmp_path / "labels.tif")
    np.testing.assert_array_equal(tifffile.imread(tif), widget._output_layer().data)
    widget.export("ctc", tmp_path)
    assert (tmp_path / "res_track.txt").read_text().split()[:3] == ["1", "0", "5"]
    csv = widget.export("csv", tmp_path / "presence.csv").read_text().splitlines()
    assert csv[0].startswith("object_id,frame") and len(csv) == 11
