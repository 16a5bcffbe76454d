"""Stacks on disk as lazy array-likes, for the command line and the Python API.

NIfTI files and DICOM series open through :mod:`napari_sam2.radiology` as (Z, Y, X) volumes in
mm (nibabel's array proxies and per-slice DICOM reads keep them lazy).

TIFF files are read one page (plane) at a time with ordinary file reads, never memory mapped,
so reading a long stack does not grow the process's resident memory. ``.npy`` files are memory
mapped and zarr stores are opened lazily. Label results go to a :class:`ScratchLabels` file
that is written one plane at a time, for the same reason.

A file that cannot be read (not a TIFF, a truncated ``.npy``, a damaged page in the middle of
a compressed TIFF) raises :class:`StackReadError`: one line naming the file, the frame where it
is known, what is wrong and what to do, instead of the reading library's own text.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np
import tifffile

from napari_sam2.tiff_meta import physical_sizes

__all__ = [
    "OpenedStack",
    "TiffStack",
    "ScratchLabels",
    "StackReadError",
    "CheckedReads",
    "open_stack",
]

DAMAGED_ADVICE = "copy the file again from its source, or export it again"


class StackReadError(OSError):
    """A stack file, or one frame of it, that cannot be read.

    ``path`` is the file, ``frame`` the index along the frame axis where the failure happened
    (None when it happened opening the file or reading it whole), ``reason`` the underlying
    error in one line.
    """

    def __init__(self, path: str | os.PathLike, reason: str, frame: int | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.frame = frame
        where = f"frame {frame} of {self.path}" if frame is not None else str(self.path)
        super().__init__(f"cannot read {where}: {reason}; {DAMAGED_ADVICE}")


def _describe(err: BaseException) -> str:
    """An exception as ``module.Type: text`` on one line (``zlib.error: Error -3 ...``)."""
    kind = type(err)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__.split('.')[0]}.{name}"
    text = " ".join(str(err).split())
    return f"{name}: {text}" if text else name


class CheckedReads:
    """An array-like that reports a failed read as a :class:`StackReadError` naming the file
    and the frame (the index along ``frame_axis``), instead of a decoder's raw exception.

    Index errors and type errors (a bad key, not a bad file) pass through unchanged: callers
    such as the intensity sampler rely on them to fall back to another way of indexing.
    """

    def __init__(self, data: Any, path: str | os.PathLike, frame_axis: int = 0) -> None:
        self.data = data
        self.path = Path(path)
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)
        self.frame_axis = frame_axis % self.ndim if self.ndim else 0

    def __len__(self) -> int:
        return self.shape[0]

    def _frame_of(self, key: Any) -> int | None:
        key = key if isinstance(key, tuple) else (key,)
        if self.frame_axis < len(key) and isinstance(key[self.frame_axis], (int, np.integer)):
            t = int(key[self.frame_axis])
            return t + self.shape[self.frame_axis] if t < 0 else t
        return None

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.data[key]
        except (TypeError, IndexError, StackReadError):
            raise
        except Exception as err:
            raise StackReadError(self.path, _describe(err), self._frame_of(key)) from err

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        try:
            out = np.asarray(self.data)
        except Exception as err:
            raise StackReadError(self.path, _describe(err)) from err
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        close = getattr(self.data, "close", None)
        if close is not None:
            close()


@dataclass
class OpenedStack:
    """A lazy array-like with the axis letters, pixel sizes (per axis letter), their unit and
    the frame interval (seconds) the file records."""

    data: Any
    axes: str
    sizes: dict[str, float]
    unit: str | None
    frame_interval: float | None = None
    geometry: dict[str, Any] | None = None
    """For NIfTI and DICOM volumes: what :mod:`napari_sam2.radiology` keeps to write labels
    back with the source's affine (``metadata["radiology"]`` of the napari reader)."""


class TiffStack:
    """The first series of a TIFF file as a lazy array-like (``shape``, ``dtype``, indexing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        self._lock = threading.Lock()  # the file handle's position is shared state
        series = self._tif.series[0]
        self.shape = tuple(int(s) for s in series.shape)
        self.dtype = np.dtype(series.dtype)
        self.axes = series.axes
        self.ndim = len(self.shape)
        page_shape = tuple(int(s) for s in series.keyframe.shape)
        lead = self.shape[: self.ndim - len(page_shape)]
        # whether indexing the leading axes means reading whole pages
        self.paged = self.shape[len(lead) :] == page_shape and len(series.pages) == math.prod(lead)
        self._lead = lead
        self.page_shape = page_shape
        self._whole: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            key = tuple(slice(None) if k is Ellipsis else k for k in key)
        key = key + (slice(None),) * (self.ndim - len(key))
        if not self.paged:
            if self._whole is None:  # unusual layouts: read once
                with self._lock:
                    self._whole = self._tif.series[0].asarray()
            return self._whole[key]
        n_lead = len(self._lead)
        page_ids = np.arange(math.prod(self._lead)).reshape(self._lead)[key[:n_lead]]
        flat = np.atleast_1d(page_ids).ravel().tolist()
        with self._lock:
            data = self._tif.asarray(key=flat, series=0)
        data = np.asarray(data).reshape(np.shape(page_ids) + self.page_shape)
        return data[(slice(None),) * np.ndim(page_ids) + key[n_lead:]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        self._tif.close()


def open_stack(path: str | os.PathLike, frame_axis: int = 0) -> OpenedStack:
    """Open a ``.tif``/``.tiff``, ``.npy``, zarr, NIfTI (``.nii``, ``.nii.gz``) or DICOM
    stack (a folder of slices, or one slice file of the series) lazily, with its axes and pixel
    sizes. NIfTI and DICOM volumes come as (Z, Y, X) in mm, axial slices first (see
    :mod:`napari_sam2.radiology`), with their geometry in ``geometry``.

    The data is wrapped in :class:`CheckedReads`, so that a frame that cannot be read later
    (a damaged page) is reported with the file and its index along ``frame_axis``. A file
    that cannot be opened raises :class:`StackReadError` (or ``FileNotFoundError`` /
    ``ValueError`` for a missing file or an unknown format).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"stack {path} does not exist")
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        if path.is_dir():
            raise ValueError(f"stack {path} is a folder, not a TIFF file")
        try:
            stack = TiffStack(path)
        except (OSError, ValueError, KeyError, IndexError, struct_error) as err:
            # tifffile's TiffFileError (a ValueError) and friends: not a TIFF, bad header,
            # truncated before the first page, or a series it cannot lay out
            raise StackReadError(path, f"not a readable TIFF file ({_describe(err)})") from err
        sizes, unit, interval = {}, None, None
        try:
            sizes, unit, interval = physical_sizes(stack._tif)
        except Exception:  # noqa: BLE001 - pixel sizes are optional: a stack opens without them
            pass
        data = CheckedReads(stack, path, frame_axis)
        return OpenedStack(data, stack.axes, dict(sizes), unit, interval)
    if name.endswith(".npy"):
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            # "mmap length is greater than file size": the file was cut short
            raise StackReadError(
                path, f"not a readable .npy file, truncated or damaged ({_describe(err)})"
            ) from err
        return OpenedStack(CheckedReads(data, path, frame_axis), _default_axes(data.ndim), {}, None)
    if name.endswith(".zarr") or (path / ".zarray").exists() or (path / "zarr.json").exists():
        return _open_zarr(path, frame_axis)
    from napari_sam2 import radiology

    if radiology.is_radiology_path(path):
        return _open_radiology(path, frame_axis)
    raise ValueError(
        f"cannot read {path}: use a .tif/.tiff, .npy, .zarr, NIfTI (.nii, .nii.gz) or DICOM "
        "(a folder of slices or one .dcm file) stack"
    )


def _open_zarr(path: Path, frame_axis: int) -> OpenedStack:
    """A zarr array, opened lazily."""
    try:
        import zarr
    except ImportError:
        raise ValueError(f"{path} is a zarr store: install zarr to read it") from None
    try:
        data = zarr.open(str(path), mode="r")
    except Exception as err:
        raise StackReadError(path, f"not a readable zarr store ({_describe(err)})") from err
    if not hasattr(data, "shape"):
        raise ValueError(f"{path} is a zarr group; give the path of one array inside it")
    return OpenedStack(CheckedReads(data, path, frame_axis), _default_axes(data.ndim), {}, None)


def _open_radiology(path: Path, frame_axis: int) -> OpenedStack:
    """A NIfTI file or a DICOM series as a lazy (Z, Y, X) (or (T, Z, Y, X)) stack in mm."""
    from napari_sam2 import radiology

    try:
        volume = radiology.open_volume(path)
    except radiology.RadiologyDependencyError as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    except Exception as err:
        # nibabel's ImageFileError, pydicom's InvalidDicomError, gzip/zlib errors, ...
        raise StackReadError(path, _describe(err)) from err
    axes = "ZYX" if volume.data.ndim == 3 else "TZYX"
    sizes = dict(zip("ZYX", volume.spacing, strict=True))
    interval = volume.metadata.get("t_step") if "T" in axes else None
    data = CheckedReads(volume.data, path, frame_axis)
    return OpenedStack(data, axes, sizes, "mm", interval, geometry=volume.metadata)


def _default_axes(ndim: int) -> str:
    return {2: "YX", 3: "TYX", 4: "TZYX", 5: "TZCYX"}.get(ndim, "Q" * (ndim - 2) + "YX")


class ScratchLabels:
    """A (T, H, W) integer array in a raw file, read and written one plane at a time.

    Plain file reads and writes (no memory map), so the labels of a long stack do not count
    towards the process's resident memory. Indexing: ``labels[t]``, ``labels[t] = plane``,
    ``labels[(t,)]`` and ``labels[...]`` (everything, for small stacks and tests).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        dtype: Any,
        *,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self._plane = self.shape[1] * self.shape[2] * self.dtype.itemsize
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        self._fd = -1
        self._fd = os.open(self.path, flags, 0o600)
        try:
            os.ftruncate(self._fd, self._plane * self.shape[0])  # a sparse file of zeros
        except BaseException:
            self.close()
            raise

    @classmethod
    def create_in(
        cls, folder: str | os.PathLike, shape: tuple[int, int, int], dtype: Any
    ) -> ScratchLabels:
        """A new scratch file in ``folder`` under a name no other run uses: the process id
        and a random part (``.napari-sam2-PID-RANDOM.scratch``), created exclusively, so two
        runs writing into one folder never share it."""
        while True:
            name = f".napari-sam2-{os.getpid()}-{secrets.token_hex(4)}.scratch"
            try:
                return cls(Path(folder) / name, shape, dtype, exclusive=True)
            except FileExistsError:
                continue

    def _frame(self, key: Any) -> int:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (int, np.integer)):
            raise TypeError(f"ScratchLabels takes one frame index, got {key!r}")
        t = int(key) + (self.shape[0] if key < 0 else 0)
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {key} out of range for {self.shape[0]} frames")
        return t

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if key is Ellipsis:
            return np.stack([self[t] for t in range(self.shape[0])])
        t = self._frame(key)
        raw = os.pread(self._fd, self._plane, t * self._plane)
        return np.frombuffer(raw, self.dtype).reshape(self.shape[1:]).copy()

    def __setitem__(self, key: Any, plane: Any) -> None:
        t = self._frame(key)
        plane = np.ascontiguousarray(plane, dtype=self.dtype)
        if plane.shape != self.shape[1:]:
            raise ValueError(f"plane of shape {plane.shape} for labels of shape {self.shape}")
        os.pwrite(self._fd, plane.tobytes(), t * self._plane)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def close(self, remove: bool = True) -> None:
        """Close the file and (by default) delete it; safe to call more than once."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove and self.path.exists():
            self.path.unlink()
