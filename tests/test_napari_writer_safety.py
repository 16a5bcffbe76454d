"""File > Save of a Labels layer never destroys the previous file: a full disk or a kill in the
middle of writing leaves the earlier file whole under its name, and no unreadable TIFF."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from napari_sam2._writer import write_labels
from napari_sam2.outputs import export

META = {"scale": (2.0, 0.5, 0.5), "axis_labels": ("z", "y", "x")}


def previous_file(tmp_path) -> tuple:
    path = tmp_path / "labels.tif"
    old = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16) % 7
    write_labels(str(path), old, META)
    return path, old


def test_full_disk_while_saving_keeps_the_previous_file(tmp_path, monkeypatch):
    path, old = previous_file(tmp_path)
    real_imwrite = tifffile.imwrite

    def fill_the_disk(target, *args, **kwargs):
        # a torn TIFF, as a full disk leaves it, in whatever file the writer writes to
        handle = open(target, "wb") if isinstance(target, (str, os.PathLike)) else target
        handle.write(b"II*\x00" + bytes(100))
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.tifffile, "imwrite", fill_the_disk)
    new = np.ones((4, 16, 16), np.uint16)
    with pytest.raises(OSError) as error:
        write_labels(str(path), new, META)
    assert error.value.errno == errno.ENOSPC
    assert str(path) in str(error.value) and "disk is full" in str(error.value)
    monkeypatch.setattr(export.tifffile, "imwrite", real_imwrite)
    assert np.array_equal(tifffile.imread(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]  # no temporary file left


KILLED_MID_WRITE = textwrap.dedent(
    """
    import sys, numpy as np, tifffile
    from napari_sam2._writer import write_labels
    from napari_sam2.outputs import export

    real = tifffile.imwrite

    def slow(target, data, **kwargs):
        handle = open(target, "wb") if isinstance(target, str) else target

        def planes():
            for i, plane in enumerate(data):
                if i == 2:  # half the file is on disk: tell the test, then wait to be killed
                    handle.flush()
                    print("writing", flush=True)
                    sys.stdin.read()
                yield plane
        if "shape" not in kwargs:  # an array, not planes
            kwargs.update(shape=data.shape, dtype=data.dtype)
        return real(handle, planes(), **kwargs)

    export.tifffile.imwrite = slow
    write_labels(sys.argv[1], np.ones((4, 16, 16), np.uint16), {"scale": (2.0, 0.5, 0.5)})
    """
)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_kill_while_saving_keeps_the_previous_file(tmp_path):
    path, old = previous_file(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    assert np.array_equal(tifffile.imread(path), old)
    # SIGKILL cannot be handled: its only trace is a hidden temporary file beside the result
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "labels.tif"]
    assert all(name.startswith(".labels.tif.") and name.endswith(".partial") for name in leftovers)
