"""Save a Labels layer as a TIFF stack that keeps its axes and voxel size (npe2 writer).

A thin adapter: napari's layer state (``axis_labels``, ``scale``, ``units``, ``metadata``) is
turned into axis letters, pixel sizes and units for the one label-TIFF writer,
:func:`napari_sam2.outputs.export.write_labels_tiff`. Labels that fit in 16 bits become an
ImageJ hyperstack (Fiji opens it with the right axes and calibration); larger or negative ids
and axis orders ImageJ cannot hold go to OME-TIFF as 32-bit integers. Either way the file is
marked as labels, so this plugin's reader opens it as a Labels layer again with the same data,
axes, scale and units.

The layer's ``translate`` is kept as ImageJ's origin; OME files do not record it.

``.nii`` / ``.nii.gz`` go to :func:`write_labels_nifti`: with the source's affine and header
where the layer's ``metadata["radiology"]`` holds them (the layer read from, or made for, a
NIfTI file or DICOM series by this plugin's reader), else with an affine made from the layer's
``scale`` and ``translate`` (see :mod:`napari_sam2.radiology` for the convention).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from napari_sam2.outputs.export import write_labels_tiff
from napari_sam2.tiff_meta import LABELS_MARK

__all__ = ["LABELS_MARK", "write_labels", "write_labels_nifti"]

_LETTER_FOR_LABEL = {
    "t": "T", "time": "T", "frame": "T", "frames": "T",
    "z": "Z", "depth": "Z", "slice": "Z", "slices": "Z", "plane": "Z",
    "c": "C", "channel": "C", "channels": "C",
    "y": "Y", "row": "Y", "rows": "Y",
    "x": "X", "col": "X", "column": "X", "columns": "X",
}  # fmt: skip
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
_TIFF_AXES = "TZCYX"


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer (``data`` and its state ``meta``) to ``path``; return the paths."""
    if str(path).lower().endswith((".nii", ".nii.gz")):
        return write_labels_nifti(path, data, meta)
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
    scale = meta.get("scale")
    scale = [float(s) for s in scale] if scale is not None else []
    units = meta.get("units")
    if units is not None and not isinstance(units, str):
        units = [str(u) for u in units]  # pint units -> their names
        units = units if len(units) == labels.ndim else None
    translate = meta.get("translate")
    translate = [float(t) for t in translate] if translate is not None else []
    layer_meta = meta.get("metadata") or {}
    path = str(path)
    write_labels_tiff(
        labels,
        path,
        axes,
        scale=scale if len(scale) == labels.ndim else None,
        units=units,
        translate=translate if len(translate) == labels.ndim else None,
        frame_interval=layer_meta.get("frame_interval"),
        name=meta.get("name"),
        allow_ome=True,
    )
    return [path]


def write_labels_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer as a NIfTI label map (``.nii`` / ``.nii.gz``); return the paths.

    The source geometry in ``meta["metadata"]["radiology"]`` is used where its shape is the
    layer's; a layer of another shape is written with its own scale and translate (a warning
    says so, since it then does not share the source's header).
    """
    from napari_sam2.radiology import RadiologyDependencyError
    from napari_sam2.radiology import write_labels_nifti as write

    if meta.get("multiscale") and isinstance(data, list | tuple):
        data = data[0]
    labels = np.asarray(data)
    geometry = (meta.get("metadata") or {}).get("radiology")
    if geometry and list(geometry.get("shape", [])) != list(labels.shape):
        warnings.warn(
            f"the labels' shape {labels.shape} is not that of the volume they were read with "
            f"({tuple(geometry.get('shape', []))}): writing {path} with the layer's scale and "
            "translate instead of the source's header",
            stacklevel=2,
        )
        geometry = None
    units = meta.get("units")
    unit = None
    if units is not None:
        unit = str(units if isinstance(units, str) else list(units)[-1])
    try:
        scale, translate = meta.get("scale"), meta.get("translate")
        write(path, labels, geometry, scale=scale, translate=translate, units=unit)
    except RadiologyDependencyError as err:
        raise ImportError(str(err)) from None
    return [str(path)]


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
    return set(axes) <= set(_TIFF_AXES) and len(set(axes)) == len(axes) and axes[-2:] == "YX"
