"""The Track all panel in a real viewer, driven as a user does: the small random-weight SAM 2
of the tests, a generated stack, typing in the fields, ticking the switches and pressing the
buttons. Random weights find no objects at the default quality thresholds, so the tests type
lower ones, or draw seed labels and give a stand-in detector for the discovery of new cells."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from napari.layers import Tracks
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QStyle, QStyleOptionButton
from scipy import ndimage

from ground_truth import GroundTruthTracker, ground_truth_segmenter, lineage_from_labels
from napari_sam2._sample_data import make_dividing_cells
from scripted_tracker import ScriptedTracker
from small_model import moving_blob_stack

T, SIZE = 6, 64


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def two_cells(frames=T, size=SIZE, enters=3) -> np.ndarray:
    """(T, Y, X) uint8: a cell moving right, and a second one that enters on ``enters``."""
    stack = moving_blob_stack(frames=frames, size=size)
    yy, xx = np.mgrid[:size, :size]
    second = (yy - 12) ** 2 + (xx - 48) ** 2 < 36
    for t in range(enters, frames):
        stack[t][second] = 220
    return stack


def bright_blobs(stack):
    """A stand-in for segment-everything: the bright blobs of each frame."""

    def segmenter(frame_index):
        parts, n = ndimage.label(np.asarray(stack[frame_index]) > 120)
        return [parts == k for k in range(1, n + 1)]

    return segmenter


def type_into(qtbot, spin, text):
    """Select the field's text and type a new value, then Return, as a user does."""
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)


def press(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def tick(qtbot, check):
    """Click a check box on its box (the widget's middle may lie past its short text)."""
    option = QStyleOptionButton()
    check.initStyleOption(option)
    box = check.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, check)
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=box.center())


def test_segment_all_labels_the_frame_shown_and_no_other(
    add_widget, run_and_wait, small_model, qtbot
):
    viewer, widget = add_widget(two_cells(), scale=(1, 0.5, 0.5))
    widget.use_model(small_model, "small (test)")
    panel = widget.track_all_panel
    viewer.dims.set_current_step(0, 2)
    type_into(qtbot, panel.grid_spin, "8")
    type_into(qtbot, panel.quality_spin, "0")
    type_into(qtbot, panel.stability_spin, "0")
    assert widget.auto.settings.everything.pred_iou_thresh == 0.0
    assert widget.auto.settings.everything.points_per_side == 8
    run_and_wait(widget, lambda: press(qtbot, widget.segment_all_button))
    output = widget._output_layer()
    assert output is not None and output.name == "SAM2 labels"
    assert output.data[2].any(), widget.auto.summary
    assert not np.delete(output.data, 2, axis=0).any()  # that frame only
    assert tuple(output.scale) == (1, 0.5, 0.5)
    found = sorted(set(np.unique(output.data[2]).tolist()) - {0})
    assert found == list(range(1, len(found) + 1))  # label k per object
    assert panel.summary_label.text().startswith(f"frame 2: {len(found)} new object")
    assert widget.busy is False and panel.track_button.isEnabled()


def test_track_all_from_drawn_labels_fills_the_layer_frame_by_frame_and_adds_tracks(
    add_widget, run_and_wait, small_model, qtbot
):
    stack = two_cells()
    viewer, widget = add_widget(stack, scale=(2, 0.5, 0.5), translate=(0, 3, 4))
    widget.use_model(small_model, "small (test)")
    widget.use_segmenter(bright_blobs(stack))
    # the user makes a Labels layer, paints the first cell on frame 0 and chooses it as output
    cells = viewer.add_labels(
        np.zeros(stack.shape, np.uint16), name="cells", scale=(2, 0.5, 0.5), translate=(0, 3, 4)
    )
    first = bright_blobs(stack)(0)
    assert len(first) == 1
    cells.data[0][first[0]] = 1
    cells.data[4][60:63, 0:3] = 9  # another label drawn by hand, on a later frame
    widget.output_combo.setCurrentIndex(widget.output_combo.findData(cells))
    viewer.dims.set_current_step(0, 0)
    panel = widget.track_all_panel
    tick(qtbot, panel.divisions_check)  # untick
    type_into(qtbot, panel.discover_spin, "2")
    type_into(qtbot, panel.end_spin, "1")
    type_into(qtbot, panel.min_area_spin, "10")
    settings = widget.auto.settings
    assert settings.discover and settings.discover_every == 2
    assert not settings.divisions and settings.end_after == 1
    written = []
    widget.auto.labels_changed.connect(written.append)
    run_and_wait(widget, lambda: press(qtbot, widget.track_all_button))
    assert widget.auto.last_error is None, panel.status_label.toolTip()
    assert written == list(range(T))  # frame by frame, in order
    assert np.array_equal(cells.data[0] == 1, first[0])  # the seed stays as drawn
    assert (cells.data[4][60:63, 0:3] == 9).all()  # the user's other label stays
    # the second cell enters on frame 3: discovery (every 2 frames) finds it on frame 4
    # (random weights may lose the first cell on the way: then it is found again as new)
    new = [d for d in widget.auto.outcome.decisions if d.kind == "new"]
    assert new and {d.frame for d in new} == {4}
    entered = int(cells.data[4][12, 48])
    assert entered in {d.object_id for d in new} and entered not in cells.data[:4]
    assert panel.summary_label.text().startswith(
        f"{1 + len(new)} objects · {len(new)} new · 0 divisions"
    )
    tracks = widget.tracks_layer
    assert isinstance(tracks, Tracks) and tracks.name == "cells tracks"
    assert set(tracks.data[:, 0].astype(int)) <= {1} | {d.object_id for d in new}
    assert 1 in tracks.data[:, 0] and entered in tracks.data[:, 0]
    assert tuple(tracks.scale) == (2, 0.5, 0.5) and tuple(tracks.translate) == (0, 3, 4)
    row = tracks.data[(tracks.data[:, 0] == 1) & (tracks.data[:, 1] == 0)][0]
    ys, xs = np.nonzero(first[0])
    assert np.allclose(row[2:], (ys.mean(), xs.mean()))
    # a second run updates the same Tracks layer
    run_and_wait(widget, lambda: press(qtbot, widget.track_all_button))
    assert [x.name for x in viewer.layers].count("cells tracks") == 1


class GatedTracker(ScriptedTracker):
    """The scripted tracker, held on frame 3 until the test lets it go."""

    gate = threading.Event()

    def propagate(self, start_frame=None, reverse=False, max_frames=None):
        if start_frame == 3:
            assert self.gate.wait(30)
        yield from super().propagate(start_frame, reverse, max_frames)


def test_cancel_mid_run_keeps_the_frames_written(add_widget, run_and_wait, qtbot):
    stack = two_cells(frames=10)
    viewer, widget = add_widget(stack)
    trackers = []

    def factory(frames, **kwargs):
        trackers.append(GatedTracker(frames, [], **kwargs))
        return trackers[-1]

    widget.use_tracker_factory(factory)
    widget.use_segmenter(bright_blobs(stack))
    GatedTracker.gate.clear()
    viewer.dims.set_current_step(0, 0)
    panel = widget.track_all_panel
    tick(qtbot, panel.discover_check)  # untick: no discovery
    assert not widget.auto.settings.discover
    written = []
    widget.auto.labels_changed.connect(written.append)
    with qtbot.waitSignal(widget.idle, timeout=30_000):
        press(qtbot, widget.track_all_button)  # no labels on frame 0: segments everything
        assert panel.cancel_button.isEnabled() and not panel.track_button.isEnabled()
        # divisions on: frames come one frame late, so frame 1 is written when 3 is held
        qtbot.waitUntil(lambda: 1 in written, timeout=10_000)
        press(qtbot, panel.cancel_button)
        GatedTracker.gate.set()
    output = widget._output_layer()
    assert written[:2] == [0, 1] and max(written) < 9
    assert output.data[0].any() and output.data[1].any()  # kept
    assert not output.data[max(written) + 1 :].any()
    assert panel.summary_label.text().endswith("(cancelled)")
    assert not panel.cancel_button.isEnabled() and panel.track_button.isEnabled()
    assert widget.tracks_layer is not None  # the tracks of what was done


def test_dividing_cells_end_in_a_tracks_layer_with_the_parent_graph(
    add_widget, run_and_wait, qtbot
):
    images, gt = make_dividing_cells()
    parents = lineage_from_labels(gt)
    viewer, widget = add_widget(images, scale=(1, 0.3, 0.3))
    widget.use_tracker_factory(lambda frames, **kwargs: GroundTruthTracker(gt, parents))
    widget.use_segmenter(ground_truth_segmenter(gt))  # SAM 2 finding every nucleus
    viewer.dims.set_current_step(0, 0)
    run_and_wait(widget, lambda: press(qtbot, widget.segment_all_button))
    output = widget._output_layer()
    assert len(set(np.unique(output.data[0]).tolist()) - {0}) == 5
    assert not output.data[1:].any()
    run_and_wait(widget, lambda: press(qtbot, widget.track_all_button))  # seeds: frame 0
    assert widget.auto.last_error is None, widget.track_all_panel.status_label.toolTip()
    outcome = widget.auto.outcome
    divided = outcome.lineage.divisions()
    assert len(divided) == 2 and all(len(d) == 2 for d in divided.values())
    assert widget.track_all_panel.summary_label.text().startswith(
        "10 objects · 1 new · 2 divisions"
    )
    tracks = widget.tracks_layer
    assert tracks is not None and tuple(tracks.scale) == (1, 0.3, 0.3)
    graph = {int(k): [int(p) for p in v] for k, v in tracks.graph.items()}
    assert graph == {d: [p] for p, ds in divided.items() for d in ds}
    # every frame holds the objects of the ground truth, under the run's ids
    for t in (0, 15, 29):  # (discovery every 5 frames finds the entering one on 15)
        assert len(np.unique(output.data[t])) == len(np.unique(gt[t])), t


class ClosableTracker(GatedTracker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed = threading.Event()

    def close(self):
        self.closed.set()


def test_closing_the_widget_stops_track_all_and_closes_its_tracker(add_widget, qtbot):
    stack = two_cells(frames=10)
    viewer, widget = add_widget(stack)
    trackers = []

    def factory(frames, **kwargs):
        trackers.append(ClosableTracker(frames, [], **kwargs))
        return trackers[-1]

    widget.use_tracker_factory(factory)
    widget.use_segmenter(bright_blobs(stack))
    GatedTracker.gate.clear()
    viewer.dims.set_current_step(0, 0)
    written = []
    widget.auto.labels_changed.connect(written.append)
    press(qtbot, widget.track_all_button)
    qtbot.waitUntil(lambda: 1 in written, timeout=10_000)
    widget.close()
    GatedTracker.gate.set()
    qtbot.waitUntil(trackers[-1].closed.is_set, timeout=10_000)
    qtbot.waitUntil(lambda: widget.auto.worker is None, timeout=10_000)
    assert max(written) < 4


def test_track_all_with_the_real_network_alone(add_widget, run_and_wait, small_model, qtbot):
    """Nothing stood in: the small random-weight SAM 2 segments everything on the first frame,
    tracks, discovers and looks for divisions through the stack (the masks mean nothing, the
    run must complete and fill the Labels and Tracks layers)."""
    stack = two_cells()
    viewer, widget = add_widget(stack)
    widget.use_model(small_model, "small (test)")
    viewer.dims.set_current_step(0, 0)
    panel = widget.track_all_panel
    type_into(qtbot, panel.grid_spin, "6")
    type_into(qtbot, panel.quality_spin, "0")
    type_into(qtbot, panel.stability_spin, "0")
    type_into(qtbot, panel.discover_spin, "2")
    assert widget.auto.settings.divisions  # on by default
    written = []
    widget.auto.labels_changed.connect(written.append)
    run_and_wait(widget, lambda: press(qtbot, widget.track_all_button))
    assert widget.auto.last_error is None, panel.status_label.toolTip()
    assert written == list(range(T))
    output = widget._output_layer()
    outcome = widget.auto.outcome
    seeds = [d.object_id for d in outcome.decisions if d.kind == "seed"]
    assert seeds and set(np.unique(output.data[0]).tolist()) - {0} <= set(seeds)
    assert set(np.unique(output.data).tolist()) - {0} <= set(outcome.lineage.spans)
    tracks = widget.tracks_layer
    assert isinstance(tracks, Tracks)
    assert set(tracks.data[:, 0].astype(int)) == set(np.unique(output.data).tolist()) - {0}
    assert panel.summary_label.text().startswith(f"{len(outcome.lineage)} objects")


def test_track_all_without_weights_says_so_and_writes_nothing(
    add_widget, run_and_wait, qtbot, weights_env, monkeypatch
):
    """No model loaded and none on disk: pressing Track all reports what is missing once,
    writes no label, and leaves the panel ready."""
    import dataclasses
    import socket

    from napari_sam2.weights import MODEL_REGISTRY

    with socket.socket() as probe:  # a port where nothing listens: no download either
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = "sam2.1_hiera_tiny"
    url = f"http://127.0.0.1:{port}/{name}.pt"
    monkeypatch.setitem(MODEL_REGISTRY, name, dataclasses.replace(MODEL_REGISTRY[name], url=url))
    viewer, widget = add_widget(two_cells())
    viewer.dims.set_current_step(0, 0)
    panel = widget.track_all_panel
    run_and_wait(widget, lambda: press(qtbot, widget.track_all_button))
    assert widget.auto.last_error is not None
    status = panel.status_label.text()
    assert status.startswith("SAM 2: Track all failed") and name in status, status
    output = widget._output_layer()
    assert output is None or not output.data.any()
    assert widget.tracks_layer is None
    assert panel.track_button.isEnabled() and panel.segment_button.isEnabled()
