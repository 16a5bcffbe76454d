"""TIFF geometry metadata shared by the reader, the stack opener and the label writer.

Pixel sizes, units and frame intervals are read from ImageJ hyperstacks, OME-TIFF, tifffile's
shaped JSON and plain resolution tags, and unit spellings are translated between the files
(ImageJ ``micron``, OME ``µm``) and napari (pint names such as ``micrometer``). Imports only
tifffile, so every layer that touches TIFF files may use it (see ``tests/test_layers.py``).
"""

from __future__ import annotations

import json
from typing import Any

import tifffile

__all__ = [
    "LABELS_MARK",
    "imagej_unit",
    "length_factor",
    "marked_as_labels",
    "napari_unit",
    "ome_unit",
    "physical_sizes",
    "pixel_origins",
    "time_factor",
]

LABELS_MARK = "napari-sam2 labels"
"""Written into OME / shaped metadata by the label writer: the file holds a Labels layer."""

# unit spellings found in files and napari layers -> pint unit names napari understands
_NAPARI_UNITS = {
    "nm": "nanometer",
    "nanometer": "nanometer",
    "nanometre": "nanometer",
    "nanometers": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "\u03bcm": "micrometer",  # Greek mu
    "\\u00b5m": "micrometer",  # escaped, as some ImageJ files store it
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometer": "micrometer",
    "micrometre": "micrometer",
    "micrometers": "micrometer",
    "mm": "millimeter",
    "millimeter": "millimeter",
    "millimetre": "millimeter",
    "millimeters": "millimeter",
    "cm": "centimeter",
    "centimeter": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "meter": "meter",
    "metre": "meter",
    "ms": "millisecond",
    "millisecond": "millisecond",
    "s": "second",
    "sec": "second",
    "second": "second",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
}
_NO_UNIT = {"", "pixel", "pixels", "px", "dimensionless", "none"}

_METERS = {
    "nanometer": 1e-9,
    "micrometer": 1e-6,
    "millimeter": 1e-3,
    "centimeter": 1e-2,
    "meter": 1.0,
}
_SECONDS = {"millisecond": 1e-3, "second": 1.0, "minute": 60.0, "hour": 3600.0}

# pint names -> spellings Fiji shows and reads back ("micron" keeps the description ASCII)
_IMAGEJ_UNITS = {
    "nanometer": "nm",
    "micrometer": "micron",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}
_OME_UNITS = {
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}


def napari_unit(name: Any) -> str | None:
    """The pint name napari understands for a unit spelling (``"um"`` -> ``"micrometer"``).

    ``name`` may be a string or a pint unit (napari's ``layer.units`` entries). Pixels,
    dimensionless and unknown spellings give None.
    """
    if name is None:
        return None
    text = str(name).strip().lower()
    if text in _NO_UNIT:
        return None
    return _NAPARI_UNITS.get(text)


def imagej_unit(name: Any) -> str | None:
    """The ImageJ spelling of a length unit (``"micrometer"`` -> ``"micron"``); None if none.

    A spelling this module does not know is kept as given (ImageJ takes any unit name).
    """
    if name is None or str(name).strip().lower() in _NO_UNIT:
        return None
    unit = napari_unit(name)
    if unit is None:
        return str(name).strip()
    return _IMAGEJ_UNITS.get(unit)


def ome_unit(name: Any) -> str | None:
    """The OME spelling of a length unit (``"micrometer"`` -> ``"µm"``); None if not a length."""
    return _OME_UNITS.get(napari_unit(name) or "")


def length_factor(unit: str | None, to: str | None) -> float:
    """How many ``to`` one ``unit`` is (``("millimeter", "micrometer")`` -> 1000); 1 where
    either is not a known length unit."""
    if unit in _METERS and to in _METERS:
        return _METERS[unit] / _METERS[to]
    return 1.0


def time_factor(unit: str | None) -> float:
    """Seconds in one ``unit`` (ImageJ's frame interval is in seconds); 1 if unknown."""
    return _SECONDS.get(unit or "", 1.0)


def physical_sizes(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None, float | None]:
    """Pixel sizes per axis letter (X, Y, Z), their napari unit and the frame interval.

    From ImageJ metadata (resolution tags, ``spacing``, ``unit``, ``finterval``), OME
    (``PhysicalSize*``, ``TimeIncrement``), tifffile's shaped JSON (``spacing_xyz``) or plain
    resolution tags in centimetres (what microscopes write; inch resolution is print DPI).
    """
    if tif.is_ome:
        return _ome_sizes(tif.ome_metadata)
    sizes: dict[str, float] = {}
    page = tif.pages[0]
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        sizes.update(_resolution_sizes(page, scale=1.0))
        if meta.get("spacing"):
            sizes["Z"] = float(meta["spacing"])
        interval = float(meta["finterval"]) if meta.get("finterval") else None
        return sizes, napari_unit(meta.get("unit")), interval
    if tif.is_shaped and tif.shaped_metadata:
        shaped = tif.shaped_metadata[0]
        spacing = shaped.get("spacing_xyz_mm") or shaped.get("spacing_xyz")
        if spacing is not None and len(spacing) == 3:
            sizes.update(X=float(spacing[0]), Y=float(spacing[1]), Z=float(spacing[2]))
            unit = "millimeter" if "spacing_xyz_mm" in shaped else None
            return sizes, unit, None
    tag = page.tags.get("ResolutionUnit")
    if tag is not None and tag.value == 3:
        sizes.update(_resolution_sizes(page, scale=1e4))  # pixels per cm -> um
        return sizes, "micrometer" if sizes else None, None
    return sizes, None, None


def pixel_origins(tif: tifffile.TiffFile) -> dict[str, float]:
    """ImageJ's ``xorigin``, ``yorigin``, ``zorigin`` (in pixels) per axis letter, if any.

    napari's ``translate`` along an axis is ``-origin * size``.
    """
    if not tif.is_imagej:
        return {}
    meta = tif.imagej_metadata or {}
    origins = {}
    for letter in "XYZ":
        value = meta.get(f"{letter.lower()}origin")
        if value:
            origins[letter] = float(value)
    return origins


def _resolution_sizes(page: Any, scale: float) -> dict[str, float]:
    sizes = {}
    for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = page.tags.get(tag)
        if value is None:
            continue
        numerator, denominator = value.value
        # (1, 1) is what writers put when they know no size: not a pixel size of 1
        if numerator > 0 and denominator > 0 and (numerator, denominator) != (1, 1):
            sizes[letter] = denominator / numerator * scale
    return sizes


def _ome_sizes(xml: str | None) -> tuple[dict[str, float], str | None, float | None]:
    if not xml:
        return {}, None, None
    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    if isinstance(image, list):
        image = image[0]
    pixels = image.get("Pixels", {})
    sizes = {}
    for letter in "XYZ":
        value = pixels.get(f"PhysicalSize{letter}")
        if value:
            sizes[letter] = float(value)
    unit = napari_unit(pixels.get("PhysicalSizeXUnit", "µm")) if sizes else None
    interval = pixels.get("TimeIncrement")
    if interval:
        interval = float(interval) * time_factor(napari_unit(pixels.get("TimeIncrementUnit", "s")))
    return sizes, unit, float(interval) if interval else None


def marked_as_labels(tif: tifffile.TiffFile) -> bool:
    """Whether the label writer marked the file as a Labels layer."""
    if tif.is_imagej:
        return (tif.imagej_metadata or {}).get("napari_layer") == "labels"
    if tif.is_ome and tif.ome_metadata:
        return LABELS_MARK in tif.ome_metadata
    if tif.is_shaped and tif.shaped_metadata:
        return LABELS_MARK in json.dumps(tif.shaped_metadata[0])
    return False
