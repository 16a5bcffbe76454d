"""``napari-sam2 batch`` and ``napari_sam2.track_batch``: many stacks on dask.distributed.

Small generated stacks and the small test network; most tests use a LocalCluster of two
thread workers (fast), the slow ones real worker processes (the model kept per process, a
worker killed mid-run).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from small_model import moving_blob_stack

pytest.importorskip("distributed")

from napari_sam2 import cli  # noqa: E402
from napari_sam2.batch import BatchError, run_batch, stack_name  # noqa: E402


def _make_stacks(folder: Path, count: int = 4, frames: int = 4) -> Path:
    """``count`` time-lapses with a prompt file each and their manifest (one row with its own
    options, one in a subfolder); returns the manifest."""
    rows = []
    for i in range(count):
        sub = folder / ("more" if i == 3 else "")
        sub.mkdir(exist_ok=True)
        stack = moving_blob_stack(frames=frames, size=64, seed=i)
        tifffile.imwrite(sub / f"s{i}.tif", stack, photometric="minisblack")
        (sub / f"s{i}.csv").write_text("frame,y,x,object_id\n0,32,16,1\n0,5,5,2\n")
        rel = "more/" if i == 3 else ""
        options = ("forward", "0") if i == 1 else ("", "")
        rows.append([f"{rel}s{i}.tif", f"{rel}s{i}.csv", *options])
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["stack", "prompts", "direction", "fill_holes"], *rows])
    return manifest


@pytest.fixture
def small(small_config_file, small_checkpoint) -> dict:
    """run_batch's model options for the small test network on the CPU."""
    return {"config": small_config_file, "checkpoint": small_checkpoint, "device": "cpu"}


@pytest.fixture(scope="module")
def thread_client():
    """Two thread workers in this process, shared by the fast tests."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "batch_summary.csv", newline="") as f:
        return {row["stack"]: row for row in csv.DictReader(f)}


def _stamps(out: Path) -> dict[str, int]:
    return {
        name: (out / name / "run.json").stat().st_mtime_ns
        for name in os.listdir(out)
        if (out / name / "run.json").exists()
    }


def test_stack_names():
    assert stack_name("a/b.ome.tif") == "b"
    assert stack_name("ct.nii.gz") == "ct"
    assert stack_name("z.zarr/") == "z"


def test_batch_matches_track_and_resumes(
    tmp_path, small, thread_client, small_config_file, small_checkpoint
):
    from napari_sam2.api import track

    manifest = _make_stacks(tmp_path / "in")
    out = tmp_path / "out"
    summary = run_batch(manifest, out, client=thread_client, quiet=True, **small)
    assert [r.status for r in summary.rows] == ["done"] * 4, summary.rows
    assert summary.exit_status == 0
    for i, row in enumerate(summary.rows):
        folder = out / f"s{i}"
        assert {"labels.tif", "presence.csv", "run.json"} <= set(os.listdir(folder))
        assert json.loads((folder / "run.json").read_text())["complete"] is True
        stack = tmp_path / "in" / ("more" if i == 3 else "") / f"s{i}.tif"
        expected = track(
            stack,
            stack.with_suffix(".csv"),
            model=small_config_file,
            checkpoint=small_checkpoint,
            device="cpu",
            direction="forward" if i == 1 else "both",
            fill_hole_area=0 if i == 1 else 8,
        )
        np.testing.assert_array_equal(tifffile.imread(folder / "labels.tif"), expected.labels)
        assert row.frames == 4 and row.objects == 2
    table = _summary(out)
    assert set(table) == {"s0", "s1", "s2", "s3"}
    assert {"frames", "objects", "seconds", "status", "error"} <= set(table["s0"])

    # a rerun of a complete batch does nothing
    before = _stamps(out)
    again = run_batch(manifest, out, client=thread_client, quiet=True, **small)
    assert [r.status for r in again.rows] == ["skipped"] * 4
    assert _stamps(out) == before

    # as after a crash: one output gone, one record incomplete, one input changed
    (out / "s0" / "presence.csv").unlink()
    record = json.loads((out / "s2" / "run.json").read_text())
    (out / "s2" / "run.json").write_text(json.dumps({**record, "complete": False}))
    os.utime(tmp_path / "in" / "more" / "s3.csv", ns=(1, 10**18))
    before = _stamps(out)
    redo = run_batch(manifest, out, client=thread_client, quiet=True, **small)
    assert {r.stack: r.status for r in redo.rows} == {
        "s0": "done",
        "s1": "skipped",
        "s2": "done",
        "s3": "done",
    }
    after = _stamps(out)
    assert after["s1"] == before["s1"]
    assert (out / "s0" / "presence.csv").exists()
    # other model options make every stack stale
    other = run_batch(manifest, out, client=thread_client, quiet=True, random_weights=True, **small)
    assert [r.status for r in other.rows] == ["done"] * 4


def test_failures_stay_alone(tmp_path, small, thread_client):
    manifest = _make_stacks(tmp_path, count=4)
    data = (tmp_path / "s0.tif").read_bytes()
    (tmp_path / "s0.tif").write_bytes(data[: len(data) // 3])  # a truncated file
    (tmp_path / "s2.csv").write_text("frame,y,x,object_id\n9,32,16,1\n")  # beyond the stack
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["s1.tif", "nothing.csv", "", ""])
        csv.writer(f).writerow(["missing.tif", "s1.csv", "sideways", ""])
    with pytest.raises(BatchError, match="s1"):  # the two rows of s1 write one folder
        run_batch(manifest, tmp_path / "out", client=thread_client, quiet=True, **small)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-2] + [lines[-1]]) + "\n")

    summary = run_batch(manifest, tmp_path / "out", client=thread_client, quiet=True, **small)
    rows = {r.stack: r for r in summary.rows}
    assert rows["s1"].status == rows["s3"].status == "done", summary.rows
    assert summary.exit_status == 3
    assert rows["s0"].status == "failed" and "s0.tif" in rows["s0"].error
    assert rows["s2"].status == "failed" and "frame" in rows["s2"].error
    assert rows["missing"].status == "failed" and "sideways" in rows["missing"].error
    assert not (tmp_path / "out" / "s2" / "labels.tif").exists()
    table = _summary(tmp_path / "out")
    assert table["s0"]["status"] == "failed" and table["s0"]["error"]


def test_manifest_refused(tmp_path, small):
    (tmp_path / "m.csv").write_text("stack,prompts,colour\na.tif,a.csv,red\n")
    with pytest.raises(BatchError, match="unknown column 'colour'"):
        run_batch(tmp_path / "m.csv", tmp_path / "out", quiet=True, **small)
    (tmp_path / "m.csv").write_text("stack,prompts,model\na.tif,a.csv,x\n")
    with pytest.raises(BatchError, match="every stack"):
        run_batch(tmp_path / "m.csv", tmp_path / "out", quiet=True, **small)
    (tmp_path / "m.json").write_text('[{"stack": "a.tif"}]')
    with pytest.raises(BatchError, match="prompts"):
        run_batch(tmp_path / "m.json", tmp_path / "out", quiet=True, **small)
    assert cli.main(["batch", str(tmp_path / "m.json"), "--out", str(tmp_path / "o")]) == 2


def test_missing_distributed_names_the_extra(tmp_path, small, monkeypatch):
    manifest = _make_stacks(tmp_path, count=1)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(BatchError, match=r"napari-sam2\[batch\]"):
        run_batch(manifest, tmp_path / "out", quiet=True, **small)
    assert not (tmp_path / "out").exists()  # refused: nothing written


def test_json_manifest(tmp_path, small, thread_client):
    _make_stacks(tmp_path, count=2)
    items = [
        {"stack": "s0.tif", "prompts": "s0.csv", "direction": "forward"},
        {"stack": "s1.tif", "prompts": "s1.csv", "format": ["tiff", "csv", "ctc"]},
    ]
    (tmp_path / "m.json").write_text(json.dumps(items))
    summary = run_batch(
        tmp_path / "m.json", tmp_path / "out", client=thread_client, quiet=True, **small
    )
    assert [r.status for r in summary.rows] == ["done", "done"]
    assert (tmp_path / "out" / "s1" / "ctc").is_dir()


def test_output_folder_exists_before_any_stack_runs(tmp_path, small, thread_client):
    """Stacks run side by side into one new output folder: it is made before the first
    starts, so a stack that fails and tidies up after itself cannot remove it from under
    the others (a race the side-by-side stacks of test_failures_stay_alone met)."""
    manifest = _make_stacks(tmp_path, count=2)
    out = tmp_path / "new" / "out"

    def record(name: str) -> None:  # runs in the worker (the task is serialized)
        (tmp_path / f"{name}.saw-out").write_text(str(out.is_dir()))

    summary = run_batch(
        manifest, out, client=thread_client, quiet=True, before_stack=record, **small
    )
    assert [r.status for r in summary.rows] == ["done", "done"]
    seen = {name: (tmp_path / f"{name}.saw-out").read_text() for name in ("s0", "s1")}
    assert seen == {"s0": "True", "s1": "True"}


def test_output_folder_that_cannot_be_made_refuses_the_batch(tmp_path, small, thread_client):
    manifest = _make_stacks(tmp_path, count=1)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BatchError, match="cannot create the output folder"):
        run_batch(manifest, tmp_path / "file" / "out", client=thread_client, quiet=True, **small)


@pytest.mark.slow
def test_cli_worker_processes_load_the_model_once(tmp_path, model_args, capsys):
    """The command line on a local cluster of two worker processes: each loads it once."""
    manifest = _make_stacks(tmp_path / "in", count=4)
    out = tmp_path / "out"
    options = [a for a in model_args if a != "--quiet"]
    status = cli.main(["batch", str(manifest), "--out", str(out), "--workers", "2", *options])
    assert status == 0
    assert "4/4 stacks" in capsys.readouterr().err
    table = _summary(out)
    assert [row["status"] for row in table.values()] == ["done"] * 4
    loads: dict[str, int] = {}
    for row in table.values():
        loads[row["worker"]] = max(loads.get(row["worker"], 0), int(row["model_loads"]))
    assert set(loads.values()) == {1}  # every worker loaded it once, for all its stacks


@pytest.mark.slow
def test_killed_worker_is_retried(tmp_path, small):
    """A worker process dying mid-stack: dask runs the stack again on a new worker."""
    manifest = _make_stacks(tmp_path / "in", count=3)
    marker = tmp_path / "killed-once"

    def die_once(name: str) -> None:
        if name == "s1" and not marker.exists():
            marker.write_text("x")
            os._exit(1)  # as the out-of-memory killer would: no cleanup

    out = tmp_path / "out"
    summary = run_batch(manifest, out, workers=2, quiet=True, before_stack=die_once, **small)
    assert marker.exists()
    assert [r.status for r in summary.rows] == ["done"] * 3
    for i in range(3):
        assert json.loads((out / f"s{i}" / "run.json").read_text())["complete"] is True
        assert tifffile.imread(out / f"s{i}" / "labels.tif").max() >= 1


def test_own_thread_cluster_with_resources(tmp_path, small):
    """run_batch starts (and closes) its own cluster; stacks asking for a GPU unit each run on
    local workers that have one."""
    from napari_sam2 import batch

    manifest = _make_stacks(tmp_path, count=2, frames=2)
    before = set(batch._CACHE)
    summary = run_batch(
        manifest,
        tmp_path / "out",
        workers=2,
        processes=False,
        resources={"GPU": 1},
        quiet=True,
        **small,
    )
    assert [r.status for r in summary.rows] == ["done", "done"]
    assert set(batch._CACHE) == before  # its thread workers' networks went with it


def test_lazy_export():
    import napari_sam2

    assert napari_sam2.track_batch is run_batch


def test_folder_pattern_finds_each_stacks_prompts(tmp_path, small, thread_client):
    _make_stacks(tmp_path, count=3)  # s0, s1, s2 with s0.csv ... beside them
    (tmp_path / "s1.csv").rename(tmp_path / "s1_prompts.csv")
    summary = run_batch(
        tmp_path / "s*.tif", tmp_path / "out", client=thread_client, quiet=True, **small
    )
    assert sorted((r.stack, r.status) for r in summary.rows) == [
        ("s0", "done"),
        ("s1", "done"),
        ("s2", "done"),
    ]
    (tmp_path / "s2.csv").unlink()
    with pytest.raises(BatchError, match=r"s2.tif has no prompts file beside it"):
        run_batch(tmp_path / "s*.tif", tmp_path / "o2", client=thread_client, quiet=True, **small)
    with pytest.raises(BatchError, match="no stack matches"):
        run_batch(tmp_path / "x*.tif", tmp_path / "o3", client=thread_client, quiet=True, **small)
