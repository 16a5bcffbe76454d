"""Open TIFF stacks, NIfTI files and DICOM series with their axes and voxel size (npe2 reader).

NIfTI (``.nii``, ``.nii.gz``) and DICOM (a folder of slices, or one ``.dcm`` file: the whole
series it belongs to) open through :mod:`napari_sam2.radiology` as (z, y, x) volumes, axial
slices first in LPS directions, with the spacing as ``scale`` in mm, the position of the first
voxel as ``translate`` and the source geometry in ``metadata["radiology"]`` (what the NIfTI
writer needs to put labels back on the source). CT values are Hounsfield units.

The axes come from the file (ImageJ hyperstacks, OME-TIFF, tifffile's shaped JSON), so a
time-lapse opens as (t, y, x) and a volume as (z, y, x) with the voxel size as ``scale``.
Decisions:

- the time axis keeps scale 1, so that world coordinates along t are frame indices; the frame
  interval is kept in ``metadata["frame_interval"]``;
- an integer image becomes a Labels layer when the file says so (written by this plugin's
  writer) or when its name says so (``*labels*``, ``*mask*``, ``*seg*``, ``*annotation*``);
- channels (a ``C`` axis) open as one layer per channel; RGB samples open as an RGB image;
- x / y pixel sizes from plain TIFF resolution tags are used only in centimetres
  (what microscopes write); inch resolution is print DPI, not a physical size.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .stack_files import TiffStack
from .tiff_meta import LABELS_MARK, marked_as_labels, physical_sizes, pixel_origins

__all__ = ["LABELS_MARK", "napari_get_reader", "read_radiology", "read_tiff"]

# Images above this size open as lazy dask arrays; labels always load (napari edits them).
LAZY_BYTES = 1 << 30

_LABEL_WORDS = {"label", "labels", "mask", "masks", "seg", "segmentation", "annotation"}

# TIFF axis letter -> napari axis label
AXIS_NAMES = {"T": "t", "Z": "z", "C": "c", "Y": "y", "X": "x", "S": "s"}
_GENERIC = "i"  # tifffile's I / Q / other: a stack axis the file does not name

LayerData = tuple[Any, dict, str]


# CT opens in a soft-tissue window (width 400, level 40 HU) rather than the full range
CT_CONTRAST_LIMITS = (-160.0, 240.0)


def napari_get_reader(path: str | list[str]):
    """The reader for ``path``: :func:`read_tiff` for one ``.tif`` / ``.tiff`` file,
    :func:`read_radiology` for a NIfTI file, a DICOM file or folder, or several DICOM files
    (one series); None for anything else."""
    from . import radiology

    if isinstance(path, list):
        if len(path) > 1 and all(str(p).lower().endswith(".dcm") for p in path):
            return read_radiology
        if len(path) != 1:
            return None
        path = path[0]
    if str(path).lower().endswith((".tif", ".tiff")):
        return read_tiff
    if radiology.is_radiology_path(path):
        return read_radiology
    return None


def read_radiology(path: str | list[str]) -> list[LayerData]:
    """A NIfTI file or DICOM series (every series of a folder, largest first) as layers.

    An integer NIfTI whose header says "label" (as this plugin's writer marks it) or whose
    name says labels (``*_seg.nii.gz``, ``*mask*``) opens as a Labels layer.
    """
    from . import radiology

    if isinstance(path, list) and len(path) == 1:
        path = path[0]
    try:
        if isinstance(path, list):
            volumes = radiology.open_dicom(path)
        elif radiology.is_nifti_path(path):
            volumes = [radiology.open_nifti(path)]
        else:
            volumes = radiology.open_dicom(path)
    except radiology.RadiologyDependencyError as err:
        raise ImportError(str(err)) from None
    layers = []
    for volume in volumes:
        data = volume.data
        is_labels = np.issubdtype(data.dtype, np.integer) and (
            volume.is_labels
            or (volume.metadata["format"] == "nifti" and _named_like_labels(Path(path)))
        )
        if is_labels or math.prod(data.shape) * data.dtype.itemsize <= LAZY_BYTES:
            array = np.asarray(data)  # labels load: napari edits them in memory
        else:
            import dask.array as da  # a napari dependency

            chunks = (1,) * (data.ndim - 2) + data.shape[-2:]
            array = da.from_array(data, chunks=chunks, asarray=True, fancy=False, name=False)
        ndim = data.ndim
        kwargs: dict[str, Any] = {
            "name": volume.name,
            "scale": (1.0,) * (ndim - 3) + tuple(volume.spacing),
            "translate": (0.0,) * (ndim - 3) + tuple(volume.origin),
            "units": ("pixel",) * (ndim - 3) + ("mm",) * 3,
            "axis_labels": ("t", "z", "y", "x")[-ndim:],
            "metadata": {
                "axes": "TZYX"[-ndim:],
                "source": volume.metadata["source"],
                "radiology": volume.metadata,
            },
        }
        if is_labels:
            layers.append((array, kwargs, "labels"))
            continue
        if volume.metadata.get("modality") == "CT":
            kwargs["contrast_limits"] = CT_CONTRAST_LIMITS
        layers.append((array, kwargs, "image"))
    return layers


def read_tiff(path: str | list[str]) -> list[LayerData]:
    """Read a TIFF stack into napari layer data with axis labels, scale and units."""
    if isinstance(path, list):
        path = path[0]
    path = Path(path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape = tuple(int(n) for n in series.shape)
        axes = _normalise_axes(series.axes, len(shape))
        sizes, unit, frame_interval = physical_sizes(tif)
        origins = pixel_origins(tif)
        labels_marked = marked_as_labels(tif)
        rgb = "S" in axes and shape[axes.index("S")] in (3, 4) and tif.pages[0].photometric == 2
        is_labels = np.issubdtype(series.dtype, np.integer) and (
            labels_marked or _named_like_labels(path)
        )
        data = None
        if is_labels or math.prod(shape) * series.dtype.itemsize <= LAZY_BYTES:
            data = series.asarray()
    if data is None:
        data = _lazy_pages(path)

    if rgb and not axes.endswith("S"):  # planar RGB: napari wants the samples last
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"

    if not rgb:
        axes = axes.replace("S", "C")  # samples that are not RGB are channels
    spatial_axes = axes[:-1] if rgb else axes
    scale = tuple(sizes.get(letter, 1.0) for letter in spatial_axes)
    metadata = {"axes": spatial_axes, "source": str(path)}
    if frame_interval is not None:
        metadata["frame_interval"] = frame_interval
    kwargs: dict[str, Any] = {
        "name": path.stem,
        "scale": scale,
        "axis_labels": tuple(AXIS_NAMES.get(a, _GENERIC) for a in spatial_axes),
        "metadata": metadata,
    }
    if origins:
        kwargs["translate"] = tuple(
            -origins.get(letter, 0.0) * sizes.get(letter, 1.0) for letter in spatial_axes
        )
    if unit is not None:
        kwargs["units"] = tuple(unit if a in "ZYX" else "pixel" for a in spatial_axes)

    if is_labels:
        return [(data, kwargs, "labels")]
    if rgb:
        return [(data, {**kwargs, "rgb": True}, "image")]
    if "C" in axes and data.shape[axes.index("C")] > 1:
        return _split_channels(data, axes, kwargs)
    return [(data, kwargs, "image")]


def _lazy_pages(path: Path) -> Any:
    """The first series as a dask array read page by page (napari reads what it shows, the
    tracker what it tracks); the whole array where pages do not map onto the leading axes."""
    stack = TiffStack(path)
    if not stack.paged:
        data = stack[...]
        stack.close()
        return data
    import dask.array as da  # a napari dependency

    lead = len(stack.shape) - len(stack.page_shape)
    chunks = (1,) * lead + stack.page_shape
    return da.from_array(stack, chunks=chunks, asarray=True, fancy=False, name=False)


def _split_channels(data: np.ndarray, axes: str, kwargs: dict) -> list[LayerData]:
    """One image layer per channel, each with the other axes' labels and scale."""
    c = axes.index("C")
    keep = [i for i in range(len(axes)) if i != c]
    layers = []
    for index in range(data.shape[c]):
        layer_kwargs = {
            **kwargs,
            "name": f"{kwargs['name']} [c{index}]",
            "scale": tuple(kwargs["scale"][i] for i in keep),
            "axis_labels": tuple(kwargs["axis_labels"][i] for i in keep),
            "metadata": {**kwargs["metadata"], "axes": axes.replace("C", ""), "channel": index},
            "blending": "additive",
        }
        for key in ("units", "translate"):
            if key in kwargs:
                layer_kwargs[key] = tuple(kwargs[key][i] for i in keep)
        layers.append((np.take(data, index, axis=c), layer_kwargs, "image"))
    return layers


def _normalise_axes(axes: str, ndim: int) -> str:
    """Upper-case TIFF axes, one letter per dimension; unnamed stack axes become ``I``."""
    axes = axes.upper()
    if len(axes) != ndim:
        axes = "I" * (ndim - 2) + "YX"
    return "".join(a if a in "TZCYXS" else "I" for a in axes)


def _named_like_labels(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz").removesuffix(".nii")
    name = name.removesuffix(".tiff").removesuffix(".tif").removesuffix(".ome")
    return bool(_LABEL_WORDS & set(re.split(r"[^a-z0-9]+", name)))
