"""User journeys in a real viewer that once went wrong: exports with the wrong axes, focus
jumping away from the prompt layer, doubled and cut-off error messages, unit warnings, a
propagation without progress, and a closed widget that kept working."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt

from napari_sam2 import _reader
from scripted_tracker import ScriptedObject, ScriptedTracker


def click(points, coords, object_id=1, positive=True):
    """Add one prompt point as a click does: the layer's feature defaults, then ``add``."""
    points.feature_defaults = {"object_id": object_id, "positive": positive}
    points.add([coords])


def scripted_factory(trackers, cls=ScriptedTracker):
    def factory(frames, **kwargs):
        trackers.append(cls(frames, [ScriptedObject(1, center=(20, 20), radius=5)], **kwargs))
        return trackers[-1]

    return factory


@pytest.fixture
def notifications():
    """Every notification napari dispatches while the test runs (errors and warnings)."""
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def stack(frames=6, size=48):
    return np.random.default_rng(0).random((frames, size, size), np.float32)


# --- bug 3: a volume is exported as a Z stack with its spacing and unit ----------------------


def track_and_export(add_widget, run_and_wait, tmp_path, **image_kwargs):
    trackers = []
    viewer, widget = add_widget(stack(), **image_kwargs)
    widget.use_tracker_factory(scripted_factory(trackers))
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (2, 20, 20)))
    run_and_wait(widget, lambda: widget.propagate("both"))
    path = widget.export("tiff", tmp_path / "result.tif")
    return widget, path


def test_volume_labels_export_as_z_stack_with_spacing_and_unit(add_widget, run_and_wait, tmp_path):
    widget, path = track_and_export(
        add_widget,
        run_and_wait,
        tmp_path,
        scale=(5, 0.8, 0.8),
        units=("mm", "mm", "mm"),
        axis_labels=("z", "y", "x"),
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZYX"
        meta = tif.imagej_metadata
        assert meta["spacing"] == pytest.approx(5.0)
        assert meta["unit"] in ("mm", "millimeter")
        assert "finterval" not in meta
        np.testing.assert_array_equal(tif.asarray(), widget._output_layer().data)
    ((data, kwargs, kind),) = _reader.read_tiff(str(path))
    assert kind == "labels"
    assert kwargs["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (5, 0.8, 0.8))
    assert set(kwargs["units"]) == {"millimeter"}


def test_time_lapse_labels_export_with_frame_interval(add_widget, run_and_wait, tmp_path):
    widget, path = track_and_export(
        add_widget,
        run_and_wait,
        tmp_path,
        scale=(2.5, 0.5, 0.5),
        units=("s", "um", "um"),
        axis_labels=("t", "y", "x"),
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TYX"
        meta = tif.imagej_metadata
        assert meta["finterval"] == pytest.approx(2.5)
        assert "spacing" not in meta
    ((data, kwargs, kind),) = _reader.read_tiff(str(path))
    assert kwargs["axis_labels"] == ("t", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1, 0.5, 0.5))  # the reader keeps t in frames
    assert kwargs["metadata"]["frame_interval"] == pytest.approx(2.5)
    assert kwargs["units"][1:] == ("micrometer", "micrometer")


def test_axis_names_given_in_the_viewer_only_still_make_a_z_stack(
    add_widget, run_and_wait, tmp_path
):
    trackers = []
    viewer, widget = add_widget(stack(), scale=(3, 1, 1))
    viewer.dims.axis_labels = ("z", "y", "x")  # the layers keep napari's numbered names
    widget.use_tracker_factory(scripted_factory(trackers))
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (2, 20, 20)))
    with tifffile.TiffFile(widget.export("tiff", tmp_path / "result.tif")) as tif:
        assert tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["spacing"] == pytest.approx(3.0)


# --- bug 4: the prompt layer keeps the focus -------------------------------------------------


def test_points_layer_stays_active_in_add_mode_after_the_first_click(add_widget, run_and_wait):
    viewer, widget = add_widget(stack())
    widget.use_tracker_factory(scripted_factory([]))
    points, _, _ = widget.new_prompt_layers()
    assert widget._output_layer() is None
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    assert widget._output_layer() is not None  # the first click created the output layer
    assert viewer.layers.selection.active is points
    assert str(points.mode) == "add"
    run_and_wait(widget, lambda: click(points, (1, 22, 20)))
    assert viewer.layers.selection.active is points and str(points.mode) == "add"


# --- bug 5: one short error notification per failure; units copied ---------------------------


class FailingTracker(ScriptedTracker):
    LONG_PATH = "/tmp/" + "very_long_folder_name/" * 8 + "cache.bin"

    def add_points(self, *args, **kwargs):
        raise RuntimeError(f"could not read the frame cache {self.LONG_PATH}: disk full")


def test_a_failed_click_gives_one_short_notification_with_details(
    add_widget, run_and_wait, notifications
):
    trackers = []
    viewer, widget = add_widget(stack())
    widget.use_tracker_factory(scripted_factory(trackers, FailingTracker))
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    errors = [n for n in notifications if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1, [n.message for n in errors]
    first_line = str(errors[0].message).splitlines()[0]
    assert len(first_line) < 120, first_line
    assert first_line.startswith("SAM 2: applying the prompts failed")
    # The whole message is one step away: in the status line's tooltip and the traceback.
    assert FailingTracker.LONG_PATH in widget.status_label.toolTip()
    assert FailingTracker.LONG_PATH in str(getattr(errors[0], "exception", ""))
    assert widget.status_label.isVisible() or widget.status_label.text()

    # Work that succeeds afterwards clears the old error from the widget.
    widget.use_tracker_factory(scripted_factory(trackers))
    run_and_wait(widget, lambda: click(points, (0, 22, 22)))
    assert not widget.status_label.text()
    assert len([n for n in notifications if n.severity == NotificationSeverity.ERROR]) == 1


def test_a_long_error_about_the_users_choice_is_notified_whole(
    add_widget, run_and_wait, notifications
):
    viewer, widget = add_widget(stack(), name="cells")
    widget.use_tracker_factory(scripted_factory([]))
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    other = "another image of another shape"
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name=other)
    widget.image_combo.setCurrentIndex(widget.image_combo.findText(other))
    run_and_wait(widget, widget.propagate)
    errors = [str(n.message) for n in notifications if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and type(widget.last_error) is ValueError
    assert len(widget.status_label.text()) <= 120  # the status line stays one short line
    assert errors[0] == "SAM 2: " + " ".join(str(widget.last_error).split())  # not cut


def test_prompt_and_output_layers_copy_units_and_axis_labels(
    add_widget, run_and_wait, notifications, qtbot
):
    viewer, widget = add_widget(
        stack(),
        scale=(2.0, 0.7, 0.7),
        translate=(0, 5, 5),
        units=("mm", "mm", "mm"),
        axis_labels=("z", "y", "x"),
    )
    widget.use_tracker_factory(scripted_factory([]))
    image = viewer.layers[0]
    qtbot.mouseClick(widget.new_prompts_button, Qt.MouseButton.LeftButton)
    points, shapes, masks = widget.points_layer, widget.shapes_layer, widget.masks_layer
    assert viewer.layers.selection.active is points
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    output = widget._output_layer()
    for layer in (points, shapes, masks, output):
        assert tuple(layer.units) == tuple(image.units), layer.name
        assert tuple(layer.axis_labels) == ("z", "y", "x"), layer.name
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert viewer.layers.extent.units is not None  # napari's condition for the warning
    viewer.window._qt_viewer.canvas._update_world_units()  # what the next draw runs
    assert not [n for n in notifications if "Inconsistent units" in str(n.message)]


# --- bug 6: progress in the widget -----------------------------------------------------------


def test_propagation_shows_frame_k_of_n_speed_and_time_left(add_widget, run_and_wait):
    viewer, widget = add_widget(stack(frames=12))
    widget.use_tracker_factory(scripted_factory([]))
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    texts = []
    widget.progress_changed.connect(texts.append)
    run_and_wait(widget, widget.propagate)
    assert widget.progress_label.text().startswith("forward: frame 12 of 12")
    assert widget.progress_bar.maximum() == 12 and widget.progress_bar.value() == 12
    assert any("forward: frame 1 of 12" in t for t in texts), texts
    middle = [t for t in texts if "frame 6 of 12" in t]
    assert middle and "frames/s" in middle[0] and "left" in middle[0], texts
    # both ways: a line per leg, each sized by the frames that leg visits
    texts.clear()
    run_and_wait(widget, lambda: widget.propagate("both", start_frame=4))
    assert any(t.startswith("forward: frame 8 of 8") for t in texts), texts
    assert any(t.startswith("reverse: frame 5 of 5") for t in texts), texts


# --- cancel, then propagate again ------------------------------------------------------------


def test_after_cancel_the_next_propagation_and_clicks_run(
    add_widget, run_and_wait, qtbot, small_model
):
    # the real tracker: it refuses a second propagation while one holds its guard
    viewer, widget = add_widget(stack(frames=8))
    widget.use_model(small_model, "small (test)")
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 24, 12)))

    def press_cancel(text):
        if "frame 2 of" in text and widget.cancel_button.isEnabled():
            qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)

    widget.progress_changed.connect(press_cancel)
    run_and_wait(widget, widget.propagate)
    widget.progress_changed.disconnect(press_cancel)
    output = widget._output_layer()
    assert widget.session.tracker.num_non_conditioning(1) < 7  # stopped before the end
    run_and_wait(widget, widget.propagate)
    assert widget.last_error is None
    assert widget.progress_label.text().startswith("forward: frame 8 of 8")
    run_and_wait(widget, lambda: click(points, (3, 24, 20)))  # a correction is taken too
    assert widget.last_error is None
    assert output is widget._output_layer()


# --- Next object beside labels drawn by hand ---------------------------------------------------


def test_next_object_keeps_the_labels_drawn_in_the_output_layer(
    add_widget, run_and_wait, qtbot, small_model
):
    viewer, widget = add_widget(stack())
    widget.use_model(small_model, "small (test)")
    cells = viewer.add_labels(np.zeros((6, 48, 48), np.uint16), name="cells")
    cells.data[0, 2:10, 2:10] = 1  # drawn by hand before tracking
    widget.output_combo.setCurrentIndex(widget.output_combo.findData(cells))
    points, _, _ = widget.new_prompt_layers()
    qtbot.mouseClick(widget.next_object_button, Qt.MouseButton.LeftButton)
    assert widget.object_spin.value() == 2
    run_and_wait(widget, lambda: points.add([(0, 24, 24)]))  # a click takes the defaults
    assert widget.last_error is None
    assert points.features["object_id"].tolist() == [2]
    assert widget.session.tracker.object_ids == (2,)
    assert (cells.data[0, 2:10, 2:10] == 1).all()  # the hand-drawn label keeps its pixels


# --- closing the widget ----------------------------------------------------------------------


class ClosableTracker(ScriptedTracker):
    gate = threading.Event()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed = threading.Event()

    def propagate(self, *args, **kwargs):
        for result in super().propagate(*args, **kwargs):
            if result.frame_index == 2:
                assert self.gate.wait(30)  # held until the widget is closed
            yield result

    def close(self):
        self.closed.set()


@pytest.mark.parametrize("how", ["close", "remove the dock"])
def test_closing_the_widget_stops_its_work_and_closes_the_tracker(
    add_widget, run_and_wait, qtbot, how
):
    trackers = []
    viewer, widget = add_widget(stack(frames=10))
    widget.use_tracker_factory(scripted_factory(trackers, ClosableTracker))
    ClosableTracker.gate.clear()
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    started = []
    widget.worker_started.connect(started.append)
    widget.propagate()
    worker = started[-1]
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 2, timeout=10_000)
    if how == "close":
        widget.close()
    else:
        viewer.window.remove_dock_widget(widget)
    ClosableTracker.gate.set()
    qtbot.waitUntil(trackers[-1].closed.is_set, timeout=10_000)
    assert worker.abort_requested
    assert widget.session is None
    frames_reached = [c for c in trackers[-1].calls if c[0] == "propagate"]
    assert len(frames_reached) == 1
    # The labels stop where the run was stopped (within a frame of closing).
    output = viewer.layers["SAM2 labels"]
    assert not output.data[5:].any()


def test_later_success_closes_the_error_pop_up(make_napari_viewer, run_and_wait, qtbot):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    viewer = make_napari_viewer(show=True)  # pop-ups are only made for a shown window
    viewer.add_image(stack())
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 tracking")
    trackers = []
    widget.use_tracker_factory(scripted_factory(trackers, FailingTracker))
    points, _, _ = widget.new_prompt_layers()

    def pop_ups():
        toasts = widget.window().findChildren(NapariQtNotification)
        return [t.message.text() for t in toasts if t.isVisible()]

    run_and_wait(widget, lambda: click(points, (0, 20, 20)))
    qtbot.waitUntil(lambda: len(pop_ups()) == 1, timeout=5_000)
    assert pop_ups()[0].startswith("SAM 2: applying the prompts failed (RuntimeError)")
    widget.use_tracker_factory(scripted_factory(trackers))
    run_and_wait(widget, lambda: click(points, (0, 22, 22)))
    qtbot.waitUntil(lambda: not pop_ups(), timeout=5_000)
