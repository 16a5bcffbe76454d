"""The official SAM 2 checkpoints: where they come from, their checksums, the cache, offline files.

A checkpoint is only ever handed out after it has been verified: SAM 2.1 files against the
sha256 Meta published, SAM 2.0 files (whose sha256 we do not know) by loading them with torch
once and then against the sha256 recorded beside them at that moment. Downloads go to
``<file>.part`` and are renamed into place only after the check, so a cut connection or a
corrupt file never reaches the model; an interrupted download resumes with an HTTP Range
request.

Offline machines and clusters: put the ``.pt`` files in a folder and point
``NAPARI_SAM2_WEIGHTS`` at it, or pass the file's path, or copy the file into the cache
(``NAPARI_SAM2_CACHE`` moves the cache). Proxies are taken from the usual ``http_proxy`` /
``https_proxy`` / ``no_proxy`` environment variables (urllib's default handling).

This module imports neither napari nor Qt nor the network package: scripts and cluster jobs
use it as they are.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CACHE_ENV",
    "CHECKPOINT_NAMES",
    "MODEL_REGISTRY",
    "WEIGHTS_ENV",
    "CheckpointInfo",
    "WeightsError",
    "cache_dir",
    "checkpoint_info",
    "checkpoint_status",
    "ensure_checkpoint",
    "find_local_checkpoint",
    "local_weights_dirs",
    "verify_checkpoint",
]

CACHE_ENV = "NAPARI_SAM2_CACHE"
WEIGHTS_ENV = "NAPARI_SAM2_WEIGHTS"

ProgressCallback = Callable[[int, "int | None"], object]
Status = Literal["cached", "needs download", "local file"]

_SIZES = ("tiny", "small", "base_plus", "large")
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM20_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM21_SHA256 = {
    "tiny": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
    "small": "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
    "base_plus": "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    "large": "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
}
_CHUNK = 1 << 20
_SIDECAR_SUFFIX = ".sha256"


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or verified; the message says what to do."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One official checkpoint.

    ``sha256`` is None where Meta published no checksum (SAM 2.0): such files are verified by
    loading them with torch, and the sha256 measured then is kept beside the cached file.
    """

    name: str
    url: str
    sha256: str | None
    version: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _build_registry() -> dict[str, CheckpointInfo]:
    registry = {}
    for size in _SIZES:
        name = f"sam2.1_hiera_{size}"
        registry[name] = CheckpointInfo(
            name, f"{_SAM21_BASE}/{name}.pt", _SAM21_SHA256[size], "2.1"
        )
    for size in _SIZES:
        name = f"sam2_hiera_{size}"
        registry[name] = CheckpointInfo(name, f"{_SAM20_BASE}/{name}.pt", None, "2.0")
    return registry


MODEL_REGISTRY: dict[str, CheckpointInfo] = _build_registry()
CHECKPOINT_NAMES: tuple[str, ...] = tuple(MODEL_REGISTRY)


def checkpoint_info(name: str) -> CheckpointInfo:
    """The registry entry for an official checkpoint name such as ``"sam2.1_hiera_tiny"``."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"unknown checkpoint {name!r}: choose one of {', '.join(MODEL_REGISTRY)}, "
            "or give the path of a .pt file"
        ) from None


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
    """The user's own copy of an official checkpoint in a ``$NAPARI_SAM2_WEIGHTS`` folder."""
    filename = checkpoint_info(name).filename
    for folder in local_weights_dirs():
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def _is_path_like(name: str | os.PathLike) -> bool:
    if not isinstance(name, str):
        return True
    return name not in MODEL_REGISTRY and (
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
    if cached.is_file() and cached.stat().st_size > 0:
        return "cached"
    return "needs download"


def ensure_checkpoint(
    name: str | os.PathLike,
    progress: ProgressCallback | None = None,
    *,
    attempts: int = 3,
    timeout: float = 60.0,
) -> Path:
    """A verified local checkpoint file for ``name``, downloading it if needed.

    ``name`` is an official name (see ``MODEL_REGISTRY``) or the path of a ``.pt`` file.
    Lookup order: a path as given; a copy in a ``$NAPARI_SAM2_WEIGHTS`` folder; the cache;
    a download into the cache. ``progress(bytes_done, bytes_total)`` is called while
    downloading (``bytes_total`` is None when the server does not say); an exception raised
    by it cancels the download and is passed on, keeping the partial file so that the next
    call resumes. A cut connection is retried up to ``attempts`` times in all, resuming where
    it stopped. Raises :class:`WeightsError` when no verified file can be had.
    """
    if _is_path_like(name):
        return _checked_user_file(Path(name))
    info = checkpoint_info(name)

    local = find_local_checkpoint(name)
    if local is not None:
        if not verify_checkpoint(local, info):
            raise WeightsError(
                f"{local} (from ${WEIGHTS_ENV}) is not an intact {info.name} checkpoint "
                f"(checksum or format check failed). Replace it with a fresh copy of {info.url}."
            )
        return local

    cached = cache_dir() / info.filename
    if cached.is_file():
        if verify_checkpoint(cached, info):
            return cached
        # A damaged cache entry is replaced, never loaded (it would crash the model loader).
        _remove(cached, _sidecar(cached))

    with _download_lock(cached):
        # another process or thread may have fetched it while this one waited for the lock
        if not (cached.is_file() and verify_checkpoint(cached, info)):
            _download(info, cached, progress, attempts=attempts, timeout=timeout)
    return cached


@contextmanager
def _download_lock(destination: Path) -> Iterator[None]:
    """Hold an exclusive lock for downloading ``destination``, across processes and threads.

    Two downloads into one ``.part`` file would interleave their bytes and both fail the
    checksum. The lock is an OS file lock, released when its holder exits, even by a crash.
    The lock file lives in the temporary folder, so the cache holds only checkpoints.
    """
    key = hashlib.sha256(str(destination.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"napari-sam2-{key}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # e.g. another user's lock file for a shared cache: download unlocked
        fd = None
    if fd is None:
        yield
        return
    try:
        if os.name == "nt":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # gives up after 10 s: ask again
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            yield  # closing the descriptor releases the lock
    finally:
        os.close(fd)


def verify_checkpoint(path: Path, info: CheckpointInfo) -> bool:
    """Whether ``path`` is an intact copy of ``info``'s checkpoint (hashes the whole file)."""
    digest = _sha256_of(path)
    if info.sha256 is not None:
        return digest == info.sha256
    recorded = _read_sidecar(path)
    if recorded is not None:
        return digest == recorded
    # First sight of a SAM 2.0 file: no published checksum, so trust it if torch can load it
    # as a checkpoint, and remember its sha256 so that later damage is caught.
    if not _loads_as_checkpoint(path):
        return False
    _write_sidecar(path, digest)
    return True


def _checked_user_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise WeightsError(
            f"checkpoint file {path} does not exist: give the path of a SAM 2 .pt file "
            f"or one of the names {', '.join(MODEL_REGISTRY)}"
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint file {path} is empty: copy it again")
    # A file named like an official checkpoint with a published checksum can be checked,
    # which catches truncated copies on clusters before torch fails on them.
    for info in MODEL_REGISTRY.values():
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
    destination.parent.mkdir(parents=True, exist_ok=True)
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

        if verify_checkpoint(part, info):
            sidecar = _sidecar(part)
            if sidecar.exists():
                os.replace(sidecar, _sidecar(destination))
            os.replace(part, destination)
            return
        _remove(part, _sidecar(part))
        if resumed and not restarted_after_mismatch:
            # The old partial file may belong to another version of the file: start afresh once.
            restarted_after_mismatch = True
            attempt -= 1
            continue
        raise WeightsError(
            f"the download of {info.name} from {info.url} is corrupt (sha256 or format check "
            f"failed) and was discarded; the cache is unchanged. Try again later. "
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
        with open(part, mode) as out:
            if progress is not None:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (TimeoutError, http.client.IncompleteRead, ConnectionError) as error:
                    raise _Interrupted(f"{type(error).__name__}: {error}") from error
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")
    return resumed


def _range_start(response) -> int | None:
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _loads_as_checkpoint(path: Path) -> bool:
    import torch

    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: mmap is impossible, read it plainly
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    model = content.get("model") if isinstance(content, dict) else None
    return (
        isinstance(model, dict)
        and len(model) > 0
        and all(isinstance(value, torch.Tensor) for value in model.values())
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def _read_sidecar(path: Path) -> str | None:
    try:
        return json.loads(_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_sidecar(path: Path, digest: str) -> None:
    try:
        _sidecar(path).write_text(json.dumps({"sha256": digest}))
    except OSError:
        pass  # a read-only folder of the user's: the file stays usable, just checked again


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
