"""Lineage outputs of automatic tracking: CTC parents, GEFF files read back with geff's reader,
and napari Tracks layer data, on hand-built labels and lineages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sam2.outputs import (
    OutputWriteError,
    ctc_tracks,
    export_ctc,
    tracks_layer_data,
    write_geff,
)
from napari_sam2.tracking.lineage import Lineage

geff = pytest.importorskip("geff")


def dividing() -> tuple[np.ndarray, Lineage]:
    """Track 1 on frames 0-2 and 4 (a gap on 3), dividing into 2 and 3 on frame 5; track 4
    on frames 1-5 with no parent."""
    labels = np.zeros((6, 24, 24), np.uint16)
    labels[0:3, 2:6, 2:6] = 1
    labels[4, 2:6, 2:6] = 1
    labels[5, 1:4, 1:4] = 2  # 9 px, centroid (2, 2)
    labels[5, 5:9, 5:9] = 3  # 16 px, centroid (6.5, 6.5)
    labels[1:6, 15:20, 15:20] = 4
    lineage = Lineage()
    lineage.start(1, 0)
    lineage.seen(1, 4)
    lineage.start(4, 1)
    lineage.seen(4, 5)
    lineage.start(2, 5, parent_id=1)
    lineage.start(3, 5, parent_id=1)
    return labels, lineage


def parents_of(lineage: Lineage) -> dict[int, int]:
    return {k: s.parent_id for k, s in lineage.spans.items() if s.parent_id}


def test_ctc_without_parents_is_unchanged():
    labels, _ = dividing()
    tracks, ids = ctc_tracks(labels)
    # the gap splits track 1: its second run is label 5 with parent 1
    assert tracks == [(1, 0, 2, 0), (2, 5, 5, 0), (3, 5, 5, 0), (4, 1, 5, 0), (5, 4, 4, 1)]
    assert ids[(1, 4)] == 5 and ids[(1, 0)] == 1


def test_ctc_daughters_get_the_parents_last_run(tmp_path):
    labels, lineage = dividing()
    tracks, _ = ctc_tracks(labels, parents_of(lineage))
    # the daughters' parent is 5, the run of track 1 after its gap, which ends before them
    assert tracks == [(1, 0, 2, 0), (2, 5, 5, 5), (3, 5, 5, 5), (4, 1, 5, 0), (5, 4, 4, 1)]
    written = export_ctc(labels, tmp_path / "ctc", parents=parents_of(lineage))
    assert written == tracks
    lines = (tmp_path / "ctc" / "res_track.txt").read_text().splitlines()
    assert lines == ["1 0 2 0", "2 5 5 5", "3 5 5 5", "4 1 5 0", "5 4 4 1"]
    assert sorted(p.name for p in (tmp_path / "ctc").iterdir())[0] == "mask000.tif"


def test_ctc_parent_that_never_appears_before_is_no_parent():
    labels, _ = dividing()
    # 4 is present on the daughters' frame: no run of it ends before them; 9 does not exist
    tracks, _ = ctc_tracks(labels, {2: 4, 3: 9})
    assert (2, 5, 5, 0) in tracks and (3, 5, 5, 0) in tracks


def read_geff(path: Path):
    graph, metadata = geff.read(str(path))
    return graph, metadata


def test_geff_nodes_edges_and_metadata_read_back(tmp_path):
    labels, lineage = dividing()
    path = write_geff(tmp_path / "lineage.geff", labels, lineage)
    assert path == tmp_path / "lineage.geff" and path.is_dir()
    graph, metadata = read_geff(path)
    assert graph.is_directed()
    nodes = dict(graph.nodes(data=True))
    # one node per track and frame present: 4 + 1 + 1 + 5
    assert len(nodes) == 11
    by_key = {(d["track_id"], d["frame"]): n for n, d in nodes.items()}
    assert set(by_key) == {(1, t) for t in (0, 1, 2, 4)} | {(2, 5), (3, 5)} | {
        (4, t) for t in range(1, 6)
    }
    n2 = nodes[by_key[(2, 5)]]
    assert (n2["t"], n2["y"], n2["x"], n2["area"]) == (5.0, 2.0, 2.0, 9)
    assert nodes[by_key[(1, 0)]]["y"] == pytest.approx(3.5)
    assert {
        d["lineage_id"] for (k, _), n in by_key.items() if k in (1, 2, 3) for d in [nodes[n]]
    } == {1}
    assert nodes[by_key[(4, 3)]]["lineage_id"] == 4
    edges = {
        (nodes[a]["track_id"], nodes[a]["frame"], nodes[b]["track_id"], nodes[b]["frame"])
        for a, b in graph.edges
    }
    expected = {(1, 0, 1, 1), (1, 1, 1, 2), (1, 2, 1, 4)}  # across the gap on frame 3
    expected |= {(1, 4, 2, 5), (1, 4, 3, 5)}  # the division: parent's last node to daughters
    expected |= {(4, t, 4, t + 1) for t in range(1, 5)}
    assert edges == expected
    assert [a.name for a in metadata.axes] == ["t", "y", "x"]
    assert [a.type for a in metadata.axes] == ["time", "space", "space"]
    assert [a.unit for a in metadata.axes] == ["frame", "pixel", "pixel"]
    assert metadata.track_node_props == {"lineage": "lineage_id", "tracklet": "track_id"}
    geff.validate_structure(str(path))


def test_geff_scale_units_and_axis_names(tmp_path):
    labels, lineage = dividing()
    path = write_geff(
        tmp_path / "g.geff",
        labels,
        lineage,
        scale=(60.0, 0.5, 0.25),
        axis_names=("time", "row", "col"),
        units=("s", "um", "um"),
    )
    graph, metadata = read_geff(path)
    d = next(d for _, d in graph.nodes(data=True) if d["track_id"] == 3)
    assert (d["time"], d["row"], d["col"], d["frame"]) == (300.0, 3.25, 1.625, 5)
    assert [(a.name, a.unit) for a in metadata.axes] == [
        ("time", "second"),
        ("row", "micrometer"),
        ("col", "micrometer"),
    ]


def test_geff_one_daughter_is_no_tracklet(tmp_path):
    """A parent with a single daughter joins it in one maximal path: ``track_id`` is then no
    valid GEFF tracklet id and is not declared as one."""
    labels, lineage = dividing()
    labels[labels == 3] = 0
    graph, metadata = read_geff(write_geff(tmp_path / "g.geff", labels, lineage))
    assert metadata.track_node_props == {"lineage": "lineage_id"}
    assert graph.number_of_edges() == 3 + 1 + 4


def test_geff_empty_labels(tmp_path):
    graph, _ = read_geff(write_geff(tmp_path / "g.geff", np.zeros((3, 8, 8), np.uint16), None))
    assert graph.number_of_nodes() == 0 and graph.number_of_edges() == 0


def test_geff_replaces_a_geff_whole_or_not_at_all(tmp_path, monkeypatch):
    labels, lineage = dividing()
    path = tmp_path / "lineage.geff"
    write_geff(path, labels, None)
    first, _ = read_geff(path)
    write_geff(path, labels, lineage)  # replaces the earlier GEFF
    assert read_geff(path)[0].number_of_edges() == first.number_of_edges() + 2

    import geff.core_io

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(geff.core_io, "write_arrays", broken)
    with pytest.raises(OutputWriteError, match="lineage.geff.*disk is full"):
        write_geff(path, labels, None)
    assert read_geff(path)[0].number_of_edges() == first.number_of_edges() + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lineage.geff"]  # no temporary left


def test_geff_never_replaces_something_else(tmp_path):
    labels, lineage = dividing()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    other = tmp_path / "file.geff"
    other.write_text("keep")
    for path in (folder, other):
        with pytest.raises(FileExistsError, match="not a GEFF"):
            write_geff(path, labels, lineage)
    assert (folder / "notes.txt").read_text() == "keep" and other.read_text() == "keep"


def test_tracks_layer_data(tmp_path):
    labels, lineage = dividing()
    data, graph, properties = tracks_layer_data(labels, lineage)
    assert data.shape == (11, 4)
    keys = [tuple(row[:2]) for row in data]
    assert keys == sorted(keys)  # by track id, then time
    assert graph == {2: [1], 3: [1]} == lineage.graph()
    assert properties["area"].shape == (11,) and properties["area"][0] == 16
    np.testing.assert_array_equal(properties["frame"], data[:, 1])
    assert data[data[:, 0] == 3].tolist() == [[3.0, 5.0, 6.5, 6.5]]
    scaled, _, _ = tracks_layer_data(labels, lineage, scale=(2.0, 0.5, 0.5))
    np.testing.assert_allclose(scaled[:, 1:], data[:, 1:] * [2.0, 0.5, 0.5])
    # a daughter without any frame present is left out of the graph (napari refuses it)
    labels[labels == 3] = 0
    assert tracks_layer_data(labels, lineage)[1] == {2: [1]}


def test_tracks_layer_data_makes_a_napari_tracks_layer():
    pytest.importorskip("napari")
    from napari.layers import Tracks

    labels, lineage = dividing()
    data, graph, properties = tracks_layer_data(labels, lineage)
    layer = Tracks(data, graph=graph, features=properties)
    assert layer.graph == {2: [1], 3: [1]}
    assert len(layer.data) == 11


def test_outputs_of_a_tracked_dividing_sample(tmp_path):
    """TrackAll on the dividing-cells sample with the ground-truth stand-ins (no network): the
    GEFF passes geff's graph, tracklet and lineage checks, its division edges are the
    lineage's, and the CTC parents and Tracks graph agree with it."""
    from geff.validate.data import ValidationConfig

    from ground_truth import GroundTruthTracker, ground_truth_segmenter, lineage_from_labels
    from napari_sam2._sample_data import make_dividing_cells
    from napari_sam2.tracking.track_all import TrackAll

    _, gt = make_dividing_cells()
    run = TrackAll(
        GroundTruthTracker(gt, lineage_from_labels(gt)), None, ground_truth_segmenter(gt)
    )
    run.seed_from_everything(0)
    labels = np.stack([frame.labels for frame in run.run()])
    lineage = run.lineage
    assert len(lineage.divisions()) == 2

    path = write_geff(tmp_path / "lineage.geff", labels, lineage)
    checks = ValidationConfig(graph=True, lineage=True, tracklet=True)
    graph, metadata = geff.read(str(path), data_validation=checks)
    assert metadata.track_node_props == {"lineage": "lineage_id", "tracklet": "track_id"}
    nodes = graph.nodes
    crossing = {
        (nodes[a]["track_id"], nodes[b]["track_id"])
        for a, b in graph.edges
        if nodes[a]["track_id"] != nodes[b]["track_id"]
    }
    assert crossing == {(p, d) for p, ds in lineage.divisions().items() for d in ds}
    for a, b in graph.edges:
        assert nodes[a]["frame"] < nodes[b]["frame"]

    _, graph_layer, _ = tracks_layer_data(labels, lineage)
    assert graph_layer == lineage.graph()
    tracks, ids = ctc_tracks(labels, parents_of(lineage))
    by_label = {row[0]: row for row in tracks}
    for daughter, parent in parents_of(lineage).items():
        first = min(t for (k, t) in ids if k == daughter)
        ctc_parent = by_label[ids[(daughter, first)]][3]
        assert ctc_parent in {c for (k, _), c in ids.items() if k == parent}  # a run of it
        assert by_label[ctc_parent][2] < first  # that ends before the daughter begins
