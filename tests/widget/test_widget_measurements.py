"""The Measurements table: its Qt-free controller, and the dock widget measuring what a
scripted tracker propagated (a time-lapse and an anisotropic volume), with clicks on rows
moving the viewer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sam2.widget.measurements_controller import (
    MeasureInput,
    MeasurementsController,
    axis_kind,
)
from scripted_tracker import ScriptedObject, ScriptedTracker

# --- the controller, without Qt ------------------------------------------------------------------


def test_axis_kind_from_name_then_unit():
    assert axis_kind("z") == axis_kind("Depth") == "z"
    assert axis_kind("t") == axis_kind("time") == "t"
    assert axis_kind("0", "millimeter") == "z"
    assert axis_kind("0", "second") == axis_kind("0", "pixel") == axis_kind("1") == "t"


def test_controller_rows_headers_and_frames():
    labels = np.zeros((5, 20, 20), np.uint8)
    labels[1:4, 2:6, 2:12] = 1
    labels[3, 10:12, 10:12] = 2
    image = np.full(labels.shape, 3.0)
    controller = MeasurementsController()
    seen = []
    controller.changed.connect(lambda: seen.append(True))
    source = MeasureInput(labels, (5.0, 0.5, 0.5), ("mm", "mm", "mm"), "z", image)
    table = controller.measure(source)
    assert table.axis == "z" and seen
    assert controller.headers()[:3] == ["object", "volume (mL)", "longest diameter (mm)"]
    first = controller.rows()[0]
    assert first[0] == 1 and first[1] == pytest.approx(120 * 5 * 0.25 / 1000)
    assert first[2] == pytest.approx(math.hypot(3 * 0.5, 9 * 0.5)) and first[-1] == 3.0
    assert controller.frame_of(0) == 1  # the first slice with the longest diameter
    assert controller.frame_of(1) == 3 and controller.object_of(1) == 2
    assert controller.frame_of(5) is None
    controller.set_kind("t")  # the same labels as a time-lapse
    controller.measure(MeasureInput(labels, (1.0, 1.0, 1.0), (None, None, None), "z"))
    assert controller.headers() == ["object", "frame", "area (px^2)", "y", "x", "mean intensity"]
    assert [r[:2] for r in controller.rows()] == [[1, 1], [1, 2], [1, 3], [2, 3]]
    assert controller.rows()[0][-1] == ""  # no image: no mean intensity
    assert controller.frame_of(3) == 3
    controller.measure(None)
    assert controller.rows() == [] and controller.headers() == [] and controller.message
    with pytest.raises(ValueError):
        controller.set_kind("x")


# --- the widget ---------------------------------------------------------------------------------


def click(points, coords, object_id):
    points.feature_defaults = {"object_id": object_id, "positive": True}
    points.add([coords])


def scripted_widget(add_widget, data, objects, **image_kwargs):
    trackers = []

    def factory(frames, **kwargs):
        trackers.append(ScriptedTracker(frames, objects, **kwargs))
        return trackers[-1]

    viewer, widget = add_widget(data, **image_kwargs)
    widget.use_tracker_factory(factory)
    points, _, _ = widget.new_prompt_layers()
    return viewer, widget, points, trackers


def click_row(qtbot, table, row):
    from qtpy.QtCore import Qt

    rect = table.visualItemRect(table.item(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_time_lapse_table_after_propagation_and_row_clicks(add_widget, run_and_wait, qtbot):
    data = np.random.default_rng(0).random((10, 64, 64), np.float32)
    objects = [
        ScriptedObject(1, center=(20, 10), velocity=(0, 3), radius=5, absent={6}),
        ScriptedObject(2, center=(45, 45), radius=6),
    ]
    viewer, widget, points, trackers = scripted_widget(add_widget, data, objects)
    run_and_wait(widget, lambda: click(points, (0, 20, 10), 1))
    run_and_wait(widget, lambda: click(points, (0, 45, 45), 2))
    assert widget.measurements_table.rowCount() == 0  # prompts alone do not measure
    image = viewer.layers[0]
    # the model sees what the user sees: the image layer's contrast limits
    assert trackers[-1].contrast_limits == tuple(float(v) for v in image.contrast_limits)
    run_and_wait(widget, widget.propagate)

    table = widget.measurements_table
    output = widget._output_layer()
    assert table.rowCount() == 9 + 10  # object 1 is absent on frame 6: no row
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["object", "frame", "area (px^2)", "y", "x", "mean intensity"]
    rows = widget.measurements.table.rows
    for r in rows:
        mask = output.data[r.frame] == r.object_id
        assert r.pixels == mask.sum() and r.area == mask.sum()
        assert r.mean_intensity == pytest.approx(data[r.frame][mask].mean(), rel=1e-5)
    assert {(r.object_id, r.frame) for r in rows} == {
        (k, t) for k in (1, 2) for t in range(10) if (k, t) != (1, 6)
    }

    table.sortItems(1)  # by frame: the rows move, their frames stay theirs
    for row in (table.rowCount() - 1, 3):
        frame = int(table.item(row, 1).text())
        click_row(qtbot, table, row)
        assert widget.current_frame() == frame
        assert viewer.dims.current_step[0] == frame


def test_volume_table_jumps_to_the_slice_of_the_longest_diameter(add_widget, run_and_wait, qtbot):
    data = np.random.default_rng(1).random((12, 64, 64), np.float32)
    # object 3 grows to its largest on slice 8, a small one sits on slices 1-4 only
    objects = [
        ScriptedObject(3, center=(30, 30), radius=9, present={6, 7, 8, 9}),
        ScriptedObject(4, center=(10, 50), radius=3, present={1, 2, 3, 4}),
    ]
    viewer, widget, points, trackers = scripted_widget(
        add_widget,
        data,
        objects,
        scale=(5.0, 0.5, 0.5),
        units=("mm", "mm", "mm"),
        axis_labels=("z", "y", "x"),
    )
    run_and_wait(widget, lambda: click(points, (7, 30, 30), 3))
    run_and_wait(widget, lambda: click(points, (2, 10, 50), 4))
    run_and_wait(widget, lambda: widget.propagate("both"))

    table = widget.measurements_table
    output = widget._output_layer()
    assert table.rowCount() == 2
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[:3] == ["object", "volume (mL)", "longest diameter (mm)"]
    big, small = widget.measurements.table.rows
    assert (big.object_id, big.first_slice, big.last_slice) == (3, 6, 9)
    assert big.volume == pytest.approx((output.data == 3).sum() * 5 * 0.25 / 1000)
    assert big.longest_diameter == pytest.approx(18 * 0.5, abs=0.5)
    assert (small.first_slice, small.last_slice) == (1, 4)

    table.sortItems(1)  # by volume: the small object first
    assert table.item(0, 0).text() == "4"
    click_row(qtbot, table, 1)
    assert widget.current_frame() == big.diameter_slice
    assert viewer.dims.point[0] == pytest.approx(big.diameter_slice * 5.0)
    click_row(qtbot, table, 0)
    assert widget.current_frame() == small.diameter_slice

    # painting by hand changes the labels; the Measure button measures again
    output.data[0, 60:63, 0:4] = 7
    widget.measure_button.click()
    assert [r.object_id for r in widget.measurements.table.rows] == [3, 4, 7]
    # as a time-lapse instead: one row per object and slice
    widget._measurements_view.panel.kind_combo.setCurrentIndex(2)
    widget.measure_button.click()
    assert table.rowCount() == 4 + 4 + 1


def test_window_combo_sets_the_layer_limits_the_model_sees(add_widget, run_and_wait):
    rng = np.random.default_rng(2)
    hu = rng.integers(-1000, 1500, (6, 48, 48)).astype(np.int16)
    hu[:, :8] = 0  # air padding, left out by the MR rule
    objects = [ScriptedObject(1, center=(24, 24), radius=5)]
    viewer, widget, points, trackers = scripted_widget(add_widget, hu, objects)
    image = viewer.layers[0]
    run_and_wait(widget, lambda: click(points, (2, 24, 24), 1))
    assert trackers[-1].contrast_limits == tuple(float(v) for v in image.contrast_limits)
    widget.window_combo.setCurrentIndex(widget.window_combo.findData("lung"))
    assert tuple(image.contrast_limits) == (-1350.0, 150.0)
    run_and_wait(widget, widget.propagate)
    # a new session: the tracker reads the frames with the window the layer shows
    assert trackers[-1].contrast_limits == (-1350.0, 150.0)
    assert widget.session.tracker is trackers[-1]
    from napari_sam2.tracking.intensity import mr_limits

    assert widget.set_window("mr") == mr_limits(hu)
    assert tuple(image.contrast_limits) == pytest.approx(mr_limits(hu))
    assert widget.set_window((400, 40)) == (-160.0, 240.0)
