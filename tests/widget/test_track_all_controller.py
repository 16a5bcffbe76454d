"""The Track all controller without Qt or a viewer: Segment all, Track all, cancel, failures,
the label rules (the user's labels stay, gaps stay gaps) and the Tracks layer data."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.tracking.lineage import Decision, Lineage
from napari_sam2.widget.propagation import InlineRunner, SessionSpec
from napari_sam2.widget.track_all_controller import (
    AutoTarget,
    TrackAllController,
    add_new_objects,
    frame_points,
    summary_text,
    tracks_for_layer,
    write_auto_frame,
)

T, H, W = 8, 32, 32


def square(y, x, r=3, shape=(H, W)):
    mask = np.zeros(shape, bool)
    mask[max(0, y - r) : y + r, max(0, x - r) : x + r] = True
    return mask


def truth() -> np.ndarray:
    """(T, H, W) labels: 1 moves right and divides into 2 and 3 on frame 4; 4 enters on 5."""
    gt = np.zeros((T, H, W), np.uint16)
    for t in range(T):
        if t < 4:
            gt[t][square(10, 5 + t)] = 1
        else:
            gt[t][square(6, 5 + t)] = 2
            gt[t][square(16, 5 + t)] = 3
        if t >= 5:
            gt[t][square(25, 25)] = 4
    return gt


class FakeTracker:
    def __init__(self, frames):
        self.frames = frames
        self.closed = False

    def segment_everything(self, frame_index, **options):
        self.options = options
        return [{"segmentation": square(20, 20)}]

    def close(self):
        self.closed = True


@dataclass
class FakeAutoFrame:
    frame_index: int
    labels: np.ndarray
    result: object


class FakeTrackAll:
    """Plays the ground truth back as TrackAll would: the seeds, the division of 1 on frame 4
    (daughters 2 and 3) and the new object 4 on frame 5."""

    def __init__(self, tracker, settings, segmenter, gt):
        self.tracker, self.settings, self.segmenter, self.gt = tracker, settings, segmenter, gt
        self.lineage = Lineage()
        self.decisions: list[Decision] = []
        self.seeded_with = None
        self.closed = False

    def seed_from_labels(self, frame, labels):
        self.seeded_with = ("labels", frame, np.array(labels))
        ids = [int(k) for k in np.unique(labels) if k]
        for k in ids:
            self.lineage.start(k, frame)
            self.decisions.append(Decision(frame, "seed", k))
        return ids

    def seed_from_everything(self, frame):
        masks = self.segmenter(frame)
        self.seeded_with = ("everything", frame, len(masks))
        ids = list(range(1, len(masks) + 1))
        for k in ids:
            self.lineage.start(k, frame)
            self.decisions.append(Decision(frame, "seed", k))
        return ids

    def run(self, start_frame=None, max_frames=None):
        try:
            for t in range(start_frame, T):
                plane = self.gt[t]
                for k in (int(v) for v in np.unique(plane) if v):
                    if k not in self.lineage:
                        parent = 1 if k in (2, 3) else 0
                        kind = "division" if parent else "new"
                        self.lineage.start(k, t, parent)
                        self.decisions.append(Decision(t, kind, k))
                    self.lineage.seen(k, t)
                ids = tuple(int(v) for v in np.unique(plane) if v)
                yield FakeAutoFrame(t, plane.copy(), SimpleNamespace(object_ids=ids))
        finally:
            self.closed = True


class Harness:
    def __init__(self, labels=None, frame=0, gt=None):
        self.labels = np.zeros((T, H, W), np.uint16) if labels is None else labels
        self.frame = frame
        self.gt = truth() if gt is None else gt
        self.trackers: list[FakeTracker] = []
        self.runs: list[FakeTrackAll] = []
        self.auto = TrackAllController(InlineRunner(), self.prepare, self.make_tracker)
        self.auto.track_all_factory = self.factory
        self.events: dict[str, list] = {"status": [], "failed": [], "progress": [], "frames": []}
        self.auto.status_changed.connect(lambda *a: self.events["status"].append(a))
        self.auto.failed.connect(lambda *a: self.events["failed"].append(a))
        self.auto.progress_changed.connect(lambda *a: self.events["progress"].append(a))
        self.auto.labels_changed.connect(self.events["frames"].append)

    def prepare(self):
        data = np.zeros((T, H, W), np.uint8)
        plan = AxisPlan.from_shape(data.shape, 0)
        labels = plan.labels_view(self.labels)  # a new view each job, as in the widget
        spec = SessionSpec(("k",), data, plan, None, None, ("model",), labels)
        return AutoTarget(spec, self.frame)

    def make_tracker(self, spec, frames, **kwargs):
        self.trackers.append(FakeTracker(frames))
        return self.trackers[-1]

    def factory(self, tracker, settings, segmenter):
        self.runs.append(FakeTrackAll(tracker, settings, segmenter, self.gt))
        return self.runs[-1]


# --- label rules ---------------------------------------------------------------------------------


def test_new_objects_skip_what_is_labelled_and_start_above_the_given_id():
    plane = np.zeros((H, W), np.uint16)
    plane[square(10, 10)] = 7
    masks = [square(10, 10), square(20, 20), square(21, 21), square(2, 28, r=1)]
    new, ids = add_new_objects(plane, masks, first_id=8, min_area=5, max_overlap=0.2)
    assert ids == [8]  # the labelled one, the overlapping one and the small one are left out
    assert np.array_equal(new != 0, square(20, 20)) and not new[plane != 0].any()


def test_an_auto_frame_keeps_the_users_labels_and_leaves_gaps():
    plane = np.zeros((H, W), np.uint16)
    plane[square(5, 5)] = 9  # drawn by the user
    plane[square(20, 20)] = 2  # object 2 of the run, absent on this frame now
    run = np.zeros((H, W), np.uint16)
    run[square(6, 6)] = 1  # overlaps the user's 9: 9 wins
    out = write_auto_frame(plane, run, owned={1, 2})
    assert (out[square(5, 5)] == 9).all()
    assert 2 not in out  # a gap, not a stale mask
    assert (out == 1).sum() == (square(6, 6) & ~square(5, 5)).sum()


def test_frame_points_are_centroids_and_areas():
    plane = np.zeros((H, W), np.uint16)
    plane[2:4, 10:14] = 5
    rows = frame_points(3, plane)
    assert rows.tolist() == [[5.0, 3.0, 2.5, 11.5, 8.0]]


def test_tracks_gathered_frame_by_frame_are_those_of_the_outputs():
    from napari_sam2.outputs.lineage import tracks_layer_data
    from napari_sam2.widget.track_all_controller import _tracks_from_points

    gt = truth()
    lineage = Lineage()
    for k, first, parent in ((1, 0, 0), (2, 4, 1), (3, 4, 1), (4, 5, 0)):
        lineage.start(k, first, parent)
        lineage.seen(k, T - 1 if k != 1 else 3)
    gathered = _tracks_from_points([frame_points(t, gt[t]) for t in range(T)], lineage)
    data, graph, properties = tracks_layer_data(gt, lineage)
    np.testing.assert_allclose(gathered.data, np.asarray(data, float))
    assert gathered.graph == {k: list(v) for k, v in dict(graph).items()}
    np.testing.assert_allclose(gathered.properties["area"], properties["area"])


def test_tracks_of_a_time_z_stack_sit_at_the_tracked_slice():
    plan = AxisPlan.from_shape((5, 7, 32, 32), 0, fixed={1: 4})
    rows = tracks_for_layer(np.array([[1, 2, 10.0, 11.0]]), plan)
    assert rows.tolist() == [[1, 2, 4, 10.0, 11.0]]


def test_summary_counts_objects_new_divisions_and_ends():
    lineage = Lineage()
    for k in (1, 2, 3, 4):
        lineage.start(k, 0)
    decisions = [Decision(0, "seed", 1), Decision(3, "new", 4), Decision(5, "division", 1)]
    decisions.append(Decision(6, "end", 4))
    assert summary_text(lineage, decisions) == "4 objects · 1 new · 1 division · 1 ended"
    assert summary_text(Lineage(), [], cancelled=True).endswith("(cancelled)")


# --- Segment all ------------------------------------------------------------------------------


def test_segment_all_adds_objects_on_that_frame_only_above_the_layers_labels():
    h = Harness(frame=3)
    h.labels[6][square(5, 5)] = 4  # the user's object on another frame
    h.auto.segmenter = lambda t: [square(10, 10), square(20, 20), square(20, 21)]
    assert h.auto.segment_all()
    assert set(np.unique(h.labels[3])) == {0, 5, 6}  # above 4: no merge with the other frame
    assert (h.labels[6] == 4).sum() == square(5, 5).sum()
    assert not np.delete(h.labels, [3, 6], axis=0).any()
    assert h.auto.summary == "frame 3: 2 new objects (3 found)"
    assert h.trackers[-1].closed and not h.auto.busy
    # pressed again: nothing new (each mask is labelled now), nothing lost
    before = h.labels.copy()
    h.auto.segment_all()
    assert np.array_equal(before, h.labels)


def test_segment_all_uses_the_trackers_segment_everything_with_the_panels_thresholds():
    h = Harness()
    h.auto.configure(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=8)
    h.auto.segment_all()
    assert h.trackers[-1].options == {
        "points_per_side": 8,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    assert (h.labels[0] == 1).sum() == square(20, 20).sum()


# --- Track all --------------------------------------------------------------------------------


def test_track_all_seeds_from_the_frames_labels_and_writes_from_there_on():
    h = Harness(frame=2)
    h.labels[2] = h.gt[2]  # the seeds the user drew (or segmented)
    h.labels[0][square(28, 3)] = 9  # the user's label before the start: untouched
    finished = []
    h.auto.finished.connect(finished.append)
    assert h.auto.track_all()
    run = h.runs[-1]
    assert run.seeded_with[0] == "labels" and run.seeded_with[1] == 2
    assert np.array_equal(h.labels[2:], h.gt[2:])
    assert (h.labels[0] == 9).sum() == square(28, 3).sum() and not h.labels[1].any()
    assert h.events["frames"] == list(range(2, T))
    assert h.events["progress"][-1][1:] == (6, 6)
    assert h.events["progress"][-1][0].startswith("track all: frame 6 of 6")
    outcome = finished[-1]
    assert not outcome.cancelled and outcome.frames_written == 6
    tracks = outcome.tracks
    assert set(tracks.data[:, 0].astype(int)) == {1, 2, 3, 4}
    assert tracks.graph == {2: [1], 3: [1]}
    first = tracks.data[tracks.data[:, 0] == 1][0]
    assert first[1] == 2 and np.allclose(first[2:], (9.5, 6.5))  # centroid of frame 2
    assert h.auto.summary == "4 objects · 1 new · 2 divisions · 0 ended"
    assert run.closed and h.trackers[-1].closed


def test_track_all_without_labels_on_the_frame_segments_everything():
    h = Harness(frame=0)
    h.auto.segmenter = lambda t: [square(10, 5)]
    h.auto.track_all()
    assert h.runs[-1].seeded_with == ("everything", 0, 1)


def test_cancel_keeps_the_frames_written_and_still_gives_tracks():
    h = Harness(frame=0)
    h.labels[0] = h.gt[0]
    h.labels[7][square(28, 3)] = 9  # the user's, on a frame the run does not reach
    h.auto.labels_changed.connect(lambda t: h.auto.cancel() if t == 3 else None)
    finished = []
    h.auto.finished.connect(finished.append)
    h.auto.track_all()
    assert np.array_equal(h.labels[:4], h.gt[:4])
    assert not h.labels[4:7].any() and (h.labels[7] == 9).any()
    assert finished[-1].cancelled and finished[-1].frames_written == 4
    assert h.auto.summary.endswith("(cancelled)")
    assert set(finished[-1].tracks.data[:, 0].astype(int)) == {1}
    assert h.runs[-1].closed and not h.auto.busy


def test_a_second_run_replaces_the_first_runs_labels_only():
    h = Harness(frame=0)
    h.labels[0] = h.gt[0]
    h.auto.track_all()
    h.labels[6][square(2, 2, r=1)] = 50  # drawn after the first run
    h.gt = h.gt.copy()
    h.gt[5:][h.gt[5:] == 4] = 0  # the second run finds no object 4
    h.auto.track_all()
    assert 4 not in h.labels  # the first run's object 4 is gone, not stale
    assert (h.labels[6] == 50).any()


def test_a_failed_run_says_why_and_keeps_the_labels():
    h = Harness(frame=0)
    h.labels[0] = h.gt[0]

    def broken(tracker, settings, segmenter):
        run = FakeTrackAll(tracker, settings, segmenter, h.gt)

        def run_then_fail(start_frame=None, max_frames=None):
            for i, item in enumerate(FakeTrackAll.run(run, start_frame)):
                if i == 2:
                    raise RuntimeError("out of memory")
                yield item

        run.run = run_then_fail
        return run

    h.auto.track_all_factory = broken
    h.auto.track_all()
    short, detail, exc = h.events["failed"][-1]
    assert short == "SAM 2: Track all failed: out of memory"
    assert "Labels already written are kept" in detail
    assert np.array_equal(h.labels[:2], h.gt[:2]) and h.trackers[-1].closed
    assert h.events["status"][-1][2] is True and not h.auto.busy


def test_nothing_to_track_is_a_clear_message():
    h = Harness(frame=0)
    h.auto.segmenter = lambda t: []
    h.auto.track_all()
    assert "no objects to track on frame 0" in h.events["failed"][-1][0]


def test_work_elsewhere_blocks_track_all():
    h = Harness()
    h.auto.blocked = lambda: "wait for the running propagation to finish (or cancel it) first"
    assert not h.auto.track_all()
    assert h.events["failed"][-1][0].startswith("SAM 2: wait for the running propagation")
    assert not h.trackers


def test_settings_map_to_the_engines_settings():
    from napari_sam2.tracking import track_all

    h = Harness()
    settings = h.auto.configure(discover=False, divisions=False, end_after=7, min_area=12)
    engine = settings.track_all_settings()
    assert isinstance(engine, track_all.TrackAllSettings)
    assert engine.discover_every == 0 and engine.divisions is False
    assert engine.end_after == 7 and engine.new_min_area == 12
    assert engine.everything["pred_iou_thresh"] == pytest.approx(0.8)
    assert (
        h.auto.configure(discover=True, discover_every=3).track_all_settings().discover_every == 3
    )
    with pytest.raises(TypeError):
        h.auto.configure(nonsense=1)
