"""Automatic tracking from Python (``napari_sam2.api.track_all``) and the command line
(``napari-sam2 track STACK --auto``), end to end with the small random-weight test network.

The masks mean nothing with random weights; these tests check that the pieces agree: labels,
lineage, presence table, decisions, and the files (labels, CTC with parents, GEFF, decisions,
run record), and that bad input is refused before anything is written.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from napari_sam2.api import AutoTrackResult, track_all
from napari_sam2.tracking.track_all import TrackAllSettings
from small_model import moving_blob_stack

FRAMES = 8
SIZE = 64


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return moving_blob_stack(frames=FRAMES, size=SIZE)


def seed_plane() -> np.ndarray:
    """The disc of frame 0 as label 5, and a patch of background as label 9."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    plane = np.zeros((SIZE, SIZE), np.uint16)
    plane[(yy - SIZE // 2) ** 2 + (xx - SIZE // 4) ** 2 < (SIZE // 8) ** 2] = 5
    plane[48:58, 40:50] = 9
    return plane


def check_consistent(result: AutoTrackResult, frames: set[int]) -> None:
    """Labels, lineage, table and decisions describe the same run."""
    labels = np.asarray(result.labels)
    assert labels.shape == (FRAMES, SIZE, SIZE) and labels.dtype == np.uint16
    assert result.frames_written == frames
    for t in set(range(FRAMES)) - frames:
        assert not labels[t].any()
    spans = result.lineage.spans
    rows = {(r.object_id, r.frame): r for r in result.table.rows}
    for t in sorted(frames):
        for k in np.unique(labels[t]):
            if k == 0:
                continue
            k = int(k)
            assert k in spans, f"label {k} on frame {t} is no track"
            assert spans[k].first_frame <= t <= spans[k].last_frame
            assert rows[(k, t)].present and rows[(k, t)].area > 0
    assert {r.frame for r in result.table.rows} <= frames
    assert {r.object_id for r in result.table.rows} <= set(spans)
    for k, span in spans.items():
        if span.parent_id:
            assert span.parent_id in spans
            assert any(
                d.kind == "division" and d.object_id == span.parent_id and k in d.related
                for d in result.decisions
            )
    kinds = {d.kind for d in result.decisions}
    assert kinds <= {"seed", "new", "division", "end"}


def test_track_all_from_seed_labels(small_model, stack):
    seeds = seed_plane()
    seen = []
    result = track_all(
        stack,
        model=small_model,
        seeds=seeds,
        device="cpu",
        settings={"discover_every": 0},
        on_frame=lambda step: seen.append(step.frame_index),
    )
    assert seen == list(range(FRAMES))  # every frame once, in order
    check_consistent(result, set(range(FRAMES)))
    seeded = [(d.frame, d.object_id) for d in result.decisions if d.kind == "seed"]
    assert seeded == [(0, 5), (0, 9)]
    assert {5, 9} <= set(result.lineage.spans)
    assert all(d.kind != "new" for d in result.decisions)  # discovery off
    assert result.parents == {
        k: s.parent_id for k, s in result.lineage.spans.items() if s.parent_id
    }


def test_track_all_seeds_from_a_stack_plane_or_a_file(small_model, stack, tmp_path):
    seeds = np.zeros((FRAMES, SIZE, SIZE), np.uint16)
    seeds[2] = seed_plane()
    result = track_all(
        stack, model=small_model, seeds=seeds, start_frame=2, device="cpu", max_frames=3
    )
    check_consistent(result, {2, 3, 4, 5})
    assert all(d.frame >= 2 for d in result.decisions)

    path = tmp_path / "seeds.tif"
    tifffile.imwrite(path, seed_plane())
    from_file = track_all(stack, model=small_model, seeds=path, device="cpu", max_frames=1)
    assert [d.object_id for d in from_file.decisions if d.kind == "seed"] == [5, 9]


def test_track_all_segments_everything_without_seeds(small_model, stack):
    """A segmenter of our own (the bright disc, by threshold) stands in for segment
    everything, so that there is something to seed; then the model's own segment everything
    runs as a whole (random weights: it may find nothing)."""
    result = track_all(
        stack,
        model=small_model,
        device="cpu",
        segmenter=lambda t: [np.asarray(stack[t]) > 120],
        settings=TrackAllSettings(discover_every=2),
    )
    check_consistent(result, set(range(FRAMES)))
    assert [(d.kind, d.object_id) for d in result.decisions if d.frame == 0] == [("seed", 1)]
    assert 1 in result.lineage

    plain = track_all(
        stack,
        model=small_model,
        device="cpu",
        max_frames=2,
        settings={"everything": {"points_per_side": 4}},
    )
    check_consistent(plain, {0, 1, 2})


def test_track_all_stops_when_asked(small_model, stack):
    count = []
    result = track_all(
        stack,
        model=small_model,
        seeds=seed_plane(),
        device="cpu",
        on_frame=lambda step: count.append(step.frame_index),
        should_stop=lambda: len(count) >= 3,
    )
    check_consistent(result, {0, 1, 2})


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        (np.zeros((SIZE, SIZE), np.uint16), "hold no object"),
        (np.ones((SIZE, SIZE + 1), np.uint16), "do not match the frames"),
        (np.ones((SIZE, SIZE), np.float32), "integer labels"),
        (np.ones((2, SIZE, SIZE), np.uint16), "no frame 3"),
    ],
)
def test_track_all_refuses_bad_seeds_before_the_model_loads(stack, seeds, message):
    with pytest.raises((ValueError, TypeError), match=message):
        # an unknown model name would fail later, when it loads: the seeds fail first
        track_all(stack, model={"not": "a config"}, seeds=seeds, start_frame=3, device="cpu")


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, stack) -> dict[str, Path]:
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, stack, imagej=True)
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, seed_plane())
    return {"stack": path, "seeds": seeds, "out": tmp_path / "results"}


def test_cli_auto_writes_every_output(files, model_args, capsys):
    geff = pytest.importorskip("geff")
    out = files["out"]
    argv = ["track", str(files["stack"]), "--auto", "--seeds", str(files["seeds"])]
    argv += ["--out", str(out), "--discover-every", "0", "--end-after", "2", *model_args]
    argv += ["--division-min-ratio", "0.5", "--division-min-part-area", "20"]
    argv += ["--division-frames", "3", "--new-max-overlap", "0.1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    names = {"labels.tif", "presence.csv", "ctc", "lineage.geff", "decisions.json", "run.json"}
    assert {p.name for p in out.iterdir()} == names

    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (FRAMES, SIZE, SIZE)
    decisions = json.loads((out / "decisions.json").read_text())
    assert decisions["seeds"] == str(files["seeds"])
    assert decisions["settings"]["discover_every"] == 0
    assert decisions["settings"]["end_after"] == 2
    assert decisions["settings"]["division_min_ratio"] == 0.5
    assert decisions["settings"]["division_min_part_area"] == 20
    assert decisions["settings"]["division_frames"] == 3
    assert decisions["settings"]["new_max_overlap"] == 0.1
    assert [(d["kind"], d["object_id"]) for d in decisions["decisions"]][:2] == [
        ("seed", 5),
        ("seed", 9),
    ]
    tracks = {t["track_id"]: t for t in decisions["tracks"]}
    assert {5, 9} <= set(tracks)
    present = {(int(k), t) for t in range(FRAMES) for k in np.unique(labels[t]) if k}
    assert {k for k, _ in present} <= set(tracks)

    graph, metadata = geff.read(str(out / "lineage.geff"))
    nodes = {(d["track_id"], d["frame"]) for _, d in graph.nodes(data=True)}
    assert nodes == present
    parents = {k: t["parent_id"] for k, t in tracks.items() if t["parent_id"]}
    division_edges = {
        (graph.nodes[a]["track_id"], graph.nodes[b]["track_id"])
        for a, b in graph.edges
        if graph.nodes[a]["track_id"] != graph.nodes[b]["track_id"]
    }
    assert division_edges == {(p, k) for k, p in parents.items() if any(j == k for j, _ in present)}

    ctc = (out / "ctc" / "res_track.txt").read_text().split("\n")
    assert len([line for line in ctc if line]) >= len({k for k, _ in present})
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True and record["frames_written"] == FRAMES
    assert record["auto"]["tracks"] == len(tracks)
    assert {"geff", "decisions", "ctc"} <= set(record["outputs"])
    assert any(i["role"] == "seed labels" for i in record["inputs"])


def test_cli_auto_segment_everything_and_name_tif(files, model_args, capsys):
    out = files["out"].parent / "res" / "cells.tif"
    argv = ["track", str(files["stack"]), "--auto", "--points-per-side", "4", "--out", str(out)]
    argv += ["--no-divisions", "--max-frames", "2", "--new-min-area", "10", *model_args]
    assert cli.main(argv) == 0, capsys.readouterr().err
    names = {p.name for p in out.parent.iterdir()}
    assert names == {
        "cells.tif",
        "cells.csv",
        "cells_ctc",
        "cells.geff",
        "cells.decisions.json",
        "cells.run.json",
    }
    decisions = json.loads((out.parent / "cells.decisions.json").read_text())
    assert decisions["seeds"] == "segment everything"
    assert decisions["settings"]["divisions"] is False
    assert decisions["settings"]["everything"] == {"points_per_side": 4}
    assert json.loads((out.parent / "cells.run.json").read_text())["frames_written"] == 3


def test_cli_auto_stopped_by_a_signal_writes_the_frames_done(files, model_args, capsys):
    class StopAfterThree(cli.StopSignals):
        polls = 0

        def requested(self) -> bool:
            self.polls += 1
            if self.polls >= 3 and self.received is None:
                self.received = signal.SIGTERM
            return self.received is not None

    out = files["out"]
    argv = ["track", str(files["stack"]), "--auto", "--seeds", str(files["seeds"])]
    argv += ["--out", str(out), *model_args]
    args = cli.build_parser().parse_args(argv)
    args.argv = argv
    assert cli.run_track(args, StopAfterThree()) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is False and record["frames_written"] == 3
    labels = tifffile.imread(out / "labels.tif")
    assert not labels[3:].any()
    assert (out / "lineage.geff").is_dir() and (out / "decisions.json").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to track: give --prompts PROMPTS"),
        (["--seeds", "SEEDS"], "--seeds only apply with --auto"),
        (["--auto", "--prompts", "SEEDS"], "--auto finds the objects by itself"),
        (["--auto", "--direction", "reverse"], "--direction reverse is not possible"),
        (["--auto", "--discover-every", "-1"], "--discover-every must be >= 0"),
        (["--auto", "--points-per-side", "0"], "--points-per-side must be >= 1"),
        (["--auto", "--division-min-ratio", "1.5"], "--division-min-ratio must be between"),
        (["--division-frames", "3"], "--division-frames only apply with --auto"),
        (["--auto", "--seeds", "MISSING"], "does not exist"),
        (["--auto", "--seeds", "WIDE"], "do not match the frames"),
        (["--auto", "--start", "99"], "--start 99 is beyond"),
    ],
)
def test_cli_auto_refusals_write_nothing(files, model_args, capsys, extra, message):
    swap = {
        "SEEDS": str(files["seeds"]),
        "MISSING": str(files["seeds"].with_name("missing.tif")),
        "WIDE": str(files["seeds"].with_name("wide.tif")),
    }
    tifffile.imwrite(swap["WIDE"], np.ones((SIZE, SIZE + 4), np.uint16))
    out = files["out"] / "deep"
    argv = ["track", str(files["stack"]), "--out", str(out)]
    argv += [swap.get(a, a) for a in extra] + model_args
    assert cli.main(argv) == cli.EXIT_ERROR
    assert message in capsys.readouterr().err
    assert not files["out"].exists()


def test_cli_auto_never_overwrites_its_seeds(files, model_args, capsys):
    """Seeding from an earlier run's labels into the same folder is refused, even with
    --overwrite: the labels output would replace the seed file."""
    out = files["out"]
    base = ["track", str(files["stack"]), "--auto", "--out", str(out), "--max-frames", "1"]
    assert cli.main([*base, "--seeds", str(files["seeds"]), *model_args]) == 0
    before = (out / "labels.tif").read_bytes()
    argv = [*base, "--seeds", str(out / "labels.tif"), "--overwrite", *model_args]
    assert cli.main(argv) == cli.EXIT_ERROR
    assert "would overwrite the seed labels" in capsys.readouterr().err
    assert (out / "labels.tif").read_bytes() == before
    # earlier results need --overwrite; with it the GEFF is replaced whole
    assert cli.main([*base, "--seeds", str(files["seeds"]), *model_args]) == cli.EXIT_ERROR
    argv = [*base, "--seeds", str(files["seeds"]), "--overwrite", *model_args]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["labels.tif", "presence.csv", "ctc", "lineage.geff", "decisions.json", "run.json"]
    )
