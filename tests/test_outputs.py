"""Outputs: labels with gaps, overlaps, user labels kept, presence table, exports."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam2.outputs import (
    LabelsWriter,
    PresenceTable,
    ctc_tracks,
    export_ctc,
    export_labels_tiff,
    frame_planes,
    propagate_into,
)
from scripted_tracker import ScriptedObject, ScriptedTracker

T, H, W = 8, 40, 48


def two_objects(**first) -> ScriptedTracker:
    a = dict(object_id=1, center=(12, 8), velocity=(0, 3), radius=5, absent={3, 4})
    a.update(first)
    return ScriptedTracker(
        (T, H, W),
        objects=[ScriptedObject(**a), ScriptedObject(2, center=(28, 30), radius=7)],
    )


def prompt_both(tracker: ScriptedTracker, frame: int = 0) -> None:
    for k in (1, 2):
        tracker.add_points(frame, k, [tracker.script[k].center_at(frame)], [1])


def expected_disk(tracker: ScriptedTracker, t: int, k: int) -> np.ndarray:
    return tracker.mask_logits(t, k) > 0


def test_gap_where_absent_and_label_again_when_back() -> None:
    tracker = two_objects()
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint16)
    table = PresenceTable()
    done = [r.frame_index for r in propagate_into(tracker, LabelsWriter(labels), table)]
    assert done == list(range(T))
    for t in range(T):
        has_one = bool((labels[t] == 1).any())
        assert has_one == (t not in (3, 4))
        if has_one:
            assert np.array_equal(labels[t] == 1, expected_disk(tracker, t, 1))
        assert np.array_equal(labels[t] == 2, expected_disk(tracker, t, 2))
    assert table.segments(1) == [(0, 2), (5, 7)]
    assert table.segments(2) == [(0, 7)]
    rows = table.for_object(1)
    assert [r.frame for r in rows] == list(range(T))
    assert [r.present for r in rows] == [t not in (3, 4) for t in range(T)]
    assert rows[3].area == 0 and np.isnan(rows[3].centroid_y)
    assert rows[0].area == int(expected_disk(tracker, 0, 1).sum())
    assert rows[0].centroid_y == pytest.approx(12, abs=0.01)
    assert rows[2].centroid_x == pytest.approx(14, abs=0.01)


def test_stale_mask_is_removed_when_object_becomes_absent() -> None:
    tracker = two_objects(absent=set())
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint8)
    list(propagate_into(tracker, LabelsWriter(labels)))
    assert (labels[4] == 1).any()
    tracker.script[1].absent = {4}
    list(propagate_into(tracker, LabelsWriter(labels), start_frame=4, max_frames=0))
    assert not (labels[4] == 1).any()
    assert (labels[5] == 1).any()


def test_overlap_goes_to_the_higher_logit() -> None:
    tracker = ScriptedTracker(
        (1, 30, 30),
        objects=[
            ScriptedObject(1, center=(15, 10), radius=6),
            ScriptedObject(2, center=(15, 18), radius=6),
        ],
    )
    prompt_both(tracker)
    labels = np.zeros((1, 30, 30), np.int32)
    list(propagate_into(tracker, LabelsWriter(labels)))
    assert labels[0, 15, 13] == 1 and labels[0, 15, 15] == 2  # closer to each centre
    both = expected_disk(tracker, 0, 1) & expected_disk(tracker, 0, 2)
    assert both.any() and set(np.unique(labels[0][both])) == {1, 2}


def test_user_labels_and_unpropagated_frames_are_untouched() -> None:
    tracker = two_objects()
    prompt_both(tracker, frame=2)
    labels = np.zeros((T, H, W), np.uint16)
    labels[:, 10:16, 5:12] = 9  # painted by the user over object 1's path
    labels[0, 30:35, 0:4] = 1  # a stale 1 on a frame that will not be propagated
    before = labels.copy()
    writer = LabelsWriter(labels)
    list(propagate_into(tracker, writer, start_frame=2, max_frames=3))
    assert writer.frames_written == {2, 3, 4, 5}
    assert np.array_equal(labels[[0, 1, 6, 7]], before[[0, 1, 6, 7]])
    assert np.array_equal(labels == 9, before == 9)
    disk = expected_disk(tracker, 2, 1)
    assert np.array_equal(labels[2] == 1, disk & (before[2] != 9))


def test_correction_repropagated_changes_only_later_frames() -> None:
    tracker = two_objects(absent=set())
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint16)
    list(propagate_into(tracker, LabelsWriter(labels)))
    before = labels.copy()
    y, x = tracker.script[1].center_at(4)
    tracker.add_points(4, 1, [(y + 6, x)], [1])  # the user moves object 1 on frame 4
    list(propagate_into(tracker, LabelsWriter(labels), start_frame=4))
    assert np.array_equal(labels[:4], before[:4])
    for t in range(4, T):
        assert not np.array_equal(labels[t] == 1, before[t] == 1)
        assert labels[t][int(y + 6), int(x + 3 * (t - 4))] == 1


def test_reverse_and_both_directions() -> None:
    tracker = two_objects()
    tracker.add_points(5, 1, [tracker.script[1].center_at(5)], [1])
    labels = np.zeros((T, H, W), np.uint16)
    frames = [
        r.frame_index for r in propagate_into(tracker, LabelsWriter(labels), direction="reverse")
    ]
    assert frames == [5, 4, 3, 2, 1, 0]  # reverse without a start frame: last prompted frame
    assert (labels[0] == 1).any() and not (labels[6:] == 1).any()
    both = [
        r.frame_index
        for r in propagate_into(tracker, LabelsWriter(labels), start_frame=3, direction="both")
    ]
    assert both == [3, 4, 5, 6, 7, 3, 2, 1, 0]
    assert (labels[7] == 1).any()
    with pytest.raises(ValueError, match="direction"):
        list(propagate_into(tracker, LabelsWriter(labels), direction="sideways"))


def test_should_stop_keeps_frames_done() -> None:
    tracker = two_objects()
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint16)
    writer = LabelsWriter(labels)
    seen = []
    for r in propagate_into(tracker, writer, should_stop=lambda: len(seen) >= 3):
        seen.append(r.frame_index)
    assert seen == [0, 1, 2] and writer.frames_written == {0, 1, 2}
    assert (labels[2] == 2).any() and not labels[3:].any()


def test_nd_labels_along_a_chosen_axis_and_zarr() -> None:
    tracker = two_objects()
    prompt_both(tracker)
    tzyx = np.zeros((T, 3, H, W), np.uint16)
    list(propagate_into(tracker, LabelsWriter(tzyx, index=frame_planes(tzyx.shape, 0, {1: 1}))))
    assert not tzyx[:, [0, 2]].any() and (tzyx[:, 1] == 2).any()
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(T, H, W), dtype="u2")
    list(propagate_into(tracker, LabelsWriter(z)))
    assert np.array_equal(z[:], tzyx[:, 1])
    with pytest.raises(ValueError, match="exactly two axes"):
        frame_planes(tzyx.shape, 0)
    with pytest.raises(ValueError, match="does not match"):
        list(propagate_into(tracker, LabelsWriter(np.zeros((T, H, W + 1), np.uint8))))


def test_ids_that_do_not_fit_the_dtype_are_an_error() -> None:
    tracker = ScriptedTracker((2, 10, 10))
    tracker.add_points(0, 300, [(5, 5)], [1])
    with pytest.raises(ValueError, match="do not fit"):
        list(propagate_into(tracker, LabelsWriter(np.zeros((2, 10, 10), np.uint8))))
    with pytest.raises(TypeError, match="integer"):
        LabelsWriter(np.zeros((2, 10, 10), np.float32))


def test_presence_csv(tmp_path) -> None:
    tracker = two_objects()
    prompt_both(tracker)
    table = PresenceTable()
    list(propagate_into(tracker, LabelsWriter(np.zeros((T, H, W), np.uint8)), table))
    path = table.to_csv(tmp_path / "presence.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "object_id,frame,score_logit,present,area,centroid_y,centroid_x"
    assert len(lines) == 1 + 2 * T
    row3 = next(line for line in lines if line.startswith("1,3,"))
    assert row3.split(",")[3:] == ["0", "0", "", ""]


def test_tiff_export_round_trips_with_axes_and_scale(tmp_path) -> None:
    labels = np.zeros((3, 2, 10, 12), np.int32)
    labels[1, 1, 2:5, 3:7] = 300
    path = export_labels_tiff(
        labels, tmp_path / "l.tif", axes="TZYX", scale=(2.0, 5.0, 0.5, 0.25), unit="um"
    )
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert series.axes == "TZYX" and series.shape == labels.shape
        data = series.asarray()
        assert tif.imagej_metadata["spacing"] == 5.0 and tif.imagej_metadata["finterval"] == 2.0
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(4.0)
    assert data.dtype == np.uint16 and np.array_equal(data, labels)
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="0..65535"):
        export_labels_tiff(labels + 70000, tmp_path / "big.tif", axes="TZYX")
    with pytest.raises(ValueError, match="subset"):
        export_labels_tiff(labels, tmp_path / "bad.tif", axes="ZTYX")
    assert not (tmp_path / "big.tif").exists() and not (tmp_path / "bad.tif").exists()


def test_ctc_export_with_gap_makes_a_child_track(tmp_path) -> None:
    tracker = two_objects()
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint16)
    list(propagate_into(tracker, LabelsWriter(labels)))
    tracks = export_ctc(labels, tmp_path / "01_RES")
    assert tracks == [(1, 0, 2, 0), (2, 0, 7, 0), (3, 5, 7, 1)]
    text = (tmp_path / "01_RES" / "res_track.txt").read_text()
    assert text == "1 0 2 0\n2 0 7 0\n3 5 7 1\n"
    masks = sorted(p.name for p in (tmp_path / "01_RES").glob("mask*.tif"))
    assert masks == [f"mask{t:03d}.tif" for t in range(T)]
    m6 = tifffile.imread(tmp_path / "01_RES" / "mask006.tif")
    assert m6.dtype == np.uint16 and m6.shape == (H, W)
    assert np.array_equal(m6 == 3, labels[6] == 1) and np.array_equal(m6 == 2, labels[6] == 2)
    _, ids = ctc_tracks(labels)
    assert ids[(1, 1)] == 1 and ids[(1, 6)] == 3


def test_placeholders_without_output_leave_their_labels() -> None:
    tracker = two_objects(absent=set())
    prompt_both(tracker)
    labels = np.zeros((T, H, W), np.uint16)
    labels[6, 0:5, 0:5] = 1  # object 1 from an earlier run
    result = tracker.add_points(6, 3, [(35, 5)], [1])  # objects 1, 2: placeholders on frame 6
    assert result.has_output.tolist() == [False, False, True]
    table = PresenceTable()
    LabelsWriter(labels).write(result)
    table.record(result)
    assert (labels[6, 0:5, 0:5] == 1).all() and (labels[6] == 3).any()
    assert [r.object_id for r in table.rows] == [3]
