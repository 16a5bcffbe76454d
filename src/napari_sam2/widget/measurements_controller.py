"""The measurements table of the widget, without Qt: what it shows and where a row leads.

:class:`MeasurementsController` measures the output labels
(:func:`napari_sam2.outputs.measurements.measure`) and turns the rows into what the table
shows: per object of a volume its volume, longest in-plane diameter (RECIST) and slices; per
object and frame of a time-lapse its area, centroid and mean intensity. A row leads to a frame
along the tracked axis: the slice of the longest diameter, or the row's frame.
:mod:`napari_sam2.widget.measurements_view` renders it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from psygnal import Signal

from napari_sam2.outputs.measurements import MeasurementTable, measure
from napari_sam2.tiff_meta import napari_unit

__all__ = ["KINDS", "MeasureInput", "MeasurementsController", "axis_kind"]

KINDS = ("auto", "z", "t")
"""The table's kinds: auto (from the tracked axis), a volume (z), a time-lapse (t)."""

_DEPTH_NAMES = {"z", "depth", "slice", "slices", "plane", "planes"}
_TIME_NAMES = {"t", "time", "frame", "frames"}
_LENGTHS = {"nanometer", "micrometer", "millimeter", "centimeter", "meter"}


@dataclass(frozen=True)
class MeasureInput:
    """What is measured: the (N, H, W) labels, the pixel size and unit of the tracked axis, Y
    and X, the tracked axis' name, and the (N, H, W) grey image (None: no mean intensity)."""

    labels: Any
    scale: tuple[float, float, float]
    units: tuple[Any, Any, Any]
    axis_label: str = ""
    image: Any = None


def axis_kind(axis_label: str, unit: Any = None) -> str:
    """``"z"`` for a depth axis, ``"t"`` for time: by the axis' name (z, depth, t, time...),
    else by its unit (a length: depth), else time (a time-lapse is the common case)."""
    name = str(axis_label).strip().lower()
    if name in _DEPTH_NAMES:
        return "z"
    if name in _TIME_NAMES:
        return "t"
    return "z" if napari_unit(unit) in _LENGTHS else "t"


class MeasurementsController:
    """The last measurements of the output layer and how the table shows them."""

    changed = Signal()
    """The table changed (new measurements, cleared, or a new message)."""

    def __init__(self) -> None:
        self.kind = "auto"
        self.table: MeasurementTable | None = None
        self.message = "press Measure, or propagate"

    def axis_for(self, source: MeasureInput) -> str:
        """The kind to measure ``source`` as: the chosen one, or from its tracked axis."""
        if self.kind in ("z", "t"):
            return self.kind
        return axis_kind(source.axis_label, source.units[0])

    def set_kind(self, kind: str) -> None:
        """Choose ``auto``, ``z`` or ``t`` (takes effect at the next measurement)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind

    def measure(self, source: MeasureInput | None) -> MeasurementTable | None:
        """Measure ``source`` (None: nothing to measure, the table is cleared)."""
        if source is None:
            return self.clear("no output labels to measure")
        axis = self.axis_for(source)
        self.table = measure(
            source.labels, scale=source.scale, units=source.units, image=source.image, axis=axis
        )
        objects = len({row.object_id for row in self.table.rows})
        if not objects:
            self.message = "no objects in the output labels"
        elif axis == "z":
            self.message = f"{objects} object(s); click a row for its longest diameter"
        else:
            self.message = f"{objects} object(s), {len(self.table)} rows; click a row to go there"
        self.changed.emit()
        return self.table

    def clear(self, message: str = "") -> None:
        """Forget the measurements (another image or output)."""
        self.table = None
        self.message = message
        self.changed.emit()

    # --- what the table shows ------------------------------------------------------------------

    def headers(self) -> list[str]:
        """Column titles, with units."""
        table = self.table
        if table is None or not table.rows:
            return []
        first = table.rows[0]
        if table.axis == "z":
            return [
                "object",
                f"volume ({first.volume_unit})",
                f"longest diameter ({first.length_unit})",
                "at slice",
                "first slice",
                "last slice",
                "mean intensity",
            ]
        return ["object", "frame", f"area ({first.area_unit})", "y", "x", "mean intensity"]

    def rows(self) -> list[list[float | int | str]]:
        """One list of cell values per row (numbers stay numbers, so columns sort as such);
        a missing mean intensity is an empty string."""
        table = self.table
        if table is None:
            return []

        def value(v: float) -> float | str:
            return "" if math.isnan(v) else v

        if table.axis == "z":
            return [
                [
                    r.object_id,
                    r.volume,
                    r.longest_diameter,
                    r.diameter_slice,
                    r.first_slice,
                    r.last_slice,
                    value(r.mean_intensity),
                ]
                for r in table.rows
            ]
        return [
            [r.object_id, r.frame, r.area, r.centroid_y, r.centroid_x, value(r.mean_intensity)]
            for r in table.rows
        ]

    def frame_of(self, row: int) -> int | None:
        """The frame a row leads to: the slice of the longest diameter of a volume's object,
        or the frame of a time-lapse row (None for a row that does not exist)."""
        table = self.table
        if table is None or not 0 <= row < len(table.rows):
            return None
        return int(table.rows[row].frame)

    def object_of(self, row: int) -> int | None:
        """The object id of a row (None for a row that does not exist)."""
        table = self.table
        if table is None or not 0 <= row < len(table.rows):
            return None
        return int(table.rows[row].object_id)
