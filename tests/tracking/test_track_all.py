"""Track every cell (issue 13): TrackAll's rules on ground-truth stand-ins, its use of the real
tracker (frame by frame = one propagation), and CTC DET / SEG / TRA on two time-lapses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ground_truth import (
    GroundTruthTracker,
    ctc_scores,
    ground_truth_segmenter,
    lineage_from_labels,
    matched_divisions,
    write_ctc_ground_truth,
    write_ctc_result,
)
from napari_sam2.outputs import LabelsWriter, PresenceTable
from napari_sam2.tracking import AutoFrame, TrackAll, TrackAllSettings, Tracker
from napari_sam2.tracking.track_all import compose_labels
from small_model import moving_blob_stack

H = W = 64


def rect(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def stack(frames: list[dict[int, np.ndarray]]) -> np.ndarray:
    """(T, H, W) labels from one {label: mask} dict per frame."""
    out = np.zeros((len(frames), H, W), np.uint16)
    for t, objects in enumerate(frames):
        for k, mask in objects.items():
            out[t][mask] = k
    return out


def run_all(gt, parents=None, settings=None, segmenter=None, seeds=None, **kwargs):
    """TrackAll on the ground truth, seeded with frame 0's labels; returns (TrackAll, frames,
    tracker)."""
    tracker = GroundTruthTracker(gt, parents if parents is not None else {})
    settings = settings or TrackAllSettings(**kwargs)
    track = TrackAll(
        tracker, settings, segmenter or ground_truth_segmenter(gt), presence=PresenceTable()
    )
    track.seed_from_labels(0, gt[0] if seeds is None else seeds)
    frames = list(track.run())
    return track, frames, tracker


def dividing(small: tuple[int, int], big=(10, 10), split_at=5, frames=10) -> tuple:
    """Label 1 (a rectangle) divides on ``split_at`` into 2 (``big``) and 3 (``small``)."""
    whole = rect(20, 10, 12, 12)
    seq = [{1: whole}] * split_at
    seq += [{2: rect(20, 10, *big), 3: rect(20, 40, *small)}] * (frames - split_at)
    return stack(seq), {2: 1, 3: 1}


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("discover_every", -1),
        ("new_min_area", -1),
        ("new_max_overlap", 1.5),
        ("division_min_ratio", -0.1),
        ("division_min_part_area", 0),
        ("division_frames", 0),
        ("end_after", -1),
    ],
)
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrackAllSettings(**{field: value})


# --- divisions ----------------------------------------------------------------------------------


def test_a_division_ends_the_parent_and_starts_two_daughters_on_the_split_frame():
    gt, parents = dividing(small=(10, 10))
    track, frames, tracker = run_all(gt, parents)
    assert [f.frame_index for f in frames] == list(range(10))
    assert all(isinstance(f, AutoFrame) and f.labels.dtype == np.uint16 for f in frames)
    span = track.lineage.spans
    assert (span[1].first_frame, span[1].last_frame) == (0, 4)
    assert track.lineage.divisions() == {1: [2, 3]}
    assert (span[2].first_frame, span[3].first_frame) == (5, 5)
    assert span[2].last_frame == span[3].last_frame == 9
    (division,) = [d for d in track.decisions if d.kind == "division"]
    assert (division.frame, division.object_id, division.related) == (5, 1, (2, 3))
    assert "ratio 1.00 >= 0.3" in division.reason and "frames 5-6" in division.reason
    # The held-back frame 5 was relabelled: each part is its daughter, the parent is gone.
    for t in range(5, 10):
        assert 1 not in frames[t].labels
        assert frames[t].result.object_ids.count(1) == 0
        assert {int(frames[t].labels[gt[t] == k][0]) for k in (2, 3)} == {2, 3}
        np.testing.assert_array_equal(frames[t].labels > 0, gt[t] > 0)
    assert 1 not in tracker.object_ids
    assert ("add_mask", 6, 2) in tracker.calls and ("add_mask", 6, 3) in tracker.calls


def test_daughters_keep_their_part_through_the_held_frames():
    # Three frames held back; the daughters move, each part must stay with its daughter.
    seq = [{1: rect(20, 10, 12, 12)}] * 3
    for t in range(7):
        seq.append({2: rect(10 + t, 10, 8, 8), 3: rect(40 - t, 40, 8, 8)})
    gt = stack(seq)
    track, frames, _ = run_all(gt, {2: 1, 3: 1}, division_frames=4)
    assert track.lineage.divisions() == {1: [2, 3]}
    daughter_of = {}
    for t in range(3, 10):
        for k in (2, 3):
            got = set(np.unique(frames[t].labels[gt[t] == k]).tolist())
            assert len(got) == 1
            daughter_of.setdefault(k, got).update(got)
    assert daughter_of[2] != daughter_of[3] and all(len(v) == 1 for v in daughter_of.values())


@pytest.mark.parametrize(
    "small, big, divides",
    [
        ((5, 6), (10, 10), True),  # 30 / 100 = 0.30 >= 0.3
        ((4, 7), (10, 10), False),  # 28 / 100 = 0.28: too unequal
        ((3, 5), (5, 8), True),  # 15 px part, ratio 0.375
        ((2, 7), (5, 8), False),  # 14 px part < 15
    ],
)
def test_division_thresholds(small, big, divides):
    gt, parents = dividing(small=small, big=big)
    track, frames, _ = run_all(gt, parents)
    assert bool(track.lineage.divisions()) is divides
    if not divides:  # the object is followed whole, as one label
        assert [d.kind for d in track.decisions] == ["seed"]
        assert all(set(np.unique(f.labels)) == {0, 1} for f in frames)


def test_a_short_lived_split_is_not_a_division():
    whole, halves = rect(20, 10, 12, 20), rect(20, 10, 12, 8) | rect(20, 22, 12, 8)
    seq = [{1: whole}] * 4 + [{1: halves}] * 2 + [{1: whole}] * 4
    gt = stack(seq)
    for frames_needed, divides in ((3, False), (2, True), (1, True)):
        track, frames, _ = run_all(gt, division_frames=frames_needed)
        assert bool(track.lineage.divisions()) is divides, frames_needed
        if not divides:
            assert set(track.lineage.spans) == {1}
            assert all(f.labels[gt[f.frame_index] > 0].min() == 1 for f in frames)


def test_divisions_can_be_switched_off():
    gt, parents = dividing(small=(10, 10))
    track, frames, _ = run_all(gt, parents, divisions=False)
    assert track.lineage.divisions() == {}
    assert all(set(np.unique(f.labels)) == {0, 1} for f in frames)


def test_a_split_still_there_on_the_last_frame_divides():
    gt, parents = dividing(small=(10, 10), split_at=9)
    track, frames, _ = run_all(gt, parents, division_frames=3)
    assert track.lineage.divisions() == {1: [2, 3]}
    assert track.lineage.spans[1].last_frame == 8
    (division,) = [d for d in track.decisions if d.kind == "division"]
    assert "on frame 9 (1 of 3 frames needed; the stack ends there)" in division.reason
    assert 1 not in frames[9].labels and set(np.unique(frames[9].labels)) == {0, 2, 3}


# --- frames are yielded late, in order ----------------------------------------------------------


@pytest.mark.parametrize(
    "division_frames, divisions, lag", [(3, True, 2), (1, True, 0), (3, False, 0)]
)
def test_frames_come_in_order_with_a_lag_of_division_frames_minus_one(
    division_frames, divisions, lag
):
    gt, parents = dividing(small=(10, 10))
    tracker = GroundTruthTracker(gt, parents)
    settings = TrackAllSettings(division_frames=division_frames, divisions=divisions)
    track = TrackAll(tracker, settings, ground_truth_segmenter(gt))
    track.seed_from_labels(0, gt[0])
    seen = []
    for frame in track.run():
        propagated = [c[1] for c in tracker.calls if c[0] == "propagate"]
        seen.append(frame.frame_index)
        assert propagated[-1] == min(frame.frame_index + lag, 9)
    assert seen == list(range(10))


def test_run_from_a_start_frame_for_a_number_of_frames():
    gt, parents = dividing(small=(10, 10))
    tracker = GroundTruthTracker(gt, parents)
    track = TrackAll(tracker, TrackAllSettings(), ground_truth_segmenter(gt))
    track.seed_from_labels(2, gt[2])
    assert [f.frame_index for f in track.run(max_frames=3)] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="max_frames"):
        track.run(max_frames=-1)
    with pytest.raises(ValueError, match="outside the stack"):
        track.run(start_frame=10)
    fresh = TrackAll(GroundTruthTracker(gt), TrackAllSettings(), ground_truth_segmenter(gt))
    with pytest.raises(ValueError, match="nothing seeded"):
        fresh.run()


# --- new objects ----------------------------------------------------------------------------------


def test_candidates_must_be_large_enough_and_mostly_unlabelled():
    tracked = rect(10, 10, 10, 10)  # 100 px
    gt = stack([{1: tracked}] * 6)
    candidates = {
        "half": rect(10, 15, 10, 10),  # 50 % over object 1: not new
        "edge": rect(10, 18, 10, 10),  # 20 %: new (<= 0.2)
        "small": rect(50, 50, 5, 5) | rect(55, 50, 1, 4),  # 29 px: too small
        "enough": rect(50, 30, 5, 6),  # 30 px: new
        "again": rect(50, 30, 5, 6),  # the same again: labelled by the one accepted before
    }
    calls = []

    def segmenter(t):
        calls.append(t)
        return list(candidates.values())

    track, frames, tracker = run_all(gt, segmenter=segmenter, discover_every=5)
    assert calls == [5]  # every 5th frame after the start frame only
    news = [d for d in track.decisions if d.kind == "new"]
    assert [d.object_id for d in news] == [2, 3]
    assert "overlap 0.20 <= 0.2" in news[0].reason and "area 100 px >= 30" in news[0].reason
    assert "area 30 px >= 30" in news[1].reason
    assert frames[5].result.object_ids == (1, 2, 3)
    assert set(np.unique(frames[5].labels)) == {0, 1, 2, 3}
    assert track.lineage.spans[2].first_frame == 5


def test_a_candidate_half_covered_is_not_new_and_one_barely_over_is_not_either():
    tracked = rect(10, 10, 10, 10)
    gt = stack([{1: tracked}] * 3)
    for candidate, new in (
        (rect(10, 15, 10, 10), False),  # 0.50
        (rect(10, 17, 10, 10), False),  # 0.30
        (rect(13, 17, 7, 3) | rect(40, 30, 8, 10), False),  # 21 / 101 = 0.21
        (rect(10, 18, 10, 10), True),  # 0.20
    ):
        track, _, _ = run_all(gt, segmenter=lambda t, c=candidate: [c], discover_every=1)
        assert any(d.kind == "new" for d in track.decisions) is new


def test_discovery_can_be_switched_off():
    gt = stack(
        [{1: rect(10, 10, 10, 10)}] * 3 + [{1: rect(10, 10, 10, 10), 2: rect(40, 40, 9, 9)}] * 3
    )
    track, frames, _ = run_all(gt, discover_every=0)
    assert set(track.lineage.spans) == {1}
    track, frames, _ = run_all(gt, discover_every=3)
    assert set(track.lineage.spans) == {1, 2} and track.lineage.spans[2].first_frame == 3


# --- ends and ids ---------------------------------------------------------------------------------


def test_an_object_absent_m_frames_continues_and_m_plus_one_ends():
    cell = rect(10, 10, 10, 10)
    for gap, ends in ((3, False), (4, True)):
        seq = [{1: cell}] * 3 + [{}] * gap + [{1: cell}] * 3
        gt = stack(seq)
        track, frames, tracker = run_all(gt, discover_every=0, end_after=3)
        back = 3 + gap
        if ends:
            (end,) = [d for d in track.decisions if d.kind == "end"]
            assert (end.frame, end.object_id) == (2, 1)
            assert "absent on frames 3-6 (4 consecutive frames > 3)" in end.reason
            assert ("remove_object", -1, 1) in tracker.calls
            assert 1 not in frames[back].labels  # no label after its end
            assert track.lineage.spans[1].last_frame == 2
        else:
            assert [d.kind for d in track.decisions] == ["seed"]
            assert 1 in frames[back].labels  # the same object after its gap
            assert all(1 not in frames[t].labels for t in range(3, back))
            assert track.lineage.spans[1].last_frame == len(seq) - 1


def test_ids_are_never_reused():
    cell, other = rect(10, 10, 10, 10), rect(40, 40, 10, 10)
    # 7 (seeded) ends; a cell appearing where it was gets a new id, above everything used.
    seq = [{3: other, 7: cell}] * 2 + [{3: other}] * 4 + [{3: other, 9: cell}] * 4
    gt = stack(seq)
    track, frames, _ = run_all(gt, discover_every=2, end_after=1)
    assert [d.kind for d in track.decisions] == ["seed", "seed", "end", "new"]
    new = track.decisions[-1]
    assert (new.object_id, new.frame) == (8, 6)
    assert 7 not in frames[6].labels and 8 in frames[6].labels
    with pytest.raises(ValueError, match="never reused"):
        track.seed_from_labels(0, gt[0])


def test_new_ids_start_at_first_new_id():
    cell, other = rect(10, 10, 10, 10), rect(40, 40, 10, 10)
    gt = stack([{3: other}] * 2 + [{3: other, 5: cell}] * 3)
    tracker = GroundTruthTracker(gt, {})
    # e.g. label 20 drawn by the user on another frame: found objects must not take it
    track = TrackAll(
        tracker, TrackAllSettings(discover_every=1), ground_truth_segmenter(gt), first_new_id=21
    )
    track.seed_from_labels(0, gt[0])
    frames = list(track.run())
    assert [d.object_id for d in track.decisions if d.kind == "new"] == [21]
    assert 21 in frames[2].labels and set(track.lineage.spans) == {3, 21}
    with pytest.raises(ValueError, match="first_new_id"):
        TrackAll(tracker, first_new_id=0)


def test_seeds_keep_their_label_ids_and_everything_seeds_count_up():
    gt = stack([{4: rect(10, 10, 10, 10), 40: rect(40, 40, 10, 10)}] * 3)
    track, frames, _ = run_all(gt, discover_every=0)
    assert set(track.lineage.spans) == {4, 40}
    assert set(np.unique(frames[2].labels)) == {0, 4, 40}
    seeds = [d for d in track.decisions if d.kind == "seed"]
    assert seeds[0].reason == "label 4, area 100 px"

    tracker = GroundTruthTracker(gt)
    small = rect(0, 60, 2, 2)
    segment = [gt[0] == 4, gt[0] == 40, small, gt[0] == 4]
    track = TrackAll(tracker, TrackAllSettings(), lambda t: segment)
    assert track.seed_from_everything(0) == [1, 2]  # too small and already labelled: skipped
    assert tracker.object_ids == (1, 2)


def test_ids_stop_at_65535():
    gt = stack([{65535: rect(10, 10, 10, 10)}] * 3)
    with pytest.warns(RuntimeWarning, match="65535"):
        track, _, _ = run_all(gt, segmenter=lambda t: [rect(40, 40, 10, 10)], discover_every=1)
    assert set(track.lineage.spans) == {65535}


# --- records --------------------------------------------------------------------------------------


def test_presence_and_lineage_follow_the_yielded_frames():
    gt, parents = dividing(small=(10, 10))
    track, frames, _ = run_all(gt, parents)
    table = track.presence
    assert {r.frame for r in table.rows} == set(range(10))
    assert table.segments(1) == [(0, 4)]
    # the parent's row on frames 5 and 6 went to its daughters; both present from 5 on
    assert table.segments(2) == table.segments(3) == [(5, 9)]
    assert track.lineage.ctc_rows() == [(1, 0, 4, 0), (2, 5, 9, 1), (3, 5, 9, 1)]
    for d in track.decisions:
        assert any(ch.isdigit() for ch in d.reason), d


def test_labels_follow_the_labels_writer_rules():
    rng = np.random.default_rng(1)
    from napari_sam2.tracking import FrameResult

    logits = rng.normal(0, 3, (4, 20, 24)).astype(np.float32)
    logits[2, :5] = logits[0, :5]  # ties: the first listed wins
    result = FrameResult(
        3, (5, 2, 9, 11), logits, np.array([1, 2, 3, -1], np.float32), np.array([1, 1, 1, 0], bool)
    )
    expected = np.zeros((4, 20, 24), np.uint16)
    LabelsWriter(expected).write(result)
    np.testing.assert_array_equal(compose_labels(result, 20, 24), expected[3])


# --- on the real tracker --------------------------------------------------------------------------


def _blob_tracker(model):
    frames = moving_blob_stack(frames=8, size=64)
    seeds = np.zeros((64, 64), np.uint16)
    seeds[frames[0] > 100] = 3
    seeds[4:14, 40:52] = 5
    return Tracker(model, frames), seeds


def test_frame_by_frame_is_one_propagation_on_the_real_tracker(small_model):
    tracker, seeds = _blob_tracker(small_model)
    settings = TrackAllSettings(discover_every=0, divisions=False, end_after=100)
    track = TrackAll(tracker, settings, presence=PresenceTable())
    assert track.seed_from_labels(0, seeds) == [3, 5]
    auto = list(track.run())

    reference, _ = _blob_tracker(small_model)
    for k in (3, 5):
        reference.add_mask(0, k, seeds == k)
    expected = list(reference.propagate(start_frame=0))
    assert [a.frame_index for a in auto] == [r.frame_index for r in expected] == list(range(8))
    for a, r in zip(auto, expected, strict=True):
        assert a.result.object_ids == r.object_ids == (3, 5)
        np.testing.assert_array_equal(a.result.mask_logits, r.mask_logits)
        np.testing.assert_array_equal(a.result.object_score_logits, r.object_score_logits)
        labels = np.zeros((8, 64, 64), np.uint16)
        LabelsWriter(labels).write(r)
        np.testing.assert_array_equal(a.labels, labels[r.frame_index])
    assert len(track.presence) == 16


def test_closing_the_run_leaves_the_tracker_usable(small_model):
    tracker, seeds = _blob_tracker(small_model)
    track = TrackAll(tracker, TrackAllSettings(discover_every=0, division_frames=2))
    track.seed_from_labels(0, seeds)
    run = track.run()
    first = next(run)
    assert first.frame_index == 0
    run.close()
    with pytest.raises(StopIteration):
        next(run)
    # no propagation is left running: prompts and a new propagation work
    tracker.add_mask(4, 3, seeds == 3)
    assert [r.frame_index for r in tracker.propagate(start_frame=4, max_frames=1)] == [4, 5]


def test_default_segmenter_runs_segment_everything_on_the_tracker(small_model):
    tracker, seeds = _blob_tracker(small_model)
    everything = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    settings = TrackAllSettings(discover_every=3, everything=everything, new_min_area=1)
    track = TrackAll(tracker, settings)
    seeded = track.seed_from_everything(0)
    assert seeded == list(range(1, len(seeded) + 1))
    frames = list(track.run())
    assert [f.frame_index for f in frames] == list(range(8))
    ids = set(track.lineage.spans)
    for f in frames:
        assert set(np.unique(f.labels).tolist()) - {0} <= ids
        assert set(f.result.object_ids) <= ids
    assert sorted(ids) == list(range(1, max(ids) + 1))  # new ids count up, none reused


# --- acceptance: CTC metrics with the ground-truth stand-ins --------------------------------------


def track_and_score(gt: np.ndarray, tmp_path: Path, settings=None) -> dict:
    """TrackAll seeded by segmenting frame 0, on the ground-truth stand-ins; CTC scores and the
    divisions found / missed."""
    pytest.importorskip("ctc_metrics")
    parents = lineage_from_labels(gt)
    tracker = GroundTruthTracker(gt, parents)
    track = TrackAll(tracker, settings or TrackAllSettings(), ground_truth_segmenter(gt))
    track.seed_from_everything(0)
    labels = np.stack([f.labels for f in track.run()])
    found_parents = {d: p[0] for d, p in track.lineage.graph().items()}
    write_ctc_ground_truth(gt, parents, tmp_path / "01_GT")
    write_ctc_result(labels, found_parents, tmp_path / "01_RES")
    scores = ctc_scores(tmp_path / "01_RES", tmp_path / "01_GT")
    found, missed = matched_divisions(gt, parents, labels, found_parents, tolerance=1)
    scores.update(found=found, missed=missed, decisions=track.decisions)
    return scores


def test_ctc_metrics_on_the_dividing_cells_sample(tmp_path):
    from napari_sam2._sample_data import make_dividing_cells

    _, gt = make_dividing_cells()
    assert lineage_from_labels(gt) == {7: 1, 8: 1, 9: 3, 10: 3}
    scores = track_and_score(gt, tmp_path)
    assert scores["TRA"] >= 0.95, scores
    assert scores["DET"] >= 0.95 and scores["SEG"] >= 0.9, scores
    assert scores["missed"] == [] and len(scores["found"]) == 2
    # Daughters touch on their first frame here, so the split is seen one frame late.
    assert scores["fn_div(1)"] == 0 and scores["fp_div(1)"] == 0


def test_ctc_metrics_on_ctc_sim_nuclei(data_dir, tmp_path):
    gt = tifffile.imread(data_dir / "ctc_sim_nuclei" / "labels_tyx.tif")
    parents = lineage_from_labels(gt)
    assert len(set(parents.values())) == 6 and len(parents) == 12
    scores = track_and_score(gt, tmp_path)
    assert scores["TRA"] >= 0.95, scores
    assert scores["missed"] == [] and len(scores["found"]) == 6
    assert scores["fn_div(0)"] == 0 and scores["fp_div(0)"] == 0
