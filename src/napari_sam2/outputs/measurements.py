"""Measurements of labelled objects: volumes and RECIST diameters, or areas per frame.

Pure numpy on a (N, H, W) label array read one plane at a time (numpy, memmap, zarr, the
CLI's scratch file), with object k as label k:

- ``axis="z"`` (a volume): per object its voxel count, volume, first and last slice, the
  slices it is in, and its longest in-plane diameter (the RECIST measure) with the slice it
  is on and its end points;
- ``axis="t"`` (a time-lapse): per object and frame where it is present its pixel count,
  area, centroid and mean intensity.

Physical sizes come from ``scale`` (pixel size per axis, as napari's layer ``scale``) and
``units`` (one unit for all axes, or one per axis as napari's ``layer.units``). Radiology
units (mm, cm, m) give lengths in mm, areas in mm^2 and volumes in mL (1 mL = 1000 mm^3);
microscopy units (um, nm) give um, um^2 and um^3. Without units the lengths are in the
units of ``scale`` ("units"), or in pixels where the pixel size is 1 ("px", "voxels").

The diameter is the longest distance between the centres of two pixels of the object in one
slice. The farthest pair of a set of points lies on its convex hull, and the hull of a mask
is the hull of each row's first and last pixel, so only those (at most 2 H points) are
hulled; distances use the anisotropic pixel size.

>>> table = measure(labels, scale=(5.0, 0.7, 0.7), units="mm", axis="z")
>>> table.rows[0].volume, table.rows[0].longest_diameter   # mL, mm
>>> table.to_csv("measurements.csv")
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.outputs.export import write_text_atomically
from napari_sam2.tiff_meta import length_factor, napari_unit

__all__ = [
    "AXES",
    "FrameMeasurement",
    "MeasurementTable",
    "VolumeMeasurement",
    "longest_diameter",
    "measure",
    "measure_frames",
    "measure_volume",
    "write_measurements_csv",
]

AXES = ("z", "t")
"""``"z"``: the first axis is depth (a volume); ``"t"``: it is time (a time-lapse)."""

_MICRO_UNITS = ("nanometer", "micrometer")
_LENGTH_UNITS = (*_MICRO_UNITS, "millimeter", "centimeter", "meter")


@dataclass(frozen=True)
class VolumeMeasurement:
    """One object of a volume. ``volume`` is in ``volume_unit`` (mL for mm-based scales);
    ``longest_diameter`` (in ``length_unit``) is the longest in-plane distance between two
    pixel centres of the object, on slice ``diameter_slice``, from pixel (``diameter_y0``,
    ``diameter_x0``) to (``diameter_y1``, ``diameter_x1``); ``mean_intensity`` is NaN
    without an image."""

    object_id: int
    voxels: int
    volume: float
    volume_unit: str
    first_slice: int
    last_slice: int
    slices: int
    longest_diameter: float
    length_unit: str
    diameter_slice: int
    diameter_y0: int
    diameter_x0: int
    diameter_y1: int
    diameter_x1: int
    mean_intensity: float

    @property
    def frame(self) -> int:
        """The slice to show for this object: the one with its longest diameter."""
        return self.diameter_slice


@dataclass(frozen=True)
class FrameMeasurement:
    """One object on one frame of a time-lapse: pixel count, area (in ``area_unit``),
    centroid in pixels (y, x) and mean intensity (NaN without an image)."""

    object_id: int
    frame: int
    pixels: int
    area: float
    area_unit: str
    centroid_y: float
    centroid_x: float
    mean_intensity: float


@dataclass
class MeasurementTable:
    """The measurements of one label array: rows of one kind, sorted by object (and frame)."""

    axis: str
    rows: list[Any] = field(default_factory=list)

    @property
    def columns(self) -> tuple[str, ...]:
        kind = VolumeMeasurement if self.axis == "z" else FrameMeasurement
        return tuple(f.name for f in fields(kind))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def csv_text(self) -> str:
        """The table as CSV text with a header row (floats with 6 significant digits)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_cell(v) for v in astuple(row)])
        return out.getvalue()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :meth:`csv_text` to ``path`` atomically (a temporary name, then renamed)."""
        return write_text_atomically(path, self.csv_text())


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_measurements_csv(table: MeasurementTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV to ``path`` atomically; returns the path."""
    return table.to_csv(path)


# --- geometry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Pixel size per axis in one length unit, and the names of the units of the results."""

    sizes: tuple[float, float, float]
    length: str
    area: str
    volume: str
    volume_factor: float  # volume in ``volume`` = voxels x prod(sizes) x volume_factor


def _geometry(ndim: int, scale: Sequence[float] | None, units: Any, axis: str) -> _Geometry:
    """The pixel sizes of the spatial axes converted to one unit, and that unit's names."""
    if scale is None:
        sizes = [1.0] * ndim
    else:
        sizes = [float(v) for v in scale]
        if len(sizes) != ndim:
            raise ValueError(f"scale has {len(sizes)} entries for labels with {ndim} axes")
        if not all(math.isfinite(v) and v > 0 for v in sizes):
            raise ValueError(f"scale must hold positive pixel sizes, got {tuple(scale)}")
    if units is None or isinstance(units, str) or not isinstance(units, Iterable):
        names = [napari_unit(units)] * ndim
    else:
        names = [napari_unit(u) for u in units]
        if len(names) != ndim:
            raise ValueError(f"units has {len(names)} entries for labels with {ndim} axes")
    spatial = range(ndim) if axis == "z" else range(1, ndim)
    # a unit that is no length (seconds on a time axis measured as depth) says nothing
    names = [n if n in _LENGTH_UNITS else None for n in names]
    known = [names[a] for a in spatial if names[a] is not None]
    if axis == "t":
        sizes[0] = 1.0  # the time axis has no length
    if not known:
        # pixel sizes of 1 without a unit (napari's default scale) are pixels
        pixels = all(sizes[a] == 1.0 for a in spatial)
        unit = "px" if pixels else "units"
        volume = "voxels" if pixels else "units^3"
        return _Geometry(tuple(sizes), unit, f"{unit}^2", volume, 1.0)  # type: ignore[arg-type]
    micro = known[0] in _MICRO_UNITS
    target = "micrometer" if micro else "millimeter"
    for a in spatial:
        # an axis without a unit is taken to share the unit the others have
        sizes[a] *= length_factor(names[a] or known[0], target)
    if micro:
        return _Geometry(tuple(sizes), "um", "um^2", "um^3", 1.0)  # type: ignore[arg-type]
    return _Geometry(tuple(sizes), "mm", "mm^2", "mL", 1e-3)  # type: ignore[arg-type]


# --- per plane -----------------------------------------------------------------------------


@dataclass
class _PlaneObjects:
    """Every object of one (H, W) plane at once: ids, pixel counts, coordinate and intensity
    sums, and the first and last pixel of each of its rows."""

    ids: np.ndarray
    counts: np.ndarray
    sum_y: np.ndarray
    sum_x: np.ndarray
    sum_intensity: np.ndarray | None
    row_groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _plane_objects(plane: np.ndarray, image: np.ndarray | None, rows: bool) -> _PlaneObjects:
    """One pass over the labelled pixels of ``plane`` (sorted by label, stably, so each
    label's pixels stay in row-major order)."""
    ys, xs = np.nonzero(plane)
    ids = plane[ys, xs].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids, ys, xs = ids[order], ys[order], xs[order]
    uniq, starts, counts = np.unique(ids, return_index=True, return_counts=True)
    sum_y = np.add.reduceat(ys.astype(np.float64), starts) if ids.size else np.zeros(0)
    sum_x = np.add.reduceat(xs.astype(np.float64), starts) if ids.size else np.zeros(0)
    sum_i = None
    if image is not None:
        values = np.asarray(image[ys, xs], dtype=np.float64)
        sum_i = np.add.reduceat(values, starts) if ids.size else np.zeros(0)
    groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if rows and ids.size:
        # a new (label, row) run starts where the label or the row changes
        new = np.flatnonzero((np.diff(ids) != 0) | (np.diff(ys) != 0)) + 1
        first = np.concatenate(([0], new))
        last = np.concatenate((new, [ids.size])) - 1
        run_ids = ids[first]
        bounds = np.searchsorted(run_ids, uniq, side="left")
        ends = np.searchsorted(run_ids, uniq, side="right")
        for k, b, e in zip(uniq.tolist(), bounds.tolist(), ends.tolist(), strict=True):
            sel = slice(b, e)
            groups[k] = (ys[first[sel]], xs[first[sel]], xs[last[sel]])
    return _PlaneObjects(uniq, counts, sum_y, sum_x, sum_i, groups)


def _hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of (N, 2) points sorted lexicographically (Andrew's
    monotone chain); collinear points are dropped."""
    if len(points) <= 2:
        return points

    def half(pts: Iterable[np.ndarray]) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in pts:
            while len(chain) >= 2:
                a, b = chain[-2], chain[-1]
                if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(points), half(points[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _diameter_of_rows(
    ys: np.ndarray, x_first: np.ndarray, x_last: np.ndarray, sy: float, sx: float
) -> tuple[float, tuple[int, int, int, int]]:
    """Longest distance between pixel centres of a mask given by each row's first and last
    pixel; returns it and its end points (y0, x0, y1, x1) in pixels."""
    # (y, x) of both ends of every row, sorted by y then x: the order the hull wants
    pix = np.stack([np.repeat(ys, 2), np.stack([x_first, x_last], axis=1).reshape(-1)], axis=1)
    pix = np.unique(pix, axis=0)
    hull = _hull(pix.astype(np.float64))
    phys = hull * np.array([sy, sx])
    diff = phys[:, None, :] - phys[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    a, b = sorted((tuple(int(v) for v in hull[i]), tuple(int(v) for v in hull[j])))
    return float(math.sqrt(dist2[i, j])), (a[0], a[1], b[0], b[1])


def longest_diameter(
    mask: np.ndarray, pixel_size: Sequence[float] = (1.0, 1.0)
) -> tuple[float, tuple[int, int, int, int]]:
    """The longest distance between the centres of two pixels of the (H, W) ``mask``, with
    pixels of ``pixel_size`` (y, x), and its end points (y0, x0, y1, x1) in pixels.

    An empty mask gives (0.0, (-1, -1, -1, -1)); one pixel gives 0.
    """
    objects = _plane_objects(np.asarray(mask).astype(bool).astype(np.uint8), None, rows=True)
    if 1 not in objects.row_groups:
        return 0.0, (-1, -1, -1, -1)
    return _diameter_of_rows(*objects.row_groups[1], float(pixel_size[0]), float(pixel_size[1]))


# --- the measurements ------------------------------------------------------------------------


def _planes(labels: Any, image: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    shape = tuple(labels.shape)
    if len(shape) != 3:
        raise ValueError(f"labels must have shape (N, H, W), got {shape}")
    if image is not None and tuple(image.shape) != shape:
        raise ValueError(
            f"image of shape {tuple(image.shape)} does not match the labels {shape}: give "
            "the (N, H, W) image the labels were drawn on (one channel)"
        )
    for i in range(shape[0]):
        plane = np.asarray(labels[i])
        if plane.dtype.kind not in "iub":
            raise TypeError(f"labels must have an integer dtype, got {plane.dtype}")
        yield i, plane, None if image is None else np.asarray(image[i])


def _wanted(ids: np.ndarray, object_ids: Iterable[int] | None) -> list[tuple[int, int]]:
    """(position, id) of the ids to measure."""
    keep = None if object_ids is None else {int(k) for k in object_ids}
    return [(n, k) for n, k in enumerate(ids.tolist()) if keep is None or k in keep]


def measure_volume(
    labels: Any,
    scale: Sequence[float] | None = None,
    units: Any = None,
    image: Any = None,
    object_ids: Iterable[int] | None = None,
) -> list[VolumeMeasurement]:
    """One :class:`VolumeMeasurement` per object of the (Z, Y, X) ``labels``, by object id."""
    geo = _geometry(3, scale, units, "z")
    sz, sy, sx = geo.sizes
    acc: dict[int, dict[str, Any]] = {}
    for z, plane, pixels in _planes(labels, image):
        objects = _plane_objects(plane, pixels, rows=True)
        for n, k in _wanted(objects.ids, object_ids):
            a = acc.setdefault(
                k, {"voxels": 0, "slices": [], "diameter": -1.0, "ends": None, "sum": 0.0}
            )
            a["voxels"] += int(objects.counts[n])
            a["slices"].append(z)
            if objects.sum_intensity is not None:
                a["sum"] += float(objects.sum_intensity[n])
            d, ends = _diameter_of_rows(*objects.row_groups[k], sy, sx)
            if d > a["diameter"]:  # ties keep the first slice
                a.update(diameter=d, ends=ends, diameter_slice=z)
    rows = []
    for k in sorted(acc):
        a = acc[k]
        voxels = a["voxels"]
        rows.append(
            VolumeMeasurement(
                object_id=k,
                voxels=voxels,
                volume=voxels * sz * sy * sx * geo.volume_factor,
                volume_unit=geo.volume,
                first_slice=min(a["slices"]),
                last_slice=max(a["slices"]),
                slices=len(a["slices"]),
                longest_diameter=a["diameter"],
                length_unit=geo.length,
                diameter_slice=a["diameter_slice"],
                diameter_y0=a["ends"][0],
                diameter_x0=a["ends"][1],
                diameter_y1=a["ends"][2],
                diameter_x1=a["ends"][3],
                mean_intensity=a["sum"] / voxels if image is not None else math.nan,
            )
        )
    return rows


def measure_frames(
    labels: Any,
    scale: Sequence[float] | None = None,
    units: Any = None,
    image: Any = None,
    object_ids: Iterable[int] | None = None,
) -> list[FrameMeasurement]:
    """One :class:`FrameMeasurement` per object and frame where it is present, in the order
    (object id, frame), of the (T, Y, X) ``labels``."""
    geo = _geometry(3, scale, units, "t")
    pixel_area = geo.sizes[1] * geo.sizes[2]
    rows = []
    for t, plane, pixels in _planes(labels, image):
        objects = _plane_objects(plane, pixels, rows=False)
        for n, k in _wanted(objects.ids, object_ids):
            count = int(objects.counts[n])
            mean = math.nan
            if objects.sum_intensity is not None:
                mean = float(objects.sum_intensity[n]) / count
            rows.append(
                FrameMeasurement(
                    object_id=k,
                    frame=t,
                    pixels=count,
                    area=count * pixel_area,
                    area_unit=geo.area,
                    centroid_y=float(objects.sum_y[n]) / count,
                    centroid_x=float(objects.sum_x[n]) / count,
                    mean_intensity=mean,
                )
            )
    rows.sort(key=lambda r: (r.object_id, r.frame))
    return rows


def measure(
    labels: Any,
    *,
    scale: Sequence[float] | None = None,
    units: Any = None,
    image: Any = None,
    axis: str = "z",
    object_ids: Iterable[int] | None = None,
) -> MeasurementTable:
    """Measure every object of the (N, H, W) ``labels`` (object k is label k).

    ``axis="z"``: the first axis is depth; one row per object (:class:`VolumeMeasurement`).
    ``axis="t"``: it is time; one row per object and frame where it is present
    (:class:`FrameMeasurement`). ``scale``: pixel size per axis (N, H, W), as napari's layer
    scale; ``units``: one unit name for all axes or one per axis (``"mm"``, ``"micrometer"``,
    napari's ``layer.units``); ``image``: the (N, H, W) intensities for the mean intensity;
    ``object_ids``: measure only these. Labels may be lazy: they are read plane by plane.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if axis == "z":
        return MeasurementTable("z", measure_volume(labels, scale, units, image, object_ids))
    return MeasurementTable("t", measure_frames(labels, scale, units, image, object_ids))
