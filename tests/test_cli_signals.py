"""Stop signals end a run with consistent outputs and a true message.

Real signals to a real ``napari-sam2`` process (SIGTERM is what ``timeout``, SLURM and
Kubernetes send; SIGINT is Ctrl-C) once its progress shows frames tracked, and signals that
arrive while the outputs are written or before tracking starts (in this process, SIGINT only,
so that a regression cannot kill the test runner).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from small_model import moving_blob_stack

FRAMES = 200
SIZE = 64
PROGRESS = re.compile(r"tracking forward: (\d+)/(\d+) frames")


@pytest.fixture
def run_files(tmp_path, small_config_file, small_checkpoint) -> dict[str, Path]:
    """A 200-frame stack (long enough that a signal arrives mid-run), a prompt, the model."""
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, moving_blob_stack(frames=FRAMES, size=SIZE), imagej=True)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[32, 16]]}]))
    return {
        "stack": stack,
        "prompts": prompts,
        "out": tmp_path / "results" / "run1",
        "config": small_config_file,
        "checkpoint": small_checkpoint,
    }


def command(files: dict[str, Path]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_sam2.cli",
        "track",
        str(files["stack"]),
        "--prompts",
        str(files["prompts"]),
        "--out",
        str(files["out"]),
        "--config",
        str(files["config"]),
        "--checkpoint",
        str(files["checkpoint"]),
        "--device",
        "cpu",
        "--direction",
        "forward",
    ]


def read_until(proc: subprocess.Popen, pattern: re.Pattern, frames: int, seconds: float) -> str:
    """stderr of ``proc`` up to a progress update counting at least ``frames`` frames (the
    progress line ends in a carriage return, not a newline: read raw bytes)."""
    fd = proc.stderr.fileno()
    text = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # the process ended
            text += chunk
            counts = [int(m.group(1)) for m in pattern.finditer(text.decode(errors="replace"))]
            if counts and max(counts) >= frames:
                return text.decode(errors="replace")
    proc.kill()
    raise AssertionError(f"no progress to {frames} frames in {seconds} s:\n{text.decode()}")


def stop_mid_run(files: dict[str, Path], signum: int) -> tuple[int, str]:
    """Start the CLI, send ``signum`` once two frames are tracked; (exit status, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command(files), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
    )
    try:
        head = read_until(proc, PROGRESS, 2, seconds=120)
        proc.send_signal(signum)
        _, tail = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, head + tail.decode(errors="replace")


def check_partial_outputs(files: dict[str, Path], err: str, status: int, name: str) -> int:
    """The outputs of a stopped run: readable, consistent with the record and the message,
    and no scratch file anywhere. Returns the number of frames written."""
    out = files["out"]
    record = json.loads((out / "run.json").read_text())
    done = record["frames_written"]
    assert 0 < done < FRAMES, err
    assert record["complete"] is False and record["stopped"] == name
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (FRAMES, SIZE, SIZE) and not labels[done:].any()
    rows = (out / "presence.csv").read_text().splitlines()[1:]
    assert sorted({int(r.split(",")[1]) for r in rows}) == list(range(done))
    assert f"{done} of {FRAMES} frames tracked and written to" in err
    assert "Traceback" not in err
    for folder in (out, out.parent, files["stack"].parent):
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert not leftovers, leftovers
    return done


@pytest.mark.slow
def test_sigterm_mid_run_writes_the_frames_done(run_files):
    status, err = stop_mid_run(run_files, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM == 143, err
    check_partial_outputs(run_files, err, status, "SIGTERM")
    assert "stopped by SIGTERM:" in err


@pytest.mark.slow
def test_sigint_mid_run_writes_the_frames_done(run_files):
    status, err = stop_mid_run(run_files, signal.SIGINT)
    assert status == 130, err
    check_partial_outputs(run_files, err, status, "SIGINT")
    assert "interrupted:" in err and "nothing written" not in err


# --- in this process: signals while writing, and before tracking --------------------------


@pytest.fixture
def small_run(tmp_path, small_config_file, small_checkpoint) -> list[str]:
    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, moving_blob_stack(frames=5, size=32))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[16, 8]]}]))
    return [
        "track",
        str(stack),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "res"),
        "--config",
        str(small_config_file),
        "--checkpoint",
        str(small_checkpoint),
        "--device",
        "cpu",
        "--quiet",
    ]


def test_ctrl_c_while_writing_lets_the_outputs_finish(tmp_path, small_run, monkeypatch, capsys):
    import napari_sam2.outputs as outputs

    real = outputs.export_labels_tiff

    def interrupted_export(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the labels are written
        return real(*args, **kwargs)

    monkeypatch.setattr(outputs, "export_labels_tiff", interrupted_export)
    assert cli.main(small_run) == 130
    err = capsys.readouterr().err
    assert "SIGINT arrived while the outputs were written" in err
    assert "nothing written" not in err
    out = tmp_path / "res"
    assert tifffile.imread(out / "labels.tif").shape == (5, 32, 32)
    assert len((out / "presence.csv").read_text().splitlines()) == 1 + 5
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True and record["frames_written"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_ctrl_c_before_tracking_writes_nothing(tmp_path, small_run, monkeypatch, capsys):
    def interrupted_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the model loads
        time.sleep(0)  # a bytecode boundary: the handler runs here
        raise AssertionError("the signal should have stopped the run")

    monkeypatch.setattr("napari_sam2.api.load_model", interrupted_load)
    assert cli.main(small_run) == 130
    assert "before tracking started; nothing written" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()  # the folder made for the run is gone again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".napari-sam2-")]


def test_the_record_of_a_set_is_removed_before_its_files_are_replaced(
    tmp_path, small_run, monkeypatch
):
    """A run killed between two exports leaves no record claiming the set is complete."""
    import napari_sam2.outputs as outputs

    out = tmp_path / "res"
    assert cli.main(small_run) == 0
    assert json.loads((out / "run.json").read_text())["complete"] is True
    old_table = (out / "presence.csv").read_bytes()

    class Killed(BaseException):
        """Stands for SIGKILL between the label file and the presence table."""

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(outputs.PresenceTable, "to_csv", killed)
    with pytest.raises(Killed):
        cli.main(small_run + ["--overwrite"])
    assert (out / "presence.csv").read_bytes() == old_table  # the old run's table...
    assert not (out / "run.json").exists()  # ...and no record vouching for the mixed set
    assert np.asarray(tifffile.imread(out / "labels.tif")).shape == (5, 32, 32)


def test_ignored_signals_stay_ignored():
    """Under ``nohup`` (SIGHUP ignored) the run must still outlive the terminal."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    guard = cli.StopSignals()
    try:
        guard.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == guard._handle
    finally:
        guard.restore()
        signal.signal(signal.SIGHUP, previous)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
