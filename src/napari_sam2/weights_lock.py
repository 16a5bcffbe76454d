"""The download lock: one process downloads a checkpoint, the others wait for it, saying so."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_sam2.weights_errors import WeightsError

LOCK_TIMEOUT_ENV = "NAPARI_SAM2_LOCK_TIMEOUT"

# the public module's logger: the waits are logged under the name they always had
logger = logging.getLogger("napari_sam2.weights")

ProgressCallback = Callable[[int, "int | None"], object]

# Waiting for another process's download: generous by default (a large checkpoint on a slow
# line takes many minutes), said out loud after a few seconds, polled often enough that the
# waiter goes on promptly once the holder is done.
_DEFAULT_LOCK_TIMEOUT = 1800.0
_LOCK_REPORT_AFTER = 3.0
_LOCK_POLL_MAX = 0.25
_LOCK_PID_OFFSET = 1  # byte 0 is the byte locked on Windows, where a locked byte cannot be read


def _lock_timeout_from_env() -> float:
    value = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not value:
        return _DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # also refuses NaN
        raise WeightsError(
            f"{LOCK_TIMEOUT_ENV}={value!r} is not a number of seconds >= 0: set it to e.g. 1800 "
            "(wait at most 30 minutes for another process's download), or unset it"
        )
    return seconds


@contextmanager
def _download_lock(
    destination: Path,
    label: str = "",
    progress: ProgressCallback | None = None,
    timeout: float = _DEFAULT_LOCK_TIMEOUT,
) -> Iterator[None]:
    """Hold an exclusive lock for downloading ``destination``, across processes and threads.

    Two downloads into one ``.part`` file would interleave their bytes and both fail the
    checksum. The lock is an OS file lock, released when its holder exits, even by a crash.
    The lock file lives in the temporary folder, so the cache holds only checkpoints; it holds
    the holder's pid, for the messages of those who wait. Waiting is reported through
    ``progress`` and the log and ends with a :class:`WeightsError` after ``timeout`` seconds.
    """
    lock_path = _lock_path(destination)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # e.g. another user's lock file for a shared cache: download unlocked
        fd = None
    if fd is None:
        yield
        return
    try:
        _wait_for_lock(fd, lock_path, destination, label or destination.name, progress, timeout)
        _write_lock_holder(fd)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _lock_path(destination: Path) -> Path:
    key = hashlib.sha256(str(destination.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"napari-sam2-{key}.lock"


def _wait_for_lock(
    fd: int,
    lock_path: Path,
    destination: Path,
    label: str,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    """Take the lock on ``fd``, waiting as long as ``timeout`` allows and saying so."""
    if _try_lock(fd):
        return
    part = destination.with_name(destination.name + ".part")
    start = time.monotonic()
    pause = 0.01
    reported = False
    while True:
        waited = time.monotonic() - start
        if waited >= timeout:
            raise WeightsError(
                f"gave up after waiting {waited:.1f} s for another download of {label} into "
                f"{destination.parent}: the lock file {lock_path} is held by "
                f"{_describe_holder(_read_lock_holder(fd))}. If that process is stuck, end it; "
                f"if no napari-sam2 download is running, delete {lock_path} and try again. "
                f"To wait longer, set {LOCK_TIMEOUT_ENV} (seconds; now {timeout:g})."
            )
        if not reported and waited >= _LOCK_REPORT_AFTER:
            logger.warning(
                "waiting for another process downloading %s (lock file %s, held by %s); "
                "giving up after %g s (%s)",
                label,
                lock_path,
                _describe_holder(_read_lock_holder(fd)),
                timeout,
                LOCK_TIMEOUT_ENV,
            )
            reported = True
        if progress is not None:
            # The other process's partial file grows as it downloads: show that, size unknown.
            # An exception from the callback cancels the wait, as it cancels a download.
            progress(_size_or_zero(part), None)
        # A cross-process lock offers nothing to wait on but itself: poll, briefly at first.
        time.sleep(min(pause, max(timeout - waited, 0.0)))
        pause = min(pause * 2, _LOCK_POLL_MAX)
        if _try_lock(fd):
            if reported:
                logger.info("the other download of %s ended; going on", label)
            return


def _try_lock(fd: int) -> bool:
    """Take the lock without blocking; False while someone else holds it."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError:  # a temporary folder without locks: go on unlocked, as without a lock file
        return True
    return True


def _unlock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    # elsewhere closing the descriptor releases the lock


def _write_lock_holder(fd: int) -> None:
    record = f"{os.getpid()}\n".encode()
    try:
        os.lseek(fd, _LOCK_PID_OFFSET, os.SEEK_SET)
        os.write(fd, record)
        os.ftruncate(fd, _LOCK_PID_OFFSET + len(record))
    except OSError:
        pass  # the pid only makes the waiters' messages more useful


def _read_lock_holder(fd: int) -> int | None:
    try:
        os.lseek(fd, _LOCK_PID_OFFSET, os.SEEK_SET)
        return int(os.read(fd, 32).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _describe_holder(pid: int | None) -> str:
    if pid is None:
        return "an unknown process"
    if pid == os.getpid():
        return f"another thread of this process (pid {pid})"
    return f"pid {pid}"


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
