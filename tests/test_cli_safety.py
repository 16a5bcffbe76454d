"""Nothing the user has is lost: outputs never replace inputs, earlier results are kept unless
``--overwrite`` is given, scratch files live inside the output folder, damaged stack files and
full disks are one-line messages naming the file, a frame that cannot be read mid-run keeps
the frames done, and ``track()`` checks everything before the model loads.

Runs the command line in this process with the small random-weight network (``small_model``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from small_model import moving_blob_stack

FRAMES = 6


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    """A 6-frame (T, Y, X) stack and a point prompt on frame 0."""
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, moving_blob_stack(frames=FRAMES, size=32), metadata={"axes": "TYX"})
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[16, 8]]}]))
    return stack, prompts


def track_argv(stack: Path, prompts: Path, out: Path | str) -> list[str]:
    return ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def no_scratch_under(*folders: Path) -> bool:
    return not [p for f in folders for p in f.rglob("*") if ".napari-sam2-" in p.name]


def load_model_must_not_run(monkeypatch) -> None:
    """Make loading a network fail loudly: the checks under test must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("napari_sam2.api.load_model", refuse)


# --- outputs never replace inputs ---------------------------------------------------------


def test_out_tif_whose_csv_is_the_prompt_file_is_refused(tmp_path, inputs, model_args, capsys):
    stack, _ = inputs
    prompts = tmp_path / "run.csv"  # a napari Points CSV named like the presence table
    prompts.write_text("index,axis-0,axis-1,axis-2\n0,0,16,8\n")
    before = snapshot(tmp_path)
    argv = track_argv(stack, prompts, tmp_path / "run.tif")
    assert cli.main(argv + model_args) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2: error: --out would overwrite the prompt file")
    assert str(prompts) in err and "csv" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["same path", "hard link", "symbolic link"])
def test_out_naming_the_stack_is_refused(tmp_path, inputs, model_args, capsys, how):
    stack, prompts = inputs
    out = stack
    if how == "hard link":
        out = tmp_path / "linked.tif"
        os.link(stack, out)
    elif how == "symbolic link":
        out = tmp_path / "sym.tif"
        out.symlink_to(stack)
    before = snapshot(tmp_path)
    assert cli.main(track_argv(stack, prompts, out) + model_args) == 2
    err = capsys.readouterr().err
    assert "--out would overwrite the stack" in err and str(stack) in err and str(out) in err
    assert snapshot(tmp_path) == before


def test_out_naming_the_config_is_refused(tmp_path, inputs, small_config_file, capsys):
    stack, prompts = inputs
    config = tmp_path / "res.csv"  # any name works for --config
    shutil.copy(small_config_file, config)
    argv = track_argv(stack, prompts, tmp_path / "res.tif")
    argv += ["--config", str(config), "--random-weights", "--device", "cpu"]
    assert cli.main(argv) == 2
    assert "--out would overwrite the config" in capsys.readouterr().err
    assert config.read_bytes() == small_config_file.read_bytes()


def test_out_inside_a_zarr_stack_is_refused(tmp_path, model_args, capsys):
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "stack.zarr"
    z = zarr.open_array(str(store), mode="w", shape=(FRAMES, 32, 32), dtype=np.uint8)
    z[:] = moving_blob_stack(frames=FRAMES, size=32)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[16, 8]]}]))
    before = snapshot(store)
    for out in (store, store / "results"):
        assert cli.main(track_argv(store, prompts, out) + model_args) == 2
        err = capsys.readouterr().err
        assert "inside the stack" in err and str(store) in err
    assert snapshot(store) == before


def test_stack_inside_the_ctc_output_folder_is_refused(tmp_path, model_args, capsys):
    ctc = tmp_path / "res" / "ctc"
    ctc.mkdir(parents=True)
    stack = ctc / "mask000.tif"  # a CTC mask used as input: the ctc export would delete it
    tifffile.imwrite(stack, moving_blob_stack(frames=FRAMES, size=32))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[16, 8]]}]))
    argv = track_argv(stack, prompts, tmp_path / "res") + ["--format", "ctc"]
    assert cli.main(argv + model_args) == 2
    assert "whose files the ctc output replaces" in capsys.readouterr().err
    assert stack.is_file()


def test_empty_out_is_refused(tmp_path, inputs, model_args, monkeypatch, capsys):
    stack, prompts = inputs
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert cli.main(track_argv(stack, prompts, "") + model_args) == 2
    assert "--out is empty" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# --- earlier results, the run record, scratch ---------------------------------------------


def test_second_run_needs_overwrite(tmp_path, inputs, model_args, monkeypatch, capsys):
    stack, prompts = inputs
    out = tmp_path / "res"
    assert cli.main(track_argv(stack, prompts, out) + model_args) == 0
    first = snapshot(out)
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True and record["frames_written"] == FRAMES
    assert record["outputs"]["tiff"]["path"] == "labels.tif"
    assert {i["role"] for i in record["inputs"]} == {"stack", "prompt file", "config", "checkpoint"}
    capsys.readouterr()
    with monkeypatch.context() as patch:
        load_model_must_not_run(patch)  # refused before any work
        assert cli.main(track_argv(stack, prompts, out) + model_args) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--overwrite" in err and "labels.tif" in err
    assert snapshot(out) == first
    assert cli.main(track_argv(stack, prompts, out) + model_args + ["--overwrite"]) == 0
    second = json.loads((out / "run.json").read_text())
    assert second["run_id"] != json.loads(first["run.json"])["run_id"]
    assert second["complete"] is True


def test_overwrite_removes_the_earlier_runs_other_outputs(tmp_path, inputs, model_args, capsys):
    # else labels.tif of another run would stay beside a record saying the set is complete
    stack, prompts = inputs
    out = tmp_path / "res"
    first = track_argv(stack, prompts, out) + model_args + ["--format", "tiff", "csv", "ctc"]
    assert cli.main(first) == 0
    assert (out / "labels.tif").is_file() and (out / "ctc" / "res_track.txt").is_file()
    (out / "notes.txt").write_text("mine")  # not an output of the run: stays
    moved = out / "ctc" / "stack.tif"  # an input inside an output the next run would remove
    moved.write_bytes(stack.read_bytes())
    before = snapshot(out)
    csv_only = ["--format", "csv", "--overwrite"]
    assert cli.main(track_argv(moved, prompts, out) + model_args + csv_only) == 2
    err = capsys.readouterr().err
    assert f"the stack {moved} lies in {out / 'ctc'}, an output of the earlier run" in err
    assert snapshot(out) == before
    moved.unlink()
    assert cli.main(track_argv(stack, prompts, out) + model_args + csv_only) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "presence.csv", "run.json"]
    assert list(json.loads((out / "run.json").read_text())["outputs"]) == ["csv"]


def test_scratch_file_lives_inside_the_output_folder(tmp_path, inputs, model_args, monkeypatch):
    """The labels are collected in a scratch file inside --out (named per run), never in the
    folder above it, which may be read-only or shared with other runs."""
    stack, prompts = inputs
    out = tmp_path / "res"
    seen: list[list[Path]] = []
    make = cli._make_tracker

    def factory(*args, **kwargs):
        tracker = make(*args, **kwargs)
        propagate = tracker.propagate

        def watched(*p_args, **p_kwargs):
            for result in propagate(*p_args, **p_kwargs):
                seen.append([p for p in tmp_path.rglob("*") if ".napari-sam2-" in p.name])
                yield result

        tracker.propagate = watched
        return tracker

    monkeypatch.setattr(cli, "_make_tracker", factory)
    assert cli.main(track_argv(stack, prompts, out) + model_args) == 0
    assert seen and all(len(files) == 1 for files in seen)
    scratch = seen[0][0]
    assert scratch.parent == out
    assert scratch.name.startswith(f".napari-sam2-{os.getpid()}-")
    assert no_scratch_under(tmp_path)


def test_unwritable_out_folder_is_refused_before_the_model_loads(
    tmp_path, inputs, model_args, monkeypatch, capsys
):
    """A folder the user may not write (injected: permissions do not stop root, who runs CI)
    is refused with exit 2 before the model loads, whichever check finds it first."""
    from napari_sam2.stack_files import ScratchLabels

    stack, prompts = inputs
    out = tmp_path / "locked"
    out.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ScratchLabels, "create_in", refuse)
    load_model_must_not_run(monkeypatch)
    assert cli.main(track_argv(stack, prompts, out) + model_args) == 2
    assert f"cannot write into {out}: Permission denied" in capsys.readouterr().err

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != out and real_access(p, mode))
    assert cli.main(track_argv(stack, prompts, out / "new") + model_args) == 2
    assert f"cannot write into {out}: permission denied" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_checks_come_before_a_model_path_loads(tmp_path, inputs, small_checkpoint, capsys):
    """--model PATH: the prompts are checked against the stack before the checkpoint is read
    (reading a large one takes seconds)."""
    stack, _ = inputs
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"frame": 99, "object_id": 1, "points": [[3, 3]]}]))
    argv = track_argv(stack, bad, tmp_path / "o") + ["--model", str(small_checkpoint)]
    assert cli.main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "beyond the stack" in err and "--model" not in err
    assert not (tmp_path / "o").exists()


# --- bad input: one line naming the file ---------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{"image_size": 256}, {"values": 5}, [1, 2], {"values": {"image_size": "big"}}],
    ids=["missing keys", "values not an object", "a list", "wrong type"],
)
def test_config_without_the_expected_keys(tmp_path, inputs, config, capsys):
    stack, prompts = inputs
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    argv = track_argv(stack, prompts, tmp_path / "o")
    argv += ["--config", str(path), "--random-weights", "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-sam2: error: --config {path}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def damaged_stack(tmp_path: Path, kind: str) -> Path:
    good = moving_blob_stack(frames=FRAMES, size=32)
    if kind == "truncated npy":
        path = tmp_path / "s.npy"
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:400])
    elif kind == "corrupt TIFF header":
        path = tmp_path / "s.tif"
        tifffile.imwrite(path, good)
        data = bytearray(path.read_bytes())
        data[:4] = b"JUNK"
        path.write_bytes(bytes(data))
    else:  # an empty file named .tif
        path = tmp_path / "s.tif"
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["truncated npy", "corrupt TIFF header", "empty TIFF"])
def test_damaged_stack_files_are_one_line_errors(tmp_path, inputs, model_args, kind, capsys):
    _, prompts = inputs
    stack = damaged_stack(tmp_path, kind)
    assert cli.main(track_argv(stack, prompts, tmp_path / "o") + model_args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-sam2: error: cannot read {stack}: ")
    assert "copy the file again" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def corrupt_page(path: Path, page: int) -> None:
    """Overwrite bytes in the middle of one page's compressed strip."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[page].dataoffsets[0]
        count = tif.pages[page].databytecounts[0]
    data = bytearray(path.read_bytes())
    for i in range(offset + 2, offset + min(count, 40)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_page_mid_run_keeps_the_frames_done(tmp_path, model_args, capsys):
    frames, bad = 12, 6
    stack = tmp_path / "movie.tif"
    # uint8: contrast limits come from the dtype, so no frame is read before tracking
    tifffile.imwrite(
        stack, moving_blob_stack(frames=frames, size=48), compression="zlib", imagej=True
    )
    corrupt_page(stack, bad)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[24, 12]]}]))
    out = tmp_path / "res"
    argv = track_argv(stack, prompts, out) + ["--direction", "forward"]
    assert cli.main(argv + model_args) == cli.EXIT_PARTIAL == 3
    err = capsys.readouterr().err
    # the codec's own error names it: zlib.error, or imagecodecs.DeflateError where
    # imagecodecs is installed
    assert re.search(rf"cannot read frame {bad} of .*movie\.tif: \S*(zlib|Deflate)", err)
    assert f"{bad} of {frames} frames tracked" in err and "Traceback" not in err
    assert tifffile.imread(out / "labels.tif").shape == (frames, 48, 48)
    rows = (out / "presence.csv").read_text().splitlines()[1:]
    assert sorted({int(r.split(",")[1]) for r in rows}) == list(range(bad))
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is False and record["frames_written"] == bad
    assert f"frame {bad}" in record["stopped"]
    assert no_scratch_under(tmp_path)


def test_full_disk_while_writing_is_one_line_and_keeps_earlier_files(
    tmp_path, inputs, model_args, monkeypatch, capsys
):
    stack, prompts = inputs
    out = tmp_path / "res"
    assert cli.main(track_argv(stack, prompts, out) + model_args) == 0
    earlier = snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # the presence table is written after the labels: a disk that fills up in between
    monkeypatch.setattr("napari_sam2.outputs.presence.PresenceTable.to_csv", full, raising=True)
    capsys.readouterr()
    argv = track_argv(stack, prompts, out) + model_args + ["--overwrite"]
    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2: error: cannot write ") and err.count("\n") == 1
    assert "No space left on device" in err and "disk is full" in err
    # the earlier presence table is whole; the set is marked as not one complete run
    assert (out / "presence.csv").read_bytes() == earlier["presence.csv"]
    assert json.loads((out / "run.json").read_text())["complete"] is False
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    assert no_scratch_under(tmp_path)


def test_atomic_writer_names_the_output_on_a_full_disk(tmp_path):
    from napari_sam2.outputs import OutputWriteError, write_atomically

    target = tmp_path / "labels.tif"
    target.write_bytes(b"earlier")

    def fill(handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError) as info:
        write_atomically(target, fill)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"cannot write {target}: No space left on device;")
    assert target.read_bytes() == b"earlier" and sorted(tmp_path.iterdir()) == [target]


def test_exports_never_share_a_temporary_name(tmp_path, monkeypatch):
    """Two runs writing into one folder: every temporary file and folder name is new."""
    from napari_sam2.outputs import PresenceTable, export_ctc

    made: list[str] = []
    real_mkdir = Path.mkdir

    def recording_mkdir(self, *args, **kwargs):
        made.append(self.name)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", recording_mkdir)
    labels = np.zeros((2, 8, 8), np.uint16)
    export_ctc(labels, tmp_path / "ctc")
    export_ctc(labels, tmp_path / "ctc")
    partial = [name for name in made if name.endswith(".partial")]
    assert len(partial) == 2 and len(set(partial)) == 2 and "ctc.partial" not in partial
    opened: list[str] = []
    real_open = open

    def recording_open(file, *args, **kwargs):
        opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    PresenceTable().to_csv(tmp_path / "presence.csv")
    PresenceTable().to_csv(tmp_path / "presence.csv")
    temps = [name for name in opened if name.endswith(".partial")]
    assert len(temps) == 2 and len(set(temps)) == 2


# --- the Python API: every check before the model loads -----------------------------------


def test_track_checks_everything_before_the_model_loads(monkeypatch, inputs):
    from napari_sam2.api import track
    from napari_sam2.tracking.prompts_io import PromptFileError, PromptRecord

    stack, _ = inputs
    data = tifffile.imread(stack)
    load_model_must_not_run(monkeypatch)
    point = (np.array([[16.0, 8.0]]), np.array([1]))
    nan_point = (np.array([[np.nan, 8.0]]), np.array([1]))
    with pytest.raises(PromptFileError, match="NaN"):
        track(data, [PromptRecord(0, 1, "points", nan_point)], device="cpu")
    with pytest.raises(ValueError, match="object id 300 does not fit labels of dtype uint8"):
        track(
            data,
            [PromptRecord(0, 300, "points", point)],
            device="cpu",
            labels=np.zeros(data.shape, np.uint8),
        )
    frozen = np.zeros(data.shape, np.uint16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="labels is read-only"):
        track(data, [PromptRecord(0, 1, "points", point)], device="cpu", labels=frozen)


def test_a_failed_run_keeps_folders_another_run_made(tmp_path):
    """Two runs writing into sibling folders of one new parent (a batch's stacks side by
    side): the parent planned as missing but made by the other run meanwhile is not this
    run's to remove when it fails, so the other run's folder stays."""
    from napari_sam2.cli_outputs import Outputs

    parent = tmp_path / "out"
    mine = Outputs.plan(str(parent / "s0"), ["tiff"])
    theirs = Outputs.plan(str(parent / "s1"), ["tiff"])
    assert mine.missing[0] == theirs.missing[0] == parent.absolute()  # both would make it
    their_scratch = theirs.prepare((2, 8, 8))  # the other run made the parent first
    my_scratch = mine.prepare((2, 8, 8))
    assert mine.created == [(parent / "s0").absolute()]
    my_scratch.close()
    mine.remove_created()  # this run failed
    assert not (parent / "s0").exists()
    assert (parent / "s1").is_dir()
    their_scratch.close()
    theirs.remove_created()
    assert not parent.exists()  # the run that made it removes it, once empty
