"""The official SAM 2 checkpoints and the registered fine-tunes: where they come from, their
checksums, sizes, licences and input sizes, the cache, offline files.

Registered fine-tunes (:data:`FINE_TUNES`) are published in the official format
(``{"model": state_dict}``, extra entries beside ``"model"`` allowed) with the parameters of an
official architecture, trained at their own input size: MedSAM2 (512 px) and micro-sam's
light-microscopy SAM 2 (1024 px). They are fetched, cached and found offline like the official
files, by their published file names (``MedSAM2_latest.pt`` in a ``$NAPARI_SAM2_WEIGHTS`` folder
is ``medsam2_latest``). Any entry's download URL can be replaced with the environment variable
``NAPARI_SAM2_URL_<NAME>`` (the name in capitals, ``.`` as ``_``), e.g. for a mirror.

A checkpoint is only ever handed out after it has been verified: SAM 2.1 files against the
sha256 Meta published, SAM 2.0 files and the fine-tunes (for which no sha256 is published) by
loading them with torch once and then against the sha256 recorded beside them at that moment.
Downloads go to ``<file>.part`` and are renamed into place only after the check, so a cut
connection or a corrupt file never reaches the model; an interrupted download resumes with an
HTTP Range request.

Offline machines and clusters: put the ``.pt`` files in a folder and point
``NAPARI_SAM2_WEIGHTS`` at it, or pass the file's path, or copy the file into the cache
(``NAPARI_SAM2_CACHE`` moves the cache). Proxies are taken from the usual ``http_proxy`` /
``https_proxy`` / ``no_proxy`` environment variables (urllib's default handling).

Processes that want the same checkpoint download it once: the others wait on a lock file in the
temporary folder, say so (log message, progress callback) after a few seconds, and give up after
``NAPARI_SAM2_LOCK_TIMEOUT`` seconds (default 1800) with an error naming the lock file. A download
that does not fit on the cache's disk is refused before it starts where the server says the size,
and a full disk met halfway removes the partial file: the error names the folder and the space
needed, and suggests ``NAPARI_SAM2_CACHE`` or ``NAPARI_SAM2_WEIGHTS``.

The code lives in this module and the modules beside it, each named for what it holds:
``weights_registry`` (the registered checkpoints), ``weights_files`` (checks of files on disk),
``weights_lock`` (the download lock) and ``weights_errors`` (:class:`WeightsError`). Import
every public name from here.

This module imports neither napari nor Qt nor the network package: scripts and cluster jobs
use it as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http.client
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from napari_sam2.weights_errors import WeightsError
from napari_sam2.weights_files import (
    _CHUNK,
    _loads_as_checkpoint,
    _quiet_problem,
    _read_sidecar,
    _remove,
    _sha256_of,
    _sidecar,
    _write_sidecar,
    checkpoint_file_problem,
)
from napari_sam2.weights_lock import (
    LOCK_TIMEOUT_ENV,
    ProgressCallback,
    _download_lock,
    _lock_timeout_from_env,
)
from napari_sam2.weights_lock import _lock_path as _lock_path  # the tests take it from here
from napari_sam2.weights_registry import (
    CHECKPOINT_NAMES,
    FINE_TUNE_NAMES,
    FINE_TUNES,
    MODEL_REGISTRY,
    CheckpointInfo,
)

__all__ = [
    "CACHE_ENV",
    "CHECKPOINT_NAMES",
    "FINE_TUNES",
    "FINE_TUNE_NAMES",
    "LOCK_TIMEOUT_ENV",
    "MODEL_REGISTRY",
    "URL_ENV_PREFIX",
    "WEIGHTS_ENV",
    "CheckpointInfo",
    "WeightsError",
    "cache_dir",
    "checkpoint_file_problem",
    "checkpoint_info",
    "checkpoint_status",
    "describe_checkpoint",
    "ensure_checkpoint",
    "find_local_checkpoint",
    "local_weights_dirs",
    "registered_file",
    "url_env",
    "verify_checkpoint",
]

CACHE_ENV = "NAPARI_SAM2_CACHE"
WEIGHTS_ENV = "NAPARI_SAM2_WEIGHTS"
URL_ENV_PREFIX = "NAPARI_SAM2_URL_"

Status = Literal["cached", "needs download", "local file"]

# Errors that mean the disk (or the user's quota on it) is full: resuming cannot help.
_NO_SPACE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def _registry() -> dict[str, CheckpointInfo]:
    # looked up afresh each time: tests (and users) may replace entries in either dict
    return {**MODEL_REGISTRY, **FINE_TUNES}


def url_env(name: str) -> str:
    """The environment variable that replaces the download URL of the entry ``name``."""
    return URL_ENV_PREFIX + "".join(c if c.isalnum() else "_" for c in name.upper())


def checkpoint_info(name: str) -> CheckpointInfo:
    """The registry entry for a name such as ``"sam2.1_hiera_tiny"`` or ``"medsam2_latest"``,
    with its URL replaced where ``$NAPARI_SAM2_URL_<NAME>`` is set (see :func:`url_env`)."""
    registry = _registry()
    try:
        info = registry[name]
    except KeyError:
        raise WeightsError(
            f"unknown checkpoint {name!r}: choose one of {', '.join(registry)}, "
            "or give the path of a .pt file"
        ) from None
    override = os.environ.get(url_env(name), "").strip()
    if override:
        # the file keeps its published name whatever the mirror calls it
        info = dataclasses.replace(info, url=override, file_name=info.filename)
    return info


def describe_checkpoint(name: str) -> str:
    """``"medsam2_latest: MedSAM2 (bowang-lab): latest release (recommended) · ~156 MB ·
    CC-BY-SA-4.0 · 512 px · sam2.1_hiera_tiny weights"``: for lists and tooltips."""
    info = checkpoint_info(name)
    return f"{name}: {info.title()} · {info.summary()}"


def registered_file(path: str | os.PathLike) -> CheckpointInfo | None:
    """The registry entry whose published file name ``path`` has (None: no entry's).

    A fine-tune's file given by path keeps its meaning: ``MedSAM2_latest.pt`` is a 512 px model
    even where it is not used by its registry name.
    """
    filename = Path(path).name
    for info in _registry().values():
        if filename == info.filename or filename in info.aliases:
            return info
    return None


def cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$NAPARI_SAM2_CACHE`` or the per-user cache folder.

    The default follows the platform's convention (``~/.cache/napari-sam2`` on Linux,
    ``~/Library/Caches/napari-sam2`` on macOS, ``%LOCALAPPDATA%\\napari-sam2\\Cache`` on
    Windows). The folder is not created here.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-sam2", appauthor=False))


def local_weights_dirs() -> list[Path]:
    """The folders named by ``$NAPARI_SAM2_WEIGHTS`` (several separated by ``os.pathsep``)."""
    value = os.environ.get(WEIGHTS_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]


def find_local_checkpoint(name: str) -> Path | None:
    """The user's own copy of a registered checkpoint in a ``$NAPARI_SAM2_WEIGHTS`` folder, by
    its published file name (or one of its aliases)."""
    info = checkpoint_info(name)
    for folder in local_weights_dirs():
        for filename in (info.filename, *info.aliases):
            candidate = folder / filename
            if candidate.is_file():
                return candidate
    return None


def _is_path_like(name: str | os.PathLike) -> bool:
    if not isinstance(name, str):
        return True
    return name not in _registry() and (
        name.endswith((".pt", ".pth")) or os.sep in name or "/" in name or Path(name).exists()
    )


def checkpoint_status(name: str | os.PathLike) -> Status:
    """What using ``name`` would take, cheaply (no hashing): for the widget to show.

    ``"local file"``: a path, or a copy in a ``$NAPARI_SAM2_WEIGHTS`` folder;
    ``"cached"``: a verified download in the cache; ``"needs download"`` otherwise.
    """
    if _is_path_like(name):
        return "local file"
    if find_local_checkpoint(name) is not None:
        return "local file"
    cached = cache_dir() / checkpoint_info(name).filename
    if _is_file(cached) and cached.stat().st_size > 0:
        return "cached"
    return "needs download"


def ensure_checkpoint(
    name: str | os.PathLike,
    progress: ProgressCallback | None = None,
    *,
    attempts: int = 3,
    timeout: float = 60.0,
    lock_timeout: float | None = None,
) -> Path:
    """A verified local checkpoint file for ``name``, downloading it if needed.

    ``name`` is a registered name (see ``CHECKPOINT_NAMES``) or the path of a ``.pt`` file.
    Lookup order: a path as given; a copy in a ``$NAPARI_SAM2_WEIGHTS`` folder; the cache;
    a download into the cache. ``progress(bytes_done, bytes_total)`` is called while
    downloading (``bytes_total`` is None when the server does not say); an exception raised
    by it cancels the download and is passed on, keeping the partial file so that the next
    call resumes. A cut connection is retried up to ``attempts`` times in all, resuming where
    it stopped. While another process downloads the same file this one waits, calling
    ``progress(bytes_that_process_has, None)``, for at most ``lock_timeout`` seconds (default:
    ``$NAPARI_SAM2_LOCK_TIMEOUT``, else 30 minutes). Raises :class:`WeightsError` when no
    verified file can be had, saying why and what to do (also for an unwritable cache folder
    or a full disk).
    """
    if _is_path_like(name):
        return _checked_user_file(Path(name))
    info = checkpoint_info(name)

    local = find_local_checkpoint(name)
    if local is not None:
        if not verify_checkpoint(local, info):
            raise WeightsError(
                f"{local} (from ${WEIGHTS_ENV}) is not an intact {info.name} checkpoint "
                f"({_quiet_problem(local) or 'checksum or format check failed'}). "
                f"Replace it with a fresh copy of {info.url}."
            )
        return local

    cached = cache_dir() / info.filename
    if _is_file(cached):
        if verify_checkpoint(cached, info):
            return cached
        # A damaged cache entry is replaced, never loaded (it would crash the model loader).
        try:
            _remove(cached, _sidecar(cached))
        except OSError as error:
            raise _cache_error(
                info,
                cached,
                error,
                doing=f"the cached copy {cached} is damaged and cannot be replaced",
            ) from error

    if lock_timeout is None:
        lock_timeout = _lock_timeout_from_env()
    elif not lock_timeout >= 0:
        raise ValueError(f"lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")
    with _download_lock(cached, info.name, progress, lock_timeout):
        # another process or thread may have fetched it while this one waited for the lock
        if not (_is_file(cached) and verify_checkpoint(cached, info)):
            _download(info, cached, progress, attempts=attempts, timeout=timeout)
    return cached


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False also where the folder cannot be looked into (then a download
    is attempted, and its failure to write there is what gets explained)."""
    try:
        return path.is_file()
    except OSError:
        return False


def verify_checkpoint(path: Path, info: CheckpointInfo) -> bool:
    """Whether ``path`` is an intact copy of ``info``'s checkpoint (hashes the whole file)."""
    digest = _sha256_of(path)
    if info.sha256 is not None:
        return digest == info.sha256
    recorded = _read_sidecar(path)
    if recorded is not None:
        return digest == recorded
    # First sight of a SAM 2.0 file or a fine-tune: no published checksum, so trust it if torch
    # can load it as a checkpoint, and remember its sha256 so that later damage is caught.
    if not _loads_as_checkpoint(path):
        return False
    _write_sidecar(path, digest)
    return True


def _checked_user_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise WeightsError(
            f"checkpoint file {path} does not exist: give the path of a SAM 2 .pt file "
            f"or one of the names {', '.join(_registry())}"
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint file {path} is empty: copy it again")
    # Refuse what is plainly no checkpoint (a text or HTML file, a truncated zip) here, with
    # words, rather than let torch fail on it with an IndexError from deep inside.
    try:
        problem = checkpoint_file_problem(path)
    except OSError as error:
        raise WeightsError(f"cannot read checkpoint file {path}: {error}") from error
    if problem is not None:
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({problem}): give the .pt file of an "
            f"official SAM 2 checkpoint, or one of the names {', '.join(_registry())}"
        )
    # A file named like an official checkpoint with a published checksum can be checked,
    # which catches truncated copies on clusters before torch fails on them.
    for info in _registry().values():
        if info.filename == path.name and info.sha256 is not None:
            if _sha256_of(path) != info.sha256:
                raise WeightsError(
                    f"{path} is named like the official {info.name} checkpoint but its sha256 "
                    f"does not match: the copy is damaged or incomplete. Fetch {info.url} again."
                )
    return path


def _manual_hint(info: CheckpointInfo, destination: Path) -> str:
    return (
        f"To install it by hand, download {info.url} on a machine with internet access and "
        f"put it at {destination}, or into a folder named by the environment variable "
        f"{WEIGHTS_ENV}, or pass the file's path instead of the name."
    )


def _download(
    info: CheckpointInfo,
    destination: Path,
    progress: ProgressCallback | None,
    *,
    attempts: int,
    timeout: float,
) -> None:
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cache_error(info, destination, error) from error
    part = destination.with_name(destination.name + ".part")
    last_error: Exception | None = None
    restarted_after_mismatch = False
    attempt = 0
    while attempt < max(1, attempts):
        attempt += 1
        try:
            resumed = _fetch_into(info, part, progress, timeout)
        except _Interrupted as error:
            last_error = error
            continue  # the partial file stays: the next attempt asks for the rest
        except urllib.error.HTTPError as error:
            raise WeightsError(
                f"downloading {info.name} failed: the server answered {error.code} "
                f"{error.reason} for {info.url}. {_manual_hint(info, destination)}"
            ) from error
        except _Unreachable as error:
            reason = error.args[0]
            raise WeightsError(
                f"cannot download {info.name} ({reason}): no network connection to "
                f"{info.url}? {_manual_hint(info, destination)}"
            ) from error
        except _CacheWriteFailed as failure:
            if failure.no_space:
                # Resuming cannot help while the disk is full, and the partial file holds
                # space the user needs back: remove it (other failures keep it for resuming).
                with contextlib.suppress(OSError):
                    _remove(part, _sidecar(part))
            raise _cache_error(info, destination, failure.error, needed=failure.needed) from (
                failure.error
            )

        if verify_checkpoint(part, info):
            try:
                sidecar = _sidecar(part)
                if sidecar.exists():
                    os.replace(sidecar, _sidecar(destination))
                os.replace(part, destination)
            except OSError as error:
                raise _cache_error(info, destination, error) from error
            return
        problem = _quiet_problem(part)
        _remove(part, _sidecar(part))
        if resumed and not restarted_after_mismatch:
            # The old partial file may belong to another version of the file: start afresh once.
            restarted_after_mismatch = True
            attempt -= 1
            continue
        raise WeightsError(
            f"the download of {info.name} from {info.url} is corrupt "
            f"({problem or 'sha256 or format check failed'}) and was discarded; the cache is "
            f"unchanged. Try again later. "
            f"{_manual_hint(info, destination)}"
        )
    raise WeightsError(
        f"downloading {info.name} was interrupted {attempts} times ({last_error}); the partial "
        f"file {part} is kept and the next attempt resumes it. {_manual_hint(info, destination)}"
    )


class _Interrupted(Exception):
    """The connection ended before the whole body arrived."""


class _Unreachable(Exception):
    """No connection to the server (refused, no route, name not resolved, timed out)."""


class _CacheWriteFailed(Exception):
    """Storing the download failed on this machine's side (``error`` None: too little space).

    Kept apart from network failures, which the same OSError classes can express, because the
    remedy differs: another cache folder instead of another try.
    """

    def __init__(self, error: OSError | None, needed: int | None) -> None:
        super().__init__(error)
        self.error = error
        self.needed = needed

    @property
    def no_space(self) -> bool:
        return self.error is None or self.error.errno in _NO_SPACE_ERRNOS


def _cache_error(
    info: CheckpointInfo,
    destination: Path,
    error: OSError | None,
    *,
    needed: int | None = None,
    doing: str | None = None,
) -> WeightsError:
    """The error for a cache folder that cannot take ``destination``: where, why, what to do."""
    folder = destination.parent
    code = error.errno if error is not None else None
    if error is None or code in _NO_SPACE_ERRNOS:
        quota = code is not None and code == getattr(errno, "EDQUOT", None)
        amounts = []
        if needed is not None:
            amounts.append(f"{_size_text(needed)} needed")
        free = None if quota else _free_bytes(folder)  # the disk's free space ignores quotas
        if free is not None:
            amounts.append(f"{_size_text(free)} available")
        why = "the disk quota is used up" if quota else "no space left on its disk"
        if amounts:
            why += f" ({', '.join(amounts)})"
        why += "; no partial file was left behind"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable" if _is_dir(folder) else "the folder cannot be created"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        why = "it, or a folder above it, is a file, not a folder"
    else:
        why = "writing there failed"
    if error is not None:
        why += f" [{error}]"
    space = f" with at least {_size_text(needed)} free" if needed is not None else ""
    return WeightsError(
        f"{doing or f'cannot save {info.name} in the cache folder {folder}'}: {why}. "
        f"Set {CACHE_ENV} to a writable folder{space}, or download {info.url} elsewhere and "
        f"put it in a folder named by {WEIGHTS_ENV} (or pass the file's path instead of the name)."
    )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size_text(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _fetch_into(
    info: CheckpointInfo, part: Path, progress: ProgressCallback | None, timeout: float
) -> bool:
    """Download into ``part``, resuming it if it exists; True if bytes were kept from before."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(info.url, headers={"User-Agent": "napari-sam2"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    # build_opener() includes urllib's ProxyHandler, which reads http(s)_proxy / no_proxy.
    opener = urllib.request.build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            # Our partial file is not a prefix the server can continue: start afresh.
            part.unlink()
            return _fetch_into(info, part, progress, timeout)
        raise
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ConnectionResetError):
            raise _Interrupted(f"{type(reason).__name__}: {reason}") from error  # worth a retry
        raise _Unreachable(reason) from error
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if have and response.status == 206 and _range_start(response) == have:
            mode, done = "ab", have
            total = have + length if length is not None else None
        else:
            mode, done, total = "wb", 0, length  # the server ignored the Range: restart
        resumed = mode == "ab"
        if length is not None:
            # Refuse before writing when the rest cannot fit: filling the disk would fail late
            # and leave the user's disk full. A restart frees the old partial file first.
            free = _free_bytes(part.parent)
            if free is not None and length > free + (0 if resumed else have):
                raise _CacheWriteFailed(None, needed=total)
        try:
            out = open(part, mode)
        except OSError as error:
            raise _CacheWriteFailed(error, needed=total) from error
        try:
            if progress is not None:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (TimeoutError, http.client.IncompleteRead, ConnectionError) as error:
                    raise _Interrupted(f"{type(error).__name__}: {error}") from error
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as error:
                    raise _CacheWriteFailed(error, needed=total) from error
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            try:
                out.close()  # flushes: a full disk can show here first
            except OSError as error:
                raise _CacheWriteFailed(error, needed=total) from error
        finally:
            with contextlib.suppress(OSError):  # after a failure; the first error is the story
                out.close()
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")
    return resumed


def _range_start(response) -> int | None:
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
