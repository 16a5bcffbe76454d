"""The weights store when the machine gets in the way: an unwritable cache folder, a full disk,
a stuck lock holder, a file that is no checkpoint at all.

Everything is served from 127.0.0.1 (never the internet). Disk faults are injected (root, as in
CI containers, writes into any folder, and a full disk cannot be made on demand): the module's
``open`` is replaced for ``.part`` files only, and ``shutil.disk_usage`` reports what a test says.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from file_server import FileServer
from napari_sam2 import weights, weights_lock
from napari_sam2.model.build import load_checkpoint
from napari_sam2.weights import (
    CACHE_ENV,
    MODEL_REGISTRY,
    WEIGHTS_ENV,
    WeightsError,
    ensure_checkpoint,
)

NAME = "sam2.1_hiera_tiny"
OLD_NAME = "sam2_hiera_tiny"
LOCK_TIMEOUT_ENV = "NAPARI_SAM2_LOCK_TIMEOUT"
SIZE = 3_000_000  # three 1 MiB download chunks, and "3.0 MB" in messages


def make_checkpoint(seed: int = 0, **save_options) -> bytes:
    """A small file in the official format: ``{"model": state_dict}`` saved by torch."""
    generator = torch.Generator().manual_seed(seed)
    state = {"sam_mask_decoder.iou_token.weight": torch.randn(1, 16, generator=generator)}
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer, **save_options)
    return buffer.getvalue()


@pytest.fixture
def env(weights_env) -> Path:
    """The test's own weights store (``weights_env`` in conftest.py)."""
    return weights_env


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def serve(server: FileServer, monkeypatch, name: str = NAME, data: bytes | None = None, sha=True):
    """Put ``data`` on the server and point the registry entry ``name`` at it."""
    data = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256) if data is None else data
    info = MODEL_REGISTRY[name]
    server.files[info.filename] = data
    digest = hashlib.sha256(data).hexdigest() if sha is True else sha
    patched = dataclasses.replace(info, url=server.url(info.filename), sha256=digest)
    monkeypatch.setitem(MODEL_REGISTRY, name, patched)
    return data, patched


class FailingFile:
    """A file whose writes succeed ``good_writes`` times and then raise ``error``."""

    def __init__(self, real, good_writes: int, error: OSError) -> None:
        self.real, self.good_writes, self.error = real, good_writes, error

    def write(self, data: bytes) -> int:
        if self.good_writes <= 0:
            raise self.error
        self.good_writes -= 1
        return self.real.write(data)

    def close(self) -> None:
        self.real.close()

    def __enter__(self) -> FailingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fail_part_files(monkeypatch, code: int, *, good_writes: int | None) -> None:
    """Make writing ``.part`` files fail with ``code``: when opened (``good_writes`` None) or
    after ``good_writes`` successful writes; every other file opens as usual."""
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        if str(file).endswith(".part") and mode[:1] in "wa":
            error = OSError(code, os.strerror(code), str(file))
            if good_writes is None:
                raise error
            return FailingFile(real_open(file, mode, *args, **kwargs), good_writes, error)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(weights, "open", fake_open, raising=False)


def report_disk_free(monkeypatch, free: int) -> None:
    def disk_usage(path):
        return shutil._ntuple_diskusage(10 * SIZE, 10 * SIZE - free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


def run_with_deadline(call: Callable[[], object], seconds: float = 20) -> dict:
    """Run ``call`` in a thread; fail (instead of hanging the test run) if it does not end."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return outcome


def assert_says_what_to_do(message: str, folder: Path, url: str) -> None:
    assert str(folder) in message
    assert CACHE_ENV in message and WEIGHTS_ENV in message
    assert url in message


# 1. The cache folder cannot take the file


def test_cache_folder_under_a_regular_file_is_explained(env, server, monkeypatch):
    _, info = serve(server, monkeypatch)
    blocker = env / "not_a_folder"
    blocker.write_text("a file where the cache's parent folder should be")
    folder = blocker / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME)
    message = str(error.value)
    assert "is a file, not a folder" in message
    assert_says_what_to_do(message, folder, info.url)
    assert server.requests == []  # nothing downloaded that could not be kept


def test_unwritable_cache_folder_is_explained(env, server, monkeypatch):
    _, info = serve(server, monkeypatch)
    fail_part_files(monkeypatch, errno.EACCES, good_writes=None)
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME)
    message = str(error.value)
    assert "not writable" in message
    assert_says_what_to_do(message, env / "cache", info.url)
    assert "3.0 MB free" in message  # the size the server announced


def test_download_too_large_for_the_disk_is_refused_before_writing(env, server, monkeypatch):
    _, info = serve(server, monkeypatch)
    report_disk_free(monkeypatch, 1_000_000)
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME)
    message = str(error.value)
    assert "no space left" in message
    assert "3.0 MB needed" in message and "1.0 MB available" in message
    assert "with at least 3.0 MB free" in message
    assert_says_what_to_do(message, env / "cache", info.url)
    assert list((env / "cache").iterdir()) == []


# 2. A full disk met halfway


@pytest.mark.parametrize(
    "code",
    [errno.ENOSPC] + ([errno.EDQUOT] if hasattr(errno, "EDQUOT") else []),
    ids=lambda code: errno.errorcode[code],
)
def test_full_disk_midway_removes_the_partial_file(env, server, monkeypatch, code):
    _, info = serve(server, monkeypatch)
    fail_part_files(monkeypatch, code, good_writes=1)  # one chunk lands, the next does not
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME)
    message = str(error.value)
    assert "3.0 MB needed" in message
    if code == errno.ENOSPC:
        assert "no space left" in message and "available" in message
    else:  # the disk's free space says nothing about a quota: not quoted
        assert "quota is used up" in message and "available" not in message
    assert_says_what_to_do(message, env / "cache", info.url)
    assert list((env / "cache").iterdir()) == []  # the space it took is given back
    assert len(server.requests) == 1  # no retry: it cannot help


def test_other_write_failure_keeps_the_partial_file_for_resuming(env, server, monkeypatch):
    data, info = serve(server, monkeypatch)
    fail_part_files(monkeypatch, errno.EIO, good_writes=1)
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(NAME)
    assert "writing there failed" in str(error.value)
    assert_says_what_to_do(str(error.value), env / "cache", info.url)
    part = env / "cache" / f"{NAME}.pt.part"
    assert part.stat().st_size == 1 << 20

    monkeypatch.undo()  # the disk recovers (and the fixtures' settings are set again)
    monkeypatch.setenv(CACHE_ENV, str(env / "cache"))
    serve(server, monkeypatch, data=data)
    assert ensure_checkpoint(NAME).read_bytes() == data
    assert server.requests[-1]["range"] == f"bytes={1 << 20}-"


# 3. Another process holds the download lock

HOLD_LOCK = """
import sys
from pathlib import Path
from napari_sam2 import weights
with weights._download_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_stuck_lock_holder_is_reported_and_waited_for_only_so_long(
    env, server, monkeypatch, caplog
):
    serve(server, monkeypatch)
    destination = env / "cache" / f"{NAME}.pt"
    destination.parent.mkdir()
    destination.with_name(destination.name + ".part").write_bytes(b"x" * 1234)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(destination)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.5")
        monkeypatch.setattr(weights_lock, "_LOCK_REPORT_AFTER", 0.1, raising=False)
        caplog.set_level(logging.INFO, logger="napari_sam2.weights")
        calls: list = []
        outcome = run_with_deadline(
            lambda: ensure_checkpoint(NAME, progress=lambda d, t: calls.append((d, t)))
        )
    finally:
        holder.stdin.close()
        holder.wait(10)
    error = outcome.get("error")
    assert isinstance(error, WeightsError), outcome
    message = str(error)
    lock_file = str(weights._lock_path(destination))
    assert lock_file in message and f"delete {lock_file}" in message
    assert f"pid {holder.pid}" in message
    assert LOCK_TIMEOUT_ENV in message and NAME in message
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        f"waiting for another process downloading {NAME}" in m
        and lock_file in m
        and f"pid {holder.pid}" in m
        for m in logged
    ), logged
    assert (1234, None) in calls  # the other process's progress, as far as it can be seen
    assert server.requests == []


def test_waiter_goes_on_as_soon_as_the_holder_is_done(env, server, monkeypatch):
    data, _ = serve(server, monkeypatch)
    destination = env / "cache" / f"{NAME}.pt"
    destination.parent.mkdir()
    waiting = threading.Event()
    holding = threading.Event()

    def hold_then_finish() -> None:
        with weights._download_lock(destination):
            holding.set()
            waiting.wait(10)  # released once the waiter has said it waits
            destination.write_bytes(data)  # as if this holder had downloaded it

    holder = threading.Thread(target=hold_then_finish, daemon=True)
    holder.start()
    assert holding.wait(10)
    outcome = run_with_deadline(
        lambda: ensure_checkpoint(NAME, progress=lambda d, t: waiting.set(), lock_timeout=60)
    )
    holder.join(10)
    assert waiting.is_set()  # the wait was reported through the progress callback
    assert outcome.get("value") == destination, outcome
    assert server.requests == []  # the holder's file was verified and used


def test_lock_timeout_setting_that_is_no_number_is_refused(env, server, monkeypatch):
    serve(server, monkeypatch)
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(WeightsError, match=f"{LOCK_TIMEOUT_ENV}='soon' is not a number"):
        ensure_checkpoint(NAME)
    assert server.requests == []


# 4. A file that is no checkpoint


def safetensors_bytes() -> bytes:
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    return len(header).to_bytes(8, "little") + header + bytes(4)


def zip_without_torch_data() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    return buffer.getvalue()


NOT_CHECKPOINTS = {
    # text whose first bytes make torch's unpickler fail with IndexError / KeyError
    "text": (b"a list of cells, not weights\n", "it is a text file"),
    "text2": (b"hello\n", "it is a text file"),
    "html": (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>", "HTML page"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n", "Git LFS"),
    "safetensors": (safetensors_bytes(), "safetensors"),
    "truncated": (make_checkpoint()[:300], "truncated or damaged zip archive"),
    "foreign zip": (zip_without_torch_data(), "not one written by torch"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_loader_says_what_a_non_checkpoint_file_is(tmp_path, kind):
    content, says = NOT_CHECKPOINTS[kind]
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert f"{path} is not a readable PyTorch checkpoint" in message
    assert says in message
    assert "official SAM 2 checkpoint" in message


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_non_checkpoint_file_is_refused_before_torch_sees_it(env, kind):
    content, says = NOT_CHECKPOINTS[kind]
    path = env / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as error:
        ensure_checkpoint(path)
    message = str(error.value)
    assert f"{path} is not a readable PyTorch checkpoint" in message
    assert says in message


@pytest.mark.parametrize(
    "options", [{}, {"_use_new_zipfile_serialization": False}], ids=["zip", "legacy"]
)
def test_real_checkpoints_in_both_torch_formats_are_accepted(env, options):
    path = env / "weights.pt"
    path.write_bytes(make_checkpoint(**options))
    assert weights.checkpoint_file_problem(path) is None
    assert ensure_checkpoint(path) == path
    assert list(load_checkpoint(path)) == ["sam_mask_decoder.iou_token.weight"]


def test_legacy_checkpoint_pickled_as_ascii_is_not_taken_for_text(tmp_path):
    path = tmp_path / "old.pt"
    data = make_checkpoint(_use_new_zipfile_serialization=False, pickle_protocol=0)
    path.write_bytes(data[:200])  # its start, all printable ASCII: what is looked at
    assert path.read_bytes().isascii()
    assert weights.checkpoint_file_problem(path) is None


def test_download_of_a_web_page_says_so(env, server, monkeypatch):
    serve(server, monkeypatch, name=OLD_NAME, data=b"<html>captive portal</html>", sha=None)
    with pytest.raises(WeightsError, match="corrupt.*HTML page"):
        ensure_checkpoint(OLD_NAME)
    assert list((env / "cache").iterdir()) == []
