"""Label arrays to files: an ImageJ-compatible TIFF and the Cell Tracking Challenge format.

Every export is written under a temporary name and renamed when complete, so an interrupted
or failed export never leaves a half-written file under the final name. Label arrays are read
one (Y, X) plane at a time, so memmaps and zarr arrays are never loaded whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["export_labels_tiff", "export_ctc", "ctc_tracks", "IMAGEJ_AXES"]

IMAGEJ_AXES = "TZCYXS"
"""ImageJ hyperstacks hold these axes, in this order (any subset)."""


def _planes(labels: Any) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    for idx in np.ndindex(*tuple(labels.shape)[:-2]):
        yield idx, np.asarray(labels[idx] if idx else labels[...])


def _label_dtype(labels: Any) -> np.dtype:
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iub":
        raise TypeError(f"labels must have an integer dtype, got {dtype}")
    if dtype in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return dtype
    lo = hi = 0
    for _, plane in _planes(labels):
        if plane.size:
            lo, hi = min(lo, int(plane.min())), max(hi, int(plane.max()))
    if lo < 0 or hi > 65535:
        raise ValueError(
            f"labels hold values {lo}..{hi}; ImageJ TIFF and CTC files store labels 0..65535: "
            "relabel the objects first"
        )
    return np.dtype(np.uint16)


def export_labels_tiff(
    labels: Any,
    path: str | os.PathLike,
    axes: str = "TYX",
    scale: Sequence[float] | None = None,
    unit: str | None = None,
) -> Path:
    """Write ``labels`` as an ImageJ hyperstack TIFF with ``axes`` metadata.

    ``axes`` names every axis of ``labels`` (a subset of ``TZCYX`` in that order, e.g. ``TYX``,
    ``ZYX``, ``TZYX``). ``scale`` gives the pixel size per axis in the same order (napari's
    layer ``scale``): Y and X go to the TIFF resolution tags, Z to ImageJ ``spacing`` and T to
    ``finterval``; ``unit`` (e.g. ``"um"``, ``"mm"``) to ImageJ ``unit``. Labels are stored as
    uint8 or uint16 (ImageJ has no wider integer type); larger ids raise an error. napari's
    builtin reader and ``tifffile.imread`` read the file back as the same array.
    """
    axes = axes.upper()
    shape = tuple(int(s) for s in labels.shape)
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} name {len(axes)} axes but labels have shape {shape}")
    positions = [IMAGEJ_AXES.find(a) for a in axes]
    if -1 in positions or positions != sorted(positions) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} must be a subset of {IMAGEJ_AXES!r} in that order")
    if not axes.endswith("YX"):
        raise ValueError(f"axes {axes!r} must end with YX")
    dtype = _label_dtype(labels)
    # "napari_layer" marks the file as labels for napari_sam2's reader (see _reader.py).
    metadata: dict[str, Any] = {"axes": axes, "napari_layer": "labels"}
    resolution = None
    if scale is not None:
        scale = [float(s) for s in scale]
        if len(scale) != len(shape) or min(scale) <= 0:
            raise ValueError(f"scale must give one positive size per axis of {shape}: {scale}")
        sizes = dict(zip(axes, scale, strict=True))
        resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"])
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        if "T" in sizes:
            metadata["finterval"] = sizes["T"]
    if unit:
        metadata["unit"] = unit
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")

    def planes() -> Iterator[np.ndarray]:
        for _, plane in _planes(labels):
            yield plane.astype(dtype, copy=False)

    try:
        tifffile.imwrite(
            tmp,
            planes(),
            shape=shape,
            dtype=dtype,
            imagej=True,
            metadata=metadata,
            resolution=resolution,
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def ctc_tracks(labels: Any) -> tuple[list[tuple[int, int, int, int]], dict[tuple[int, int], int]]:
    """Cell Tracking Challenge tracks of a (T, Y, X) label array.

    Each label is followed through the frames. Its first run of consecutive frames keeps its
    id. When it reappears after a gap, the new run gets a NEW id (one above the largest label,
    counting up) whose parent P is the id of the run before the gap, which is how the CTC format
    expresses gap closing (a track must be continuous in time). Returns the ``(L, B, E, P)``
    tracks sorted by L, and the map ``(label, frame) -> CTC id``.
    """
    shape = tuple(labels.shape)
    if len(shape) != 3:
        raise ValueError(f"CTC export takes (T, Y, X) labels, got shape {shape}")
    frames_of: dict[int, list[int]] = {}
    for t in range(shape[0]):
        for k in np.unique(np.asarray(labels[t])):
            if k != 0:
                frames_of.setdefault(int(k), []).append(t)
    next_id = max(frames_of, default=0) + 1
    tracks: list[tuple[int, int, int, int]] = []
    ids: dict[tuple[int, int], int] = {}
    for k in sorted(frames_of):
        runs: list[list[int]] = []
        for t in frames_of[k]:
            if runs and runs[-1][-1] == t - 1:
                runs[-1].append(t)
            else:
                runs.append([t])
        parent = 0
        for i, run in enumerate(runs):
            label = k if i == 0 else next_id
            if i:
                next_id += 1
            tracks.append((label, run[0], run[-1], parent))
            ids.update({(k, t): label for t in run})
            parent = label
    tracks.sort()
    return tracks, ids


def export_ctc(labels: Any, folder: str | os.PathLike) -> list[tuple[int, int, int, int]]:
    """Write (T, Y, X) ``labels`` in the Cell Tracking Challenge result format.

    ``folder`` gets ``mask000.tif`` ... (``mask0000.tif`` ... for 1000 frames or more), one
    uint16 TIFF per frame, and ``res_track.txt`` with one line ``L B E P`` per track (label,
    begin frame, end frame, parent; 0 = no parent). Gap rule: see :func:`ctc_tracks` (an object
    reappearing after a gap continues as a new label whose parent is its id before the gap).
    Existing ``mask*.tif`` and ``res_track.txt`` in ``folder`` are replaced.
    """
    folder = Path(folder)
    tracks, ids = ctc_tracks(labels)
    if max((t[0] for t in tracks), default=0) > 65535:
        raise ValueError("more than 65535 track labels: the CTC format stores uint16 masks")
    num_frames = int(labels.shape[0])
    digits = 3 if num_frames <= 1000 else 4
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for t in range(num_frames):
            plane = np.asarray(labels[t])
            out = np.zeros(plane.shape, np.uint16)
            for k in np.unique(plane):
                if k != 0:
                    out[plane == k] = ids[(int(k), t)]
            tifffile.imwrite(tmp / f"mask{t:0{digits}d}.tif", out)
        lines = "".join(f"{label} {b} {e} {p}\n" for label, b, e, p in tracks)
        (tmp / "res_track.txt").write_text(lines)
        folder.mkdir(parents=True, exist_ok=True)
        for old in list(folder.glob("mask*.tif")) + [folder / "res_track.txt"]:
            if old.exists():
                old.unlink()
        for item in sorted(tmp.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tracks
