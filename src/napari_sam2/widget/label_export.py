"""The widget's exports, without Qt: the output labels as a TIFF with the layer's geometry, a
Cell Tracking Challenge folder, or the presence table.

A TIFF keeps what the layer says about its axes: a volume's frame axis is written as Z with
its spacing, a time-lapse's as T with its frame interval, and the pixel size and unit go with
them, so the file opens again as it was shown.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.tracking.layer_prompts import AxisPlan

__all__ = ["EXPORT_KINDS", "axis_letter", "export_results", "tiff_axes"]

EXPORT_KINDS = ("tiff", "ctc", "csv")

_DEPTH_NAMES = {"z", "depth", "slice", "slices", "plane", "planes", "k"}
_TIME_NAMES = {"t", "time", "frame", "frames"}
_IMAGEJ_ORDER = "TZCYX"
# ImageJ's own spelling of a unit where it differs from the short symbol
_IMAGEJ_UNITS = {"micrometer": "micron"}


def axis_letter(label: str | None, unit: Any = None) -> str | None:
    """ "Z" or "T" for a stack axis named ``label`` (napari axis label) with ``unit``, or None
    when neither says (napari's default labels are numbers and its default unit is pixel)."""
    name = str(label or "").strip().lower()
    if name in _DEPTH_NAMES:
        return "Z"
    if name in _TIME_NAMES:
        return "T"
    dimensionality = str(getattr(unit, "dimensionality", ""))
    if dimensionality == "[length]":
        return "Z"
    if dimensionality == "[time]":
        return "T"
    return None


def tiff_axes(labels: Sequence[str | None], units: Sequence[Any] | None = None) -> str:
    """TIFF axis letters for axes named ``labels`` whose last two are Y and X.

    Each leading axis is Z or T as its label (or failing that its unit) says; an axis that says
    nothing becomes T, the letter left over when another axis is Z, or Z when T is taken.
    """
    lead = len(labels) - 2
    if lead not in (1, 2):
        raise ValueError(f"TIFF export takes 3 or 4 label axes, got {len(labels)}")
    units = list(units) if units is not None else [None] * len(labels)
    letters = [axis_letter(labels[i], units[i]) for i in range(lead)]
    if lead == 2 and letters[0] is not None and letters[0] == letters[1]:
        letters = [None, None]  # two axes claim the same letter: trust neither
    for i, letter in enumerate(letters):
        if letter is None:
            free = [c for c in "TZ" if c not in letters]
            letters[i] = free[0]
    return "".join(letters) + "YX"


def _unit_name(unit: Any) -> str | None:
    """A unit as written in ImageJ metadata ("mm", "micron"); None for pixels or no unit."""
    if unit is None or str(unit) in ("pixel", "", "dimensionless"):
        return None
    return _IMAGEJ_UNITS.get(
        str(unit), f"{unit:~}" if hasattr(unit, "dimensionality") else str(unit)
    )


def export_results(
    kind: str,
    path: str | os.PathLike,
    output: Any,
    plan: AxisPlan | None,
    session: Any = None,
    axis_labels: Sequence[str] | None = None,
) -> Path:
    """Write ``tiff`` / ``ctc`` from the output Labels layer ``output`` tracked with ``plan``,
    or ``csv``: the session's presence table. Returns the path written.

    ``axis_labels`` names the output's axes where the layer itself does not (the viewer's
    labels); by default the layer's ``axis_labels``.
    """
    from napari_sam2.outputs import export_ctc

    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export {kind!r}: choose tiff, ctc or csv")
    if kind == "csv":
        if session is None:
            raise ValueError("nothing tracked yet: propagate before exporting the table")
        return session.table.to_csv(path)
    if output is None or plan is None:
        raise ValueError("no output labels yet: prompt and propagate first")
    if kind == "ctc":
        return export_ctc(np.asarray(plan.labels_view(output.data)), path)
    return export_tiff(output, plan, path, axis_labels)


def export_tiff(
    output: Any,
    plan: AxisPlan,
    path: str | os.PathLike,
    axis_labels: Sequence[str] | None = None,
) -> Path:
    """The output layer as an ImageJ TIFF with the layer's axis letters, scale and units."""
    from napari_sam2.outputs import export_labels_tiff

    labels = np.asarray(output.data)
    ndim = labels.ndim
    scale = list(output.scale)
    translate = list(output.translate)
    names = list(axis_labels or getattr(output, "axis_labels", None) or [None] * ndim)
    units = list(getattr(output, "units", None) or [None] * ndim)
    if plan.channel_axis is not None and not plan.rgb:
        # the labels keep a channel axis of size 1 so they show at every channel: drop it
        labels = np.take(labels, 0, axis=plan.channel_axis)
        for values in (scale, translate, names, units):
            values.pop(plan.channel_axis)
    axes = tiff_axes(names, units)
    order = sorted(range(len(axes)), key=lambda i: _IMAGEJ_ORDER.index(axes[i]))
    if order != list(range(len(axes))):  # e.g. (Z, T, Y, X): ImageJ stores T before Z
        labels = np.transpose(labels, order)
        axes = "".join(axes[i] for i in order)
        scale, translate, units = ([v[i] for i in order] for v in (scale, translate, units))
    kwargs: dict[str, Any] = {"axes": axes, "scale": scale}
    accepted = inspect.signature(export_labels_tiff).parameters
    if "units" in accepted:
        # per axis, as napari names them: the frame interval keeps its time unit
        kwargs["units"] = [None if u is None else str(u) for u in units]
    else:  # an export without per-axis units: the pixel size's unit
        kwargs["unit"] = _unit_name(units[-1])
    if "translate" in accepted:
        kwargs["translate"] = translate
    return export_labels_tiff(labels, path, **kwargs)
