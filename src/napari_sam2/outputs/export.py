"""Label arrays to files: ImageJ / OME TIFF with their geometry, and the Cell Tracking
Challenge format.

:func:`write_labels_tiff` is the one label-TIFF writer: the command line and the widget call it
through :func:`export_labels_tiff`, napari's *Save Layers* through ``napari_sam2._writer``.
Every export is written under a unique temporary name in the destination folder and renamed
when complete, so an interrupted or failed export never leaves a half-written file under the
final name. Label arrays are read one (Y, X) plane at a time, so memmaps and zarr arrays are
never loaded whole. A write that fails (a full disk, no permission) raises
:class:`OutputWriteError`: one line naming the output, what went wrong and what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_sam2.tiff_meta import (
    LABELS_MARK,
    imagej_unit,
    length_factor,
    napari_unit,
    ome_unit,
    time_factor,
)

__all__ = [
    "OutputWriteError",
    "write_atomically",
    "write_text_atomically",
    "export_labels_tiff",
    "write_labels_tiff",
    "export_ctc",
    "ctc_tracks",
    "IMAGEJ_AXES",
]

IMAGEJ_AXES = "TZCYXS"
"""ImageJ hyperstacks hold these axes, in this order (any subset)."""

_OME_AXES = "TZCYX"


class OutputWriteError(OSError):
    """An output that could not be written; the message names it and says what to do.

    ``errno`` is that of the underlying error (``errno.ENOSPC`` for a full disk).
    """

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without "[Errno 28]" and the file


_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space there or write to another disk",
    errno.EDQUOT: "the disk quota is used up: free some space or write to another disk",
    errno.EACCES: "permission denied: write to a folder you may write to",
    errno.EPERM: "permission denied: write to a folder you may write to",
    errno.EROFS: "the disk is read-only: write to another folder",
}


def write_error(path: str | os.PathLike, err: OSError) -> OutputWriteError:
    """``err`` from writing ``path`` (or a temporary file for it) as an :class:`OutputWriteError`
    naming ``path`` itself, not the temporary name."""
    if isinstance(err, OutputWriteError):
        return err
    reason = err.strerror or str(err) or type(err).__name__
    advice = _ADVICE.get(err.errno or -1, "check the folder and the disk, then try again")
    return OutputWriteError(
        err.errno or 0, f"cannot write {path}: {reason.rstrip('.')}; {advice}", str(path)
    )


def _planes(labels: Any) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    for idx in np.ndindex(*tuple(labels.shape)[:-2]):
        yield idx, np.asarray(labels[idx] if idx else labels[...])


def _value_range(labels: Any) -> tuple[int, int]:
    lo = hi = 0
    for _, plane in _planes(labels):
        if plane.size:
            lo, hi = min(lo, int(plane.min())), max(hi, int(plane.max()))
    return lo, hi


def _check_dtype(labels: Any) -> np.dtype:
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iub":
        raise TypeError(f"labels must have an integer dtype, got {dtype}")
    return dtype


def _ome_dtype(low: int, high: int) -> np.dtype:
    if low >= 0 and high <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    if low >= np.iinfo(np.int32).min and high <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise ValueError(
        f"label ids from {low} to {high} do not fit in 32 bits, which TIFF viewers expect; "
        "relabel the layer (e.g. skimage.segmentation.relabel_sequential) before saving"
    )


def _axis_units(axes: str, units: str | Sequence[Any] | None) -> dict[str, str | None]:
    """napari unit names per axis letter; one string applies to the spatial axes."""
    if units is None or isinstance(units, str):
        return {a: (napari_unit(units) if a in "ZYX" else None) for a in axes}
    units = list(units)
    if len(units) != len(axes):
        raise ValueError(f"units must give one unit per axis of {axes!r}: {units}")
    return {a: napari_unit(u) for a, u in zip(axes, units, strict=True)}


def _spatial_unit(axes: str, units: str | Sequence[Any] | None) -> Any:
    """The unit as given for X (or the one string): what the file records as its unit."""
    if units is None or isinstance(units, str):
        return units
    return list(units)[axes.index("X")]


def write_labels_tiff(
    labels: Any,
    path: str | os.PathLike,
    axes: str,
    *,
    scale: Sequence[float] | None = None,
    units: str | Sequence[Any] | None = None,
    translate: Sequence[float] | None = None,
    frame_interval: float | None = None,
    name: str | None = None,
    allow_ome: bool = False,
) -> Path:
    """Write ``labels`` as a TIFF that keeps its axes, pixel sizes and units; return the path.

    ``axes`` names every axis (letters of ``TZCYX``, ending with ``YX``). ``scale`` gives the
    size of a pixel along each axis (napari's layer ``scale``) and ``units`` its unit: one per
    axis (napari's layer ``units``: pint units or names such as ``"micrometer"``) or one
    string for the spatial axes (``"um"``, ``"mm"``...). Y and X go to the resolution tags,
    Z to ImageJ ``spacing`` (converted to the unit of X where the units differ), T to the frame
    interval in seconds (``finterval``). A T scale of 1 without a time unit counts frames
    (napari's default): then ``frame_interval`` (seconds), if given, is the interval.
    ``translate`` (napari's layer ``translate``, in the units of ``scale``) goes to ImageJ's
    ``xorigin``, ``yorigin`` and ``zorigin`` (in pixels).

    Labels of 0..65535 in ImageJ axis order are an ImageJ hyperstack (uint8 or uint16), which
    Fiji, napari and tifffile open with the same axes and calibration. Other labels are an
    OME-TIFF of uint32 or int32 where ``allow_ome``, else a ValueError. Both are compressed
    losslessly and marked as labels for this plugin's reader.
    """
    axes = axes.upper()
    shape = tuple(int(s) for s in labels.shape)
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} name {len(axes)} axes but labels have shape {shape}")
    if len(set(axes)) != len(axes) or not set(axes) <= set(_OME_AXES) or not axes.endswith("YX"):
        raise ValueError(
            f"axes {axes!r} must be a subset of {IMAGEJ_AXES!r} in that order, ending with YX"
        )
    dtype = _check_dtype(labels)
    sizes: dict[str, float] = {}
    if scale is not None:
        scale = [float(s) for s in scale]
        if len(scale) != len(shape) or min(scale) <= 0:
            raise ValueError(f"scale must give one positive size per axis of {shape}: {scale}")
        sizes = dict(zip(axes, scale, strict=True))
    origins: dict[str, float] = {}
    if translate is not None:
        translate = [float(t) for t in translate]
        if len(translate) != len(shape):
            raise ValueError(f"translate must give one offset per axis of {shape}: {translate}")
        for letter, offset in zip(axes, translate, strict=True):
            if letter in "ZYX" and offset:
                # ImageJ: world = (pixel - origin) * size, napari: world = pixel * size + offset
                origins[letter] = -offset / sizes.get(letter, 1.0)
    unit_of = _axis_units(axes, units)
    unit = unit_of["X"] or unit_of["Y"]
    for letter in "YZ":  # one length unit per file: sizes in another unit are converted
        if letter in sizes and unit_of.get(letter):
            sizes[letter] *= length_factor(unit_of[letter], unit)
    interval = None
    if "T" in sizes and (sizes["T"] != 1.0 or unit_of["T"] is not None):
        # a T scale of 1 without a time unit counts frames (napari's default): no interval
        interval = sizes["T"] * time_factor(unit_of["T"])
    if frame_interval is not None and interval is None:
        interval = float(frame_interval)

    ordered = [IMAGEJ_AXES.index(a) for a in axes] == sorted(IMAGEJ_AXES.index(a) for a in axes)
    small = dtype.kind == "b" or (dtype.kind == "u" and dtype.itemsize <= 2)
    low, high = (0, 0) if small else _value_range(labels)  # small types fit: no scan
    fits = low >= 0 and high <= 65535
    if ordered and fits:
        out_dtype = np.dtype(np.uint8) if dtype.itemsize == 1 else np.dtype(np.uint16)
        # "napari_layer" marks the file as labels for napari_sam2's reader
        metadata: dict[str, Any] = {"axes": axes, "napari_layer": "labels"}
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        if interval is not None:
            metadata["finterval"] = interval
        for letter, origin in origins.items():
            metadata[f"{letter.lower()}origin"] = origin
        # a unit this module does not know still goes to the file as given
        file_unit = imagej_unit(unit) if unit else imagej_unit(_spatial_unit(axes, units))
        if file_unit:
            metadata["unit"] = file_unit
        options: dict[str, Any] = {"imagej": True, "metadata": metadata}
    elif allow_ome:
        out_dtype = _ome_dtype(low, high)
        metadata = {"axes": axes, "Description": LABELS_MARK}
        if name:
            metadata["Name"] = str(name)
        for letter in "XYZ":
            if letter in sizes:
                metadata[f"PhysicalSize{letter}"] = sizes[letter]
                if ome_unit(unit):
                    metadata[f"PhysicalSize{letter}Unit"] = ome_unit(unit)
        if interval is not None:
            metadata["TimeIncrement"] = interval
            metadata["TimeIncrementUnit"] = "s"
        options = {"ome": True, "metadata": metadata}
    elif not ordered:
        raise ValueError(f"axes {axes!r} must be a subset of {IMAGEJ_AXES!r} in that order")
    else:
        raise ValueError(
            f"labels hold values {low}..{high}; ImageJ TIFF and CTC files store labels 0..65535: "
            "relabel the objects first"
        )
    if "X" in sizes and "Y" in sizes:
        options["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])

    def planes() -> Iterator[np.ndarray]:
        for _, plane in _planes(labels):
            yield plane.astype(out_dtype, copy=False)

    path = Path(path)
    _write_atomically(
        path,
        lambda handle: tifffile.imwrite(
            handle, planes(), shape=shape, dtype=out_dtype, compression="zlib", **options
        ),
    )
    return path


def write_atomically(path: str | os.PathLike, write: Any) -> Path:
    """Write through ``write(binary_file)`` into a new unique file beside ``path``, then rename
    it to ``path``; returns ``path``.

    The temporary file is in the same folder (a rename across file systems is a copy) and is
    created exclusively under a random name, so two writers in one folder never share it. On
    any failure (or an interruption) it is removed and ``path`` is left as it was; an
    ``OSError`` becomes an :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        while True:
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
            try:
                handle = open(tmp, "xb")  # noqa: SIM115 - closed below, before the rename
            except FileExistsError:
                continue
            break
        with handle:
            write(handle)
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`write_atomically` does."""
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


_write_atomically = write_atomically  # the name the label writer has used


def export_labels_tiff(
    labels: Any,
    path: str | os.PathLike,
    axes: str = "TYX",
    scale: Sequence[float] | None = None,
    unit: str | None = None,
    units: Sequence[Any] | None = None,
    translate: Sequence[float] | None = None,
) -> Path:
    """Write ``labels`` as an ImageJ hyperstack TIFF with ``axes`` metadata and geometry.

    ``axes`` names every axis of ``labels`` (a subset of ``TZCYX`` in that order, e.g. ``TYX``,
    ``ZYX``, ``TZYX``). ``scale`` gives the pixel size per axis in the same order (napari's
    layer ``scale``): Y and X go to the TIFF resolution tags, Z to ImageJ ``spacing`` and T to
    ``finterval``. ``units`` gives the unit per axis (napari's layer ``units``, e.g.
    ``("second", "micrometer", "micrometer", "micrometer")``); ``unit`` is one unit for the
    spatial axes (e.g. ``"um"``, ``"mm"``) and is used where ``units`` is not given. Labels are
    ``translate`` is the layer's offset (ImageJ origin). Labels are
    stored as uint8 or uint16 (ImageJ has no wider integer type); larger ids raise an error.
    napari's builtin reader, this plugin's reader and ``tifffile.imread`` read the file back as
    the same array, and this plugin's reader with the same axes, scale and units (see
    :func:`write_labels_tiff`).
    """
    return write_labels_tiff(
        labels,
        path,
        axes,
        scale=scale,
        units=units if units is not None else unit,
        translate=translate,
    )


def ctc_tracks(
    labels: Any, parents: Mapping[int, int] | None = None
) -> tuple[list[tuple[int, int, int, int]], dict[tuple[int, int], int]]:
    """Cell Tracking Challenge tracks of a (T, Y, X) label array.

    Each label is followed through the frames. Its first run of consecutive frames keeps its
    id. When it reappears after a gap, the new run gets a NEW id (one above the largest label,
    counting up) whose parent P is the id of the run before the gap, which is how the CTC format
    expresses gap closing (a track must be continuous in time). ``parents`` (``{track id:
    parent id}``, e.g. from :meth:`napari_sam2.tracking.lineage.Lineage.ctc_rows` of automatic
    tracking) gives the first run of a track its parent: the CTC id of the parent's last run
    that ends before the track begins (0 where the parent has none). Returns the
    ``(L, B, E, P)`` tracks sorted by L, and the map ``(label, frame) -> CTC id``.
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
    # per label: its runs of consecutive frames as (CTC id, first, last)
    runs_of: dict[int, list[tuple[int, int, int]]] = {}
    ids: dict[tuple[int, int], int] = {}
    for k in sorted(frames_of):
        runs: list[list[int]] = []
        for t in frames_of[k]:
            if runs and runs[-1][-1] == t - 1:
                runs[-1].append(t)
            else:
                runs.append([t])
        for i, run in enumerate(runs):
            label = k if i == 0 else next_id
            if i:
                next_id += 1
            runs_of.setdefault(k, []).append((label, run[0], run[-1]))
            ids.update({(k, t): label for t in run})
    tracks: list[tuple[int, int, int, int]] = []
    for k, runs_k in runs_of.items():
        parent = 0
        if parents:
            begin = runs_k[0][1]
            before = [r for r in runs_of.get(int(parents.get(k, 0) or 0), []) if r[2] < begin]
            parent = before[-1][0] if before else 0
        for label, first, last in runs_k:
            tracks.append((label, first, last, parent))
            parent = label
    tracks.sort()
    return tracks, ids


def export_ctc(
    labels: Any, folder: str | os.PathLike, parents: Mapping[int, int] | None = None
) -> list[tuple[int, int, int, int]]:
    """Write (T, Y, X) ``labels`` in the Cell Tracking Challenge result format.

    ``folder`` gets ``mask000.tif`` ... (``mask0000.tif`` ... for 1000 frames or more), one
    uint16 TIFF per frame, and ``res_track.txt`` with one line ``L B E P`` per track (label,
    begin frame, end frame, parent; 0 = no parent). Gap rule: see :func:`ctc_tracks` (an object
    reappearing after a gap continues as a new label whose parent is its id before the gap).
    ``parents`` (``{track id: parent id}``) gives each track's first run its parent, the
    parent's last run before it (divisions of automatic tracking).
    Existing ``mask*.tif`` and ``res_track.txt`` in ``folder`` are replaced.
    """
    folder = Path(folder)
    tracks, ids = ctc_tracks(labels, parents)
    if max((t[0] for t in tracks), default=0) > 65535:
        raise ValueError("more than 65535 track labels: the CTC format stores uint16 masks")
    num_frames = int(labels.shape[0])
    digits = 3 if num_frames <= 1000 else 4
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # a unique temporary folder beside the result: two exports never share it
        while True:
            tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.partial")
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            break
    except OSError as err:
        raise write_error(folder, err) from err
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
    except OSError as err:
        raise write_error(folder, err) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tracks
