"""The widget's Qt-free parts without a viewer or Qt: progress lines, the job queue of the
propagation controller, the prompt controller and the export axes."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget.label_export import axis_letter, tiff_axes
from napari_sam2.widget.progress import PropagationProgress, format_duration, progress_text
from napari_sam2.widget.prompt_controller import PromptController
from napari_sam2.widget.propagation import (
    InlineRunner,
    PropagationController,
    RunSettings,
    SessionSpec,
    _Job,
    failure_message,
)
from scripted_tracker import ScriptedObject, ScriptedTracker

# --- progress ----------------------------------------------------------------------------------


def test_progress_text_gives_frame_speed_and_time_left():
    assert progress_text("forward", 12, 40, 12 / 1.8) == (
        "forward: frame 12 of 40 · 1.8 frames/s · 16 s left"
    )
    assert progress_text("reverse", 0, 5, 0.0) == "reverse: frame 0 of 5 · starting"
    assert progress_text("forward", 40, 40, 125.0) == (
        "forward: frame 40 of 40 · 0.3 frames/s · done in 2 min 05 s"
    )
    assert "20 s/frame" in progress_text("forward", 3, 10, 60.0)  # slow CPU runs
    assert format_duration(3 * 3600 + 4 * 60) == "3 h 04 min"


def test_progress_counts_each_leg_on_its_own_clock():
    now = [100.0]
    progress = PropagationProgress(clock=lambda: now[0])
    assert progress.text == ""
    progress.start_leg("forward", 4)
    for _ in range(2):
        now[0] += 0.5
        progress.frame_done()
    assert progress.text == "forward: frame 2 of 4 · 2.0 frames/s · 1 s left"
    for _ in range(2):
        now[0] += 0.5
        progress.frame_done()
    now[0] += 30  # the elapsed time of a finished leg stays as it ended
    assert progress.text == "forward: frame 4 of 4 · 2.0 frames/s · done in 2 s"
    progress.start_leg("reverse", 3)
    assert progress.text == "reverse: frame 0 of 3 · starting"


# --- the propagation controller --------------------------------------------------------------


class Harness:
    """A controller over a (8, 32, 32) stack with a scripted tracker, run inline."""

    def __init__(self, fail_on: str | None = None):
        self.labels = np.zeros((8, 32, 32), np.uint16)
        self.prompts = PromptSetStub()
        self.trackers: list[ScriptedTracker] = []
        self.fail_on = fail_on
        plan = AxisPlan.from_shape((8, 32, 32), 0, None, {})
        self.spec = SessionSpec(
            key=("image",),
            data=np.zeros((8, 32, 32), np.uint8),
            plan=plan,
            channel=None,
            contrast_limits=(0.0, 255.0),
            model_key=("scripted", "cpu"),
            labels=self.labels,
        )
        self.runs = PropagationController(InlineRunner(), self.prepare, self.make_tracker)
        self.events: list[tuple] = []
        self.runs.progress_changed.connect(lambda *a: self.events.append(("progress", *a)))
        self.runs.failed.connect(lambda *a: self.events.append(("failed", *a)))
        self.runs.status_changed.connect(lambda *a: self.events.append(("status", *a)))
        self.runs.idle.connect(lambda: self.events.append(("idle",)))

    def prepare(self):
        return self.spec, self.prompts.value

    def make_tracker(self, spec, frames, **kwargs):
        tracker = ScriptedTracker(frames, [ScriptedObject(1, center=(10, 10))], **kwargs)
        if self.fail_on:

            def broken(*args, **kw):
                raise RuntimeError("no memory left on /a/long/path/" + "x" * 200)

            setattr(tracker, self.fail_on, broken)
        tracker.closed = False
        tracker.close = lambda: setattr(tracker, "closed", True)
        self.trackers.append(tracker)
        return tracker


class PromptSetStub:
    def __init__(self):
        from napari_sam2.tracking.layer_prompts import PointPrompt, PromptSet

        self.value = PromptSet(
            points={(2, 1): PointPrompt(np.array([[10.0, 10.0]]), np.array([1]))}
        )


def test_controller_runs_prompts_then_both_legs_with_progress():
    h = Harness()
    h.runs.apply_prompts()
    assert h.runs.session is not None and h.labels[2].max() == 1
    assert h.trackers[-1].fill_hole_area == 8
    h.runs.propagate(RunSettings("both"))
    assert all(h.labels[t].max() == 1 for t in range(8))
    lines = [e[1] for e in h.events if e[0] == "progress"]
    assert lines[0] == "forward: frame 0 of 6 · starting"
    assert lines[6].startswith("forward: frame 6 of 6")
    assert lines[7] == "reverse: frame 0 of 3 · starting"
    assert lines[-1].startswith("reverse: frame 3 of 3")
    assert h.events[-1] == ("idle",) and not h.runs.busy


def test_controller_reports_one_short_failure_and_drops_what_waits():
    h = Harness(fail_on="add_points")
    # a click's two layer events queue the same prompts twice, then a run is asked for
    h.runs.queue.extend([_Job("prompts"), _Job("prompts"), _Job("propagate", RunSettings())])
    h.runs.start_next()
    assert not h.runs.queue and not h.runs.busy
    failures = [e for e in h.events if e[0] == "failed"]
    assert len(failures) == 1
    short, detail = failures[0][1], failures[0][2]
    assert (
        short.startswith("SAM 2: applying the prompts failed (RuntimeError)") and len(short) < 120
    )
    assert "/a/long/path/" in detail and "kept" in detail
    assert h.runs.session is None and h.trackers[-1].closed  # the next edit starts over
    assert isinstance(h.runs.last_error, RuntimeError)


def test_failure_message_names_the_cause_of_a_wrapped_error():
    class WorkError(Exception):
        pass

    try:
        try:
            raise MemoryError("12 GiB")
        except MemoryError as exc:
            raise WorkError("12 GiB") from exc
    except WorkError as wrapped:
        short, detail = failure_message("propagate", wrapped)
    assert short.startswith("SAM 2: propagation failed (MemoryError)")
    assert "12 GiB" in detail


def test_cancel_and_close_stop_runs_and_close_the_tracker():
    h = Harness()
    h.runs.apply_prompts()
    seen = []

    def stop_at_frame_4(*args):
        if h.runs.progress.done == 4:
            seen.append(h.runs.progress.done)
            h.runs.cancel()

    h.runs.progress_changed.connect(stop_at_frame_4)
    h.runs.propagate(RunSettings("forward", 0))
    assert [t for t in range(8) if h.labels[t].max()] == [0, 1, 2, 3]
    assert h.runs.session.edited_frames  # not a finished run: the next one starts over
    h.runs.progress_changed.disconnect(stop_at_frame_4)
    h.runs.close()
    assert h.trackers[-1].closed and h.runs.session is None
    h.runs.apply_prompts()
    assert len(h.trackers) == 1  # a closed controller starts nothing


# --- the prompt controller -------------------------------------------------------------------


def test_next_object_is_above_the_labels_of_the_output_layer():
    # labels drawn by hand or by Segment all: a new object with their id would take them over
    drawn = Labels(np.zeros((5, 40, 40), np.uint16))
    drawn.data[1, 5:9, 5:9] = 7
    prompts = PromptController(tracked_ids=lambda: [4], output=lambda: drawn)
    assert prompts.next_object() == 8
    assert PromptController(tracked_ids=lambda: [4]).next_object() == 5  # no output layer yet


def test_prompt_controller_reads_layers_and_numbers_objects():
    image = Image(np.zeros((5, 40, 40)), scale=(2, 1, 1), units=("mm", "mm", "mm"))
    plan = AxisPlan.from_shape((5, 40, 40), 0, None, {})
    prompts = PromptController(tracked_ids=lambda: [4])
    points, shapes, masks = prompts.create_layers(image, plan)
    assert tuple(points.units) == tuple(image.units)
    edits = []
    prompts.edited.connect(lambda: edits.append(1))
    prompts.set_layers(points, shapes, masks)
    points.add([[2, 10, 12]])  # the layer's data coordinates: frame 2
    assert edits  # the user's click asks for the prompts to be applied
    read = prompts.read(plan, image)
    assert list(read.points) == [(2, 1)]
    np.testing.assert_allclose(read.points[(2, 1)].points, [[10, 12]])
    assert prompts.next_object() == 5  # above the tracker's object 4
    assert points.feature_defaults["object_id"][0] == 5 and masks.selected_label == 5
    points.selected_data = {0}
    prompts.toggle_polarity()  # a selected point flips, the click mode stays
    assert not points.features["positive"][0] and prompts.positive
    points.selected_data = set()
    prompts.toggle_polarity()  # nothing selected: the click mode flips
    assert not prompts.positive and not points.feature_defaults["positive"][0]
    n = len(edits)
    prompts.remove_object_prompts(1)
    assert len(points.data) == 0 and len(edits) == n  # removing is not an edit to apply


# --- export axes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "units", "axes"),
    [
        (("z", "y", "x"), None, "ZYX"),
        (("t", "y", "x"), None, "TYX"),
        (("-3", "-2", "-1"), None, "TYX"),  # napari's default names: a time-lapse
        (("0", "1", "2"), ("mm", "mm", "mm"), "ZYX"),  # a length along the stack: a volume
        (("t", "z", "y", "x"), None, "TZYX"),
        (("z", "t", "y", "x"), None, "ZTYX"),  # reordered to TZYX when written
        (("axis", "z", "y", "x"), None, "TZYX"),
    ],
)
def test_tiff_axes_follow_the_layer_labels_and_units(labels, units, axes):
    if units is not None:
        units = Image(np.zeros((2,) * len(labels)), units=units).units
    assert tiff_axes(labels, units) == axes


def test_axis_letter_reads_time_units():
    seconds = Image(np.zeros((2, 2, 2)), units=("s", "um", "um")).units[0]
    assert axis_letter("-3", seconds) == "T" and axis_letter("slice") == "Z"


# --- the axes controller -----------------------------------------------------------------------


def test_axes_controller_plans_a_4d_stack_at_the_viewer_position():
    from napari.components import Dims

    from napari_sam2.widget.image_axes import AxesController

    dims = Dims(ndim=4, axis_labels=("t", "z", "y", "x"))
    dims.range = ((0, 4, 1), (4, 16, 2), (0, 15, 1), (0, 15, 1))  # the image's world extent
    image = Image(np.zeros((5, 7, 16, 16), np.uint8), scale=(1, 2, 1, 1), translate=(0, 4, 0, 0))
    axes = AxesController(dims)
    assert axes.plan() is None and axes.summary() == "add an image layer"
    axes.image = image
    assert axes.stack_axes() == [("axis 0: t (5)", 0), ("axis 1: z (7)", 1)]
    assert axes.channel_axes()[0] == ("none", None)
    assert "no axis to track along" in axes.summary()
    dims.set_point(1, 4 + 2 * 3)  # world z = translate + index * scale: z index 3
    axes.frame_axis = 0
    plan = axes.plan()
    assert plan.num_frames == 5 and plan.fixed == {1: 3}
    assert axes.summary() == "5 frames; fixed at the viewer's position: axis 1 = 3"
    axes.go_to_frame(4)
    assert axes.current_frame() == 4
    axes.channel_axis = 1  # z as channels: three choices would add RGB, seven do not
    assert [value for _, value in axes.channels()] == list(range(7))
