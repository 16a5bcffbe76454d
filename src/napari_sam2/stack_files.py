"""Stacks on disk as lazy array-likes, for the command line and the Python API.

TIFF files are read one page (plane) at a time with ordinary file reads, never memory mapped,
so reading a long stack does not grow the process's resident memory. ``.npy`` files are memory
mapped and zarr stores are opened lazily. Label results go to a :class:`ScratchLabels` file
that is written one plane at a time, for the same reason.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["OpenedStack", "TiffStack", "ScratchLabels", "open_stack"]


@dataclass
class OpenedStack:
    """A lazy array-like with the axis letters and pixel sizes the file records."""

    data: Any
    axes: str
    sizes: dict[str, float]
    unit: str | None


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


def open_stack(path: str | os.PathLike) -> OpenedStack:
    """Open a ``.tif``/``.tiff``, ``.npy`` or zarr stack lazily, with its axes and pixel sizes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"stack {path} does not exist")
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        stack = TiffStack(path)
        sizes, unit = {}, None
        try:
            from napari_sam2._reader import _physical_sizes

            sizes, unit, _ = _physical_sizes(stack._tif)
        except Exception:  # noqa: BLE001 - pixel sizes are optional
            pass
        return OpenedStack(stack, stack.axes, dict(sizes), unit)
    if name.endswith(".npy"):
        data = np.load(path, mmap_mode="r")
        return OpenedStack(data, _default_axes(data.ndim), {}, None)
    if name.endswith(".zarr") or (path / ".zarray").exists() or (path / "zarr.json").exists():
        try:
            import zarr
        except ImportError:
            raise ValueError(f"{path} is a zarr store: install zarr to read it") from None
        data = zarr.open(str(path), mode="r")
        if not hasattr(data, "shape"):
            raise ValueError(f"{path} is a zarr group; give the path of one array inside it")
        return OpenedStack(data, _default_axes(data.ndim), {}, None)
    raise ValueError(f"cannot read {path}: use a .tif/.tiff, .npy or .zarr stack")


def _default_axes(ndim: int) -> str:
    return {2: "YX", 3: "TYX", 4: "TZYX", 5: "TZCYX"}.get(ndim, "Q" * (ndim - 2) + "YX")


class ScratchLabels:
    """A (T, H, W) integer array in a raw file, read and written one plane at a time.

    Plain file reads and writes (no memory map), so the labels of a long stack do not count
    towards the process's resident memory. Indexing: ``labels[t]``, ``labels[t] = plane``,
    ``labels[(t,)]`` and ``labels[...]`` (everything, for small stacks and tests).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], dtype: Any) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self._plane = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, self._plane * self.shape[0])  # a sparse file of zeros

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
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove and self.path.exists():
            self.path.unlink()
