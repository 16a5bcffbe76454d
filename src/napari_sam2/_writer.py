"""Save a Labels layer as a TIFF stack that keeps its axes and voxel size (npe2 writer).

Labels that fit in 16 bits are written as an ImageJ hyperstack (Fiji opens it with the right
axes and calibration); larger or negative ids go to OME-TIFF as 32-bit integers. Both are
compressed losslessly (zlib) and marked as labels, so this plugin's reader opens them as a
Labels layer again with the same data, axes and scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tifffile

from ._reader import LABELS_MARK

_LETTER_FOR_LABEL = {
    "t": "T", "time": "T", "frame": "T", "frames": "T",
    "z": "Z", "depth": "Z", "slice": "Z", "slices": "Z", "plane": "Z",
    "c": "C", "channel": "C", "channels": "C",
    "y": "Y", "row": "Y", "rows": "Y",
    "x": "X", "col": "X", "column": "X", "columns": "X",
}  # fmt: skip
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
_IMAGEJ_ORDER = "TZCYX"
_IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "meter": "m"}
_OME_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m"}


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer (``data`` and its state ``meta``) to ``path``; return the paths."""
    if meta.get("multiscale") and isinstance(data, list | tuple):
        data = data[0]  # the full-resolution level
    labels = np.asarray(data)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"cannot save labels of dtype {labels.dtype}: label images hold integer ids; "
            "convert the layer with layer.data.astype(int) first"
        )
    if labels.ndim not in _DEFAULT_AXES:
        raise ValueError(
            f"cannot save a {labels.ndim}-D labels layer as TIFF: 2 to 5 axes (T, Z, C, Y, X) "
            "are supported; save fewer dimensions"
        )
    axes = _axes_for(meta, labels.ndim)
    scale = [float(s) for s in (meta.get("scale") if meta.get("scale") is not None else [])]
    scale = scale if len(scale) == labels.ndim else [1.0] * labels.ndim
    size = dict(zip(axes, scale, strict=True))
    unit = _spatial_unit(meta, axes)
    layer_meta = meta.get("metadata") or {}
    interval = size.get("T", 1.0) if size.get("T", 1.0) != 1.0 else layer_meta.get("frame_interval")

    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    path = str(path)
    if low >= 0 and high <= np.iinfo(np.uint16).max and _in_imagej_order(axes):
        metadata: dict[str, Any] = {"axes": axes, "napari_layer": "labels"}
        if "Z" in size:
            metadata["spacing"] = size["Z"]
        if unit is not None:
            metadata["unit"] = _IMAGEJ_UNITS.get(unit, unit)
        if interval is not None:
            metadata["finterval"] = float(interval)
        tifffile.imwrite(
            path,
            labels.astype(np.uint16, copy=False),
            imagej=True,
            resolution=(1.0 / size.get("X", 1.0), 1.0 / size.get("Y", 1.0)),
            metadata=metadata,
            compression="zlib",
        )
        return [path]

    dtype = _ome_dtype(low, high)
    ome: dict[str, Any] = {"axes": axes, "Description": LABELS_MARK}
    if meta.get("name"):
        ome["Name"] = str(meta["name"])
    for letter in "XYZ":
        if letter in size:
            ome[f"PhysicalSize{letter}"] = size[letter]
            if unit is not None and unit in _OME_UNITS:
                ome[f"PhysicalSize{letter}Unit"] = _OME_UNITS[unit]
    if interval is not None:
        ome["TimeIncrement"] = float(interval)
    tifffile.imwrite(
        path, labels.astype(dtype, copy=False), ome=True, metadata=ome, compression="zlib"
    )
    return [path]


def _axes_for(meta: dict, ndim: int) -> str:
    """TIFF axes for the layer: from the reader's metadata, the axis labels, or by rank."""
    recorded = (meta.get("metadata") or {}).get("axes")
    if isinstance(recorded, str) and len(recorded) == ndim and _valid(recorded):
        return recorded
    labels = meta.get("axis_labels") or ()
    letters = "".join(_LETTER_FOR_LABEL.get(str(label).lower(), "?") for label in labels)
    if len(letters) == ndim and _valid(letters):
        return letters
    return _DEFAULT_AXES[ndim]


def _valid(axes: str) -> bool:
    return set(axes) <= set(_IMAGEJ_ORDER) and len(set(axes)) == len(axes) and axes[-2:] == "YX"


def _in_imagej_order(axes: str) -> bool:
    positions = [_IMAGEJ_ORDER.index(a) for a in axes]
    return positions == sorted(positions)


def _spatial_unit(meta: dict, axes: str) -> str | None:
    units = meta.get("units")
    if units is None or isinstance(units, str):
        units = [units] * len(axes)
    if len(units) != len(axes):
        return None
    name = str(units[axes.index("X")]) if units[axes.index("X")] is not None else None
    return None if name in (None, "pixel", "dimensionless") else name


def _ome_dtype(low: int, high: int) -> type:
    if low >= 0 and high <= np.iinfo(np.uint32).max:
        return np.uint32
    if low >= np.iinfo(np.int32).min and high <= np.iinfo(np.int32).max:
        return np.int32
    raise ValueError(
        f"label ids from {low} to {high} do not fit in 32 bits, which TIFF viewers expect; "
        "relabel the layer (e.g. skimage.segmentation.relabel_sequential) before saving"
    )
