"""NIfTI files and DICOM series as (Z, Y, X) volumes with their geometry, and labels back.

Orientation convention: every volume is read as (Z, Y, X) with axial slices along the first
axis, in the patient's LPS directions, as radiology viewers lay out an axial stack:

- Z (axis 0) runs inferior -> superior (slice 0 is the lowest),
- Y (axis 1, rows) runs anterior -> posterior (the patient's front at the top of the screen),
- X (axis 2, columns) runs right -> left (the patient's right on the viewer's left).

A volume stored in another orientation (sagittal or coronal slices, a RAS NIfTI) is reordered
and flipped to this one; oblique volumes go to the nearest such axes. The layer's ``scale`` is
the voxel spacing (mm) and its ``translate`` the centre of voxel (0, 0, 0) in LPS mm, ordered
(S, P, L) like the axes, so that volumes of one patient overlay in napari.

What is read is kept in ``metadata["radiology"]`` (a plain dict): the source's voxel-to-RAS
affine and shape, the (Z, Y, X) index-to-RAS affine, and for NIfTI the raw header (so labels go
back with the same affine, shape, orientation and qform/sform codes), for DICOM the series
geometry and UIDs. :func:`write_labels_nifti` writes a label volume with that geometry.

Intensities: NIfTI ``scl_slope``/``scl_inter`` and DICOM RescaleSlope/RescaleIntercept are
applied (CT in Hounsfield units). Integral scalings give the smallest signed integer type that
holds the stored range (12-bit CT with intercept -1024: int16); other scalings give float32.

nibabel and pydicom are optional (``pip install 'napari-sam2[radiology]'``): pure-Python
wheels, small, maintained, with lazy reads (nibabel's array proxies; pydicom reads one slice
file at a time), where SimpleITK would bring a compiled ITK of some 50 MB for the same job.
DICOM SEG output is not written: labels of a DICOM series go to NIfTI with the series geometry
as affine, which 3D Slicer and ITK-SNAP overlay on the series.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EXTRA_HINT",
    "NIFTI_SUFFIXES",
    "RadiologyDependencyError",
    "Reoriented",
    "DicomSlices",
    "Volume",
    "dicom_files_in",
    "is_dicom_path",
    "is_nifti_path",
    "is_radiology_path",
    "nifti_stem",
    "open_dicom",
    "open_nifti",
    "open_volume",
    "read_dicom_series",
    "labels_dtype",
    "write_labels_nifti",
]

EXTRA_HINT = "pip install 'napari-sam2[radiology]'"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_INTENT_LABEL = 1002  # the NIfTI-1 intent code of a label map
# output axis -> (RAS axis, direction along it): Z -> +S, Y -> -A (posterior), X -> -R (left)
_TARGET = ((2, 1), (1, -1), (0, -1))
_OBLIQUE_TOLERANCE = 1e-4
_DICOM_SCAN_LIMIT = 64  # files looked at to decide whether a folder is a DICOM series


class RadiologyDependencyError(ImportError):
    """nibabel or pydicom is missing; the message says which extra to install."""


def _require(module: str, what: str) -> Any:
    """Import ``module`` or say which extra installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise RadiologyDependencyError(
            f"reading and writing {what} needs {module}, which is not installed: "
            f"{EXTRA_HINT} (or pip install {module})"
        ) from None


# --- recognising files --------------------------------------------------------------------


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """The name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom_path(path: str | os.PathLike) -> bool:
    """A ``.dcm`` file, a file with the DICOM preamble, or a folder holding such files.

    Only the first files of a folder are looked at (DICOM folders hold one kind of file; a
    ``DICOMDIR`` alone does not count), so that the check stays cheap for napari's reader
    lookup on any folder.
    """
    path = Path(path)
    if path.is_dir():
        for count, entry in enumerate(sorted(path.iterdir())):
            if count >= _DICOM_SCAN_LIMIT:
                break
            if entry.is_file() and entry.name.upper() != "DICOMDIR" and _is_dicom_file(entry):
                return True
        return False
    return path.name.lower().endswith(".dcm") or (path.is_file() and _has_dicom_preamble(path))


def _is_dicom_file(path: Path) -> bool:
    return path.name.lower().endswith(".dcm") or _has_dicom_preamble(path)


def is_radiology_path(path: str | os.PathLike) -> bool:
    """NIfTI or DICOM (a file or a folder of slices)."""
    return is_nifti_path(path) or is_dicom_path(path)


def dicom_files_in(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files directly in ``folder`` (not its subfolders), sorted by name."""
    return [
        entry
        for entry in sorted(Path(folder).iterdir())
        if entry.is_file() and entry.name.upper() != "DICOMDIR" and _is_dicom_file(entry)
    ]


# --- orientation --------------------------------------------------------------------------


def _orientation(affine: np.ndarray) -> list[tuple[int, int]]:
    """For each voxel axis of ``affine``: the RAS axis it runs along most and the direction
    (+1 or -1). Oblique axes go to the nearest world axis; strongest alignments are assigned
    first, so that two voxel axes never share a world axis."""
    rzs = np.asarray(affine, float)[:3, :3]
    zooms = np.linalg.norm(rzs, axis=0)
    if np.any(zooms == 0) or abs(np.linalg.det(rzs)) < 1e-12:
        raise ValueError("the affine does not map the voxel axes onto three directions")
    cosines = rzs / zooms
    found: list[tuple[int, int] | None] = [None, None, None]
    free = {0, 1, 2}
    ranked = sorted(((abs(cosines[r, c]), c, r) for c in range(3) for r in range(3)), reverse=True)
    for _, c, r in ranked:
        if found[c] is None and r in free:
            found[c] = (r, 1 if cosines[r, c] > 0 else -1)
            free.discard(r)
    return [pair for pair in found if pair is not None]


def _axis_codes(affine: np.ndarray) -> str:
    """Where each voxel axis points, as nibabel writes it ("RAS", "LPS", "ASR", ...)."""
    return "".join(("RAS" if d > 0 else "LPI")[r] for r, d in _orientation(affine))


def _axis_map(affine: np.ndarray) -> list[tuple[int, bool]]:
    """For output axes (Z, Y, X): the source spatial axis each one reads and whether flipped,
    so that every volume gets the axial-first LPS layout."""
    out: list[tuple[int, bool]] = []
    for target_axis, target_direction in _TARGET:
        for src_axis, (ras_axis, direction) in enumerate(_orientation(affine)):
            if ras_axis == target_axis:
                out.append((src_axis, direction != target_direction))
    return out


def _range_to_slice(r: range) -> slice:
    """A slice selecting exactly the indices of ``r`` (which may step backwards)."""
    if len(r) == 0:
        return slice(0, 0)
    stop = r[-1] + (1 if r.step > 0 else -1)
    return slice(r[0], None if stop < 0 else stop, r.step)


class Reoriented:
    """A lazy (extra..., Z, Y, X) view of a source array-like in another axis order.

    ``axes[o]`` is ``(source_axis, flipped)`` for each output axis ``o``. Integer and slice
    keys are mapped onto the source (a nibabel array proxy reads only those voxels; a DICOM
    series only those slice files) and the result is transposed; other keys read everything.
    Reads are cast to ``dtype`` (integral rescaling comes back as float from the source).
    """

    def __init__(self, source: Any, axes: Sequence[tuple[int, bool]], dtype: Any) -> None:
        self.source = source
        self.axes = [(int(a), bool(f)) for a, f in axes]
        self.source_shape = tuple(int(s) for s in source.shape)
        self.shape = tuple(self.source_shape[a] for a, _ in self.axes)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _normalise(self, key: Any) -> tuple | None:
        key = key if isinstance(key, tuple) else (key,)
        dots = [i for i, k in enumerate(key) if k is Ellipsis]  # `in` would compare arrays
        if len(dots) > 1:
            return None
        if dots:
            i = dots[0]
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D volume")
        key = key + (slice(None),) * (self.ndim - len(key))
        if not all(isinstance(k, (int, np.integer, slice)) for k in key):
            return None
        return key

    def __getitem__(self, key: Any) -> np.ndarray:
        norm = self._normalise(key)
        if norm is None:  # fancy indexing: rare here, read the whole volume
            return np.asarray(self)[key]
        src_key: list[Any] = [slice(None)] * self.ndim
        for o, k in enumerate(norm):
            src, flip = self.axes[o]
            n = self.source_shape[src]
            if isinstance(k, slice):
                r = range(n)[k]
                if flip:
                    r = range(n - 1 - r.start, n - 1 - r.stop, -r.step)
                src_key[src] = _range_to_slice(r)
            else:
                k = int(k)
                if not -n <= k < n:
                    raise IndexError(f"index {k} out of range for an axis of {n}")
                k = k + n if k < 0 else k
                src_key[src] = n - 1 - k if flip else k
        data = np.asarray(self.source[tuple(src_key)])
        kept = [s for s in range(self.ndim) if isinstance(src_key[s], slice)]
        wanted = [self.axes[o][0] for o in range(self.ndim) if isinstance(norm[o], slice)]
        data = data.transpose([kept.index(s) for s in wanted])
        return _cast(data, self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)

    def to_source(self, data: np.ndarray) -> np.ndarray:
        """``data`` in this view's layout back in the source's axis order and directions."""
        return _to_source(data, self.axes)


def _to_source(data: Any, axes: Sequence[tuple[int, bool]]) -> np.ndarray:
    """Undo a :class:`Reoriented` mapping ``axes``: transpose back, then flip back."""
    order = [0] * len(axes)
    for o, (src, _) in enumerate(axes):
        order[int(src)] = o
    out = np.asarray(data).transpose(order)
    for src, flip in axes:
        if flip:
            out = np.flip(out, axis=int(src))
    return np.ascontiguousarray(out)


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if data.dtype == dtype:
        return data
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data)  # integral scaling computed in floating point: exact, then cast
    return data.astype(dtype)


def _scaled(raw: np.ndarray, slope: float, inter: float, dtype: np.dtype) -> np.ndarray:
    """``raw * slope + inter`` in ``dtype``, computed in it (no float64 copy for integers)."""
    out = raw.astype(dtype)
    if slope != 1:
        out *= int(slope) if np.issubdtype(dtype, np.integer) else slope
    if inter != 0:
        out += int(inter) if np.issubdtype(dtype, np.integer) else inter
    return out


def _zyx_affine(source_affine: np.ndarray, view: Reoriented) -> np.ndarray:
    """The index-to-RAS affine of the view's three spatial (last) axes, as (Z, Y, X)."""
    spatial = view.axes[-3:]
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for o, (src, flip) in enumerate(spatial):
        n = view.source_shape[src]
        if flip:
            m[src, o] = -1.0
            m[src, 3] = n - 1
        else:
            m[src, o] = 1.0
    return np.asarray(source_affine, float) @ m


def _scaled_dtype(
    raw: np.dtype,
    slopes: Sequence[float],
    inters: Sequence[float],
    stored: tuple[int, int] | None = None,
) -> np.dtype:
    """The dtype of ``raw * slope + inter``: the raw dtype without scaling, the smallest signed
    integer type for integral scalings of integers, float32 otherwise (float64 stays)."""
    if all(s == 1 for s in slopes) and all(i == 0 for i in inters):
        return np.dtype(raw)
    integral = all(float(v).is_integer() for v in (*slopes, *inters))
    if np.issubdtype(raw, np.integer) and integral:
        lo, hi = stored if stored is not None else (np.iinfo(raw).min, np.iinfo(raw).max)
        ends = [v * s + i for v in (lo, hi) for s in slopes for i in inters]
        for candidate in (np.int16, np.int32, np.int64):
            info = np.iinfo(candidate)
            if info.min <= min(ends) and max(ends) <= info.max:
                return np.dtype(candidate)
    return np.dtype(np.float64 if raw == np.float64 else np.float32)


# --- volumes ------------------------------------------------------------------------------


@dataclass
class Volume:
    """A lazy (Z, Y, X) volume (or (T, Z, Y, X)) with its geometry.

    ``spacing`` is (z, y, x) in mm, ``origin`` the centre of voxel (0, 0, 0) in LPS mm ordered
    (S, P, L) like the axes (napari's ``translate``), ``metadata`` the ``radiology`` dict kept
    for writing labels back, ``name`` a layer name.
    """

    data: Reoriented
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    metadata: dict[str, Any]
    name: str

    @property
    def is_labels(self) -> bool:
        """Whether the file says it holds a label map (NIfTI intent "label")."""
        return bool(self.metadata.get("intent_label"))


def _tidy(value: float) -> float:
    """A float32 header value as its shortest decimal (0.7, not 0.699999988): NIfTI stores
    spacing and origin in float32, and napari shows the scale."""
    single = np.float32(value)
    return float(str(single)) if float(single) == float(value) else float(value)


def _geometry(source_affine: np.ndarray, view: Reoriented) -> tuple[dict, tuple, tuple]:
    zyx = _zyx_affine(source_affine, view)
    spacing = tuple(_tidy(v) for v in np.linalg.norm(zyx[:3, :3], axis=0))
    ras = zyx[:3, 3]
    origin = (_tidy(ras[2]), _tidy(-ras[1]), _tidy(-ras[0]))  # LPS (S, P, L)
    directions = zyx[:3, :3] / np.where(np.array(spacing) > 0, spacing, 1.0)
    oblique = bool(np.any(np.abs(np.abs(directions).max(axis=0) - 1) > _OBLIQUE_TOLERANCE))
    geometry = {
        "source_affine": np.asarray(source_affine, float).tolist(),
        "source_shape": list(view.source_shape),
        "source_orientation": _axis_codes(source_affine),
        "axes_map": [list(pair) for pair in view.axes],
        "zyx_affine": zyx.tolist(),
        "shape": list(view.shape),
        "spacing": list(spacing),
        "origin_lps": list(origin),
        "oblique": oblique,
        "orientation": "LPS",  # X -> L, Y -> P, Z -> S
    }
    return geometry, spacing, origin


def open_nifti(path: str | os.PathLike) -> Volume:
    """A NIfTI-1/2 file (``.nii`` / ``.nii.gz``) as a (Z, Y, X) volume; a 4-D file with more
    than one volume opens as (T, Z, Y, X), a 2-D one as one slice.

    ``.nii`` files are read lazily (only the voxels indexed); ``.nii.gz`` files are
    decompressed once, into memory, since a gzip stream has no cheap random access.
    """
    nib = _require("nibabel", "NIfTI files")
    path = Path(path)
    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is not a NIfTI-1 or NIfTI-2 image")
    proxy = img.dataobj
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:  # a single slice: add the slice axis
        proxy = proxy.reshape(shape + (1,) * (3 - len(shape)))
    elif len(shape) > 3 and math.prod(shape[3:]) == 1:
        proxy = proxy.reshape(shape[:3])
    extra = proxy.shape[3:]
    if len(extra) > 1:
        raise ValueError(f"{path} has {len(proxy.shape)} dimensions; 3-D and 4-D are supported")
    spatial = _axis_map(img.affine)
    axes = [(3, False)] * len(extra) + spatial
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    dtype = _scaled_dtype(img.get_data_dtype(), [slope], [inter])
    source: Any = proxy
    if path.name.lower().endswith(".gz"):
        # A gzip stream seeks backwards by decompressing again from the start: reading slice by
        # slice (backward propagation, napari's slider) would be quadratic. Read it once.
        source = _scaled(np.asarray(proxy.get_unscaled()), slope, inter, dtype)
    view = Reoriented(source, axes, dtype)
    geometry, spacing, origin = _geometry(img.affine, view)
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    geometry.update(
        format="nifti",
        source=str(path),
        nifti_version=2 if isinstance(img, nib.Nifti2Image) else 1,
        nifti_header=bytes(header.binaryblock),
        file_shape=list(shape),
        qform_code=int(qcode),
        sform_code=int(scode),
        intent_label=int(header["intent_code"]) == NIFTI_INTENT_LABEL,
        scl_slope=slope,
        scl_inter=inter,
    )
    if extra:
        zooms = header.get_zooms()
        geometry["t_step"] = float(zooms[3]) if len(zooms) > 3 else 1.0
    return Volume(view, spacing, origin, geometry, nifti_stem(path))


# --- DICOM --------------------------------------------------------------------------------

_HEADER_TAGS = [
    "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "Rows", "Columns", "RescaleSlope", "RescaleIntercept", "BitsStored", "BitsAllocated",
    "PixelRepresentation", "SamplesPerPixel", "NumberOfFrames", "Modality", "InstanceNumber",
    "SeriesDescription", "SeriesNumber", "PhotometricInterpretation", "RescaleType",
    "SpacingBetweenSlices",
]  # fmt: skip


@dataclass
class _Slice:
    path: Path
    header: Any  # a pydicom Dataset without pixel data


def _read_headers(files: Sequence[Path]) -> list[_Slice]:
    pydicom = _require("pydicom", "DICOM series")
    out = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # noqa: BLE001 - not DICOM after all (a stray file): skip it
            continue
        if "SeriesInstanceUID" in ds:
            out.append(_Slice(Path(file), ds))
    return out


def read_dicom_series(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[list[_Slice]]:
    """The series that ``path`` holds, largest first: a folder gives every series in it, one
    file gives the whole series it belongs to (from its folder), a list of files its series."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if path.is_dir():
            files = dicom_files_in(path)
            wanted = None
        else:
            own = _read_headers([path])
            if not own:
                raise ValueError(f"{path} is not a DICOM image file")
            wanted = str(own[0].header.SeriesInstanceUID)
            files = dicom_files_in(path.parent)
    else:
        files, wanted = [Path(p) for p in path], None
    slices = _read_headers(files)
    series: dict[str, list[_Slice]] = {}
    for item in slices:
        series.setdefault(str(item.header.SeriesInstanceUID), []).append(item)
    if wanted is not None:
        series = {wanted: series[wanted]}
    if not series:
        raise ValueError(f"no DICOM image files in {path}")
    return sorted(series.values(), key=len, reverse=True)


class DicomSlices:
    """A DICOM series as a lazy (slices, rows, columns) array: each slice file is read when
    indexed, with its rescale slope and intercept applied."""

    def __init__(self, slices: Sequence[_Slice], dtype: Any) -> None:
        self.slices = list(slices)
        first = self.slices[0].header
        self.shape = (len(self.slices), int(first.Rows), int(first.Columns))
        self.dtype = np.dtype(dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def _plane(self, index: int) -> np.ndarray:
        pydicom = _require("pydicom", "DICOM series")
        item = self.slices[index]
        ds = pydicom.dcmread(item.path)
        pixels = ds.pixel_array
        if pixels.shape != self.shape[1:]:
            raise ValueError(
                f"slice {item.path.name} is {pixels.shape}, the series {self.shape[1:]}; "
                "the series mixes image sizes"
            )
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        inter = float(getattr(ds, "RescaleIntercept", 0) or 0)
        if slope == 1 and inter == 0:
            return _cast(pixels, self.dtype)
        if np.issubdtype(self.dtype, np.integer):
            return (pixels.astype(np.int64) * int(slope) + int(inter)).astype(self.dtype)
        return (pixels * slope + inter).astype(self.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if first is Ellipsis:
            first, rest = slice(None), key
        if isinstance(first, (int, np.integer)):
            return self._plane(range(self.shape[0])[int(first)])[rest]
        indices = np.arange(self.shape[0])[first]
        planes = [self._plane(int(i))[rest] for i in np.atleast_1d(indices)]
        if not planes:
            return np.zeros((0,) + np.zeros(self.shape[1:], self.dtype)[rest].shape, self.dtype)
        return np.stack(planes)


def _volume_of_series(slices: list[_Slice], where: Path) -> Volume:
    """Sort one series by position along the slice normal and describe its geometry."""
    first = slices[0].header
    for needed in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if needed not in first:
            raise ValueError(
                f"the DICOM series in {where} has no {needed}: not a cross-sectional "
                "image series (CT, MR, PET) this plugin can place in space"
            )
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise ValueError(
            f"{slices[0].path} is a multi-frame (enhanced) DICOM file, which is not supported; "
            "convert the series to NIfTI (dcm2niix) and open that"
        )
    if int(getattr(first, "SamplesPerPixel", 1) or 1) != 1:
        raise ValueError(f"the DICOM series in {where} is in colour; greyscale series only")
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]  # along a row (columns increase), along a column (rows increase)
    normal = np.cross(row, col)
    for item in slices:
        other = np.array([float(v) for v in item.header.ImageOrientationPatient])
        if not np.allclose(other, iop, atol=1e-3):
            raise ValueError(
                f"the DICOM series in {where} mixes slice orientations (a localiser?); "
                "open the files of one orientation"
            )
    positions = {
        id(item): float(np.dot([float(v) for v in item.header.ImagePositionPatient], normal))
        for item in slices
    }
    slices = sorted(slices, key=lambda item: positions[id(item)])
    depths = np.array([positions[id(item)] for item in slices])
    steps = np.diff(depths)
    if len(steps) and np.min(steps) < 1e-3:
        raise ValueError(
            f"the DICOM series in {where} has several slices at one position (several echoes, "
            "phases or time points in one series), which is not supported"
        )
    dr, dc = (float(v) for v in first.PixelSpacing)  # row spacing, column spacing
    if len(steps):
        dz = float(np.median(steps))
        uniform = bool(np.allclose(steps, dz, rtol=1e-2, atol=1e-2))
    else:
        dz = float(getattr(first, "SpacingBetweenSlices", 0) or first.get("SliceThickness", 1))
        dz = dz or 1.0
        uniform = True
    ipp0 = np.array([float(v) for v in slices[0].header.ImagePositionPatient])
    # voxel (slice k, row j, column i) -> LPS, then to RAS (NIfTI's world) by flipping x, y
    lps = np.eye(4)
    lps[:3, 0] = normal * dz
    lps[:3, 1] = col * dr
    lps[:3, 2] = row * dc
    lps[:3, 3] = ipp0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    slopes = sorted({float(s.header.get("RescaleSlope", 1) or 1) for s in slices})
    inters = sorted({float(s.header.get("RescaleIntercept", 0) or 0) for s in slices})
    bits = int(first.get("BitsStored", first.get("BitsAllocated", 16)))
    allocated = int(first.get("BitsAllocated", 16))
    signed = int(first.get("PixelRepresentation", 0)) == 1
    raw = np.dtype(f"{'i' if signed else 'u'}{max(1, allocated // 8)}")
    stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    dtype = _scaled_dtype(raw, slopes, inters, stored)
    source = DicomSlices(slices, dtype)
    view = Reoriented(source, _axis_map(affine), dtype)
    geometry, spacing, origin = _geometry(affine, view)

    def text(name: str) -> str | None:
        value = first.get(name)
        return None if value is None else str(value)

    geometry.update(
        format="dicom",
        source=str(where),
        modality=text("Modality"),
        dicom={
            "StudyInstanceUID": text("StudyInstanceUID"),
            "SeriesInstanceUID": text("SeriesInstanceUID"),
            "FrameOfReferenceUID": text("FrameOfReferenceUID"),
            "SeriesDescription": text("SeriesDescription"),
            "SeriesNumber": text("SeriesNumber"),
            "Modality": text("Modality"),
            "ImageOrientationPatient": iop.tolist(),
            "ImagePositionPatient": [
                [float(v) for v in s.header.ImagePositionPatient] for s in slices
            ],
            "PixelSpacing": [dr, dc],
            "SliceThickness": float(first.get("SliceThickness", 0) or 0) or None,
            "SpacingBetweenSlices": dz,
            "UniformSpacing": uniform,
            "RescaleSlope": slopes[0] if len(slopes) == 1 else slopes,
            "RescaleIntercept": inters[0] if len(inters) == 1 else inters,
            "RescaleType": text("RescaleType"),
            "SOPInstanceUIDs": [str(s.header.get("SOPInstanceUID", "")) for s in slices],
            "files": [str(s.path) for s in slices],
        },
    )
    name = text("SeriesDescription") or (where.name if where.is_dir() else where.parent.name)
    return Volume(view, spacing, origin, geometry, name)


def open_dicom(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Volume]:
    """Every series of a DICOM folder (largest first), or the series of one file or list of
    files, as lazy (Z, Y, X) volumes sorted by slice position (not file name or
    InstanceNumber)."""
    where = Path(path if isinstance(path, (str, os.PathLike)) else path[0])
    return [_volume_of_series(series, where) for series in read_dicom_series(path)]


def open_volume(path: str | os.PathLike) -> Volume:
    """One volume: a NIfTI file, or the one DICOM series of a file or folder."""
    if is_nifti_path(path):
        return open_nifti(path)
    volumes = open_dicom(path)
    if len(volumes) > 1:
        names = "; ".join(
            f"{v.name} ({v.data.shape[0]} slices, {v.metadata['dicom']['SeriesInstanceUID']})"
            for v in volumes
        )
        raise ValueError(
            f"{path} holds {len(volumes)} DICOM series: {names}; give the path of one file of "
            "the series to use"
        )
    return volumes[0]


# --- writing labels -----------------------------------------------------------------------


def labels_dtype(labels: Any) -> np.dtype:
    """uint8 where the ids fit, else uint16, else int32 (negative or larger ids)."""
    lo, hi = _min_max(labels)
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.dtype(np.uint16)
    if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise ValueError(f"label ids from {lo} to {hi} do not fit a 32-bit NIfTI label map")


def _min_max(labels: Any) -> tuple[int, int]:
    lo, hi = 0, 0
    for plane in labels if np.ndim(labels) > 2 else [labels]:
        plane = np.asarray(plane)
        if plane.size:
            lo, hi = min(lo, int(plane.min())), max(hi, int(plane.max()))
    return lo, hi


_UNIT_NAMES = {
    "mm": "mm", "millimeter": "mm", "millimetre": "mm",
    "um": "micron", "µm": "micron", "micron": "micron", "micrometer": "micron",
    "micrometre": "micron", "m": "meter", "meter": "meter", "metre": "meter",
}  # fmt: skip


def _plain_affine(scale: Sequence[float] | None, translate: Sequence[float] | None):
    """The NIfTI (x, y, z) affine of a (…, Z, Y, X) layer's scale and translate, read in this
    module's convention (Z -> S, Y -> P, X -> L; translate in LPS mm as (S, P, L))."""
    s = [float(v) for v in scale][-3:] if scale is not None else []
    t = [float(v) for v in translate][-3:] if translate is not None else []
    s = [1.0] * (3 - len(s)) + s
    t = [0.0] * (3 - len(t)) + t
    sz, sy, sx = s
    tz, ty, tx = t
    return np.array([[-sx, 0, 0, -tx], [0, -sy, 0, -ty], [0, 0, sz, tz], [0, 0, 0, 1]], dtype=float)


def write_labels_nifti(
    path: str | os.PathLike,
    labels: Any,
    geometry: dict | None = None,
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    units: str | None = "mm",
) -> Path:
    """Write a (Z, Y, X) (or (T, Z, Y, X), or (Y, X)) label array as NIfTI (``.nii`` or
    ``.nii.gz``), atomically; returns the path.

    With ``geometry`` from a NIfTI file (``metadata["radiology"]`` of the reader) and the same
    shape, the labels go back into the source's voxel order with its affine and header
    (qform/sform and their codes, units), so they overlay the source in 3D Slicer and
    ITK-SNAP. With geometry from a DICOM series, the series' affine is used (codes 1, scanner).
    Otherwise the affine comes from ``scale`` and ``translate`` in this module's convention.
    The data type is the smallest of uint8 / uint16 / int32 that holds the ids; the header's
    intent is "label" and its intensity scaling is cleared.
    """
    nib = _require("nibabel", "NIfTI files")
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: a NIfTI label file is named .nii or .nii.gz")
    data = np.asarray(labels)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"cannot save labels of dtype {data.dtype} as a label map")
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"a {data.ndim}-D label array: NIfTI labels are 2-D to 4-D")
    dtype = labels_dtype(data)
    source_shape = list((geometry or {}).get("shape", []))
    if geometry and source_shape == list(data.shape):
        if geometry.get("format") == "nifti":
            out = _to_source(data, [tuple(pair) for pair in geometry["axes_map"]]).astype(dtype)
            out = out.reshape(geometry["file_shape"])
            klass = nib.Nifti2Image if geometry.get("nifti_version") == 2 else nib.Nifti1Image
            header = klass.header_class(binaryblock=geometry["nifti_header"], check=False)
            header.set_data_dtype(dtype)
            # the header's own best affine: with it nibabel keeps qform, sform and both codes
            affine = header.get_best_affine()
            img = klass(out, affine, header=header)
        else:
            # DICOM: (X, Y, Z) voxels as dcm2niix lays them out, with the series' geometry
            zyx = np.asarray(geometry["zyx_affine"], float)
            affine = zyx[:, [2, 1, 0, 3]]
            out = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(dtype)
            img = nib.Nifti1Image(out, affine)
            img.header.set_qform(affine, code=1)  # scanner coordinates, as the series
            img.header.set_sform(affine, code=1)
            img.header.set_xyzt_units(xyz="mm")
    else:
        # (…, Z, Y, X) -> NIfTI's (X, Y, Z, …)
        out = data[np.newaxis] if data.ndim == 2 else data
        if out.ndim == 4:
            out = np.moveaxis(out, 0, -1)  # (T, Z, Y, X) -> (Z, Y, X, T)
            out = np.ascontiguousarray(np.swapaxes(out, 0, 2)).astype(dtype)
        else:
            out = np.ascontiguousarray(out.transpose(2, 1, 0)).astype(dtype)
        affine = _plain_affine(scale, translate)
        img = nib.Nifti1Image(out, affine)
        img.header.set_qform(affine, code=2)  # aligned to the image the layer was drawn on
        img.header.set_sform(affine, code=2)
        unit = _UNIT_NAMES.get(str(units).lower(), "unknown") if units else "unknown"
        img.header.set_xyzt_units(xyz=unit)
        if data.ndim == 4 and scale is not None and len(scale) == 4:
            zooms = list(img.header.get_zooms())
            zooms[3] = float(scale[0])
            img.header.set_zooms(zooms)
    header = img.header
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    header.set_intent(NIFTI_INTENT_LABEL)
    payload = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)

    from napari_sam2.outputs.export import write_atomically

    return write_atomically(path, lambda handle: handle.write(payload))
