"""The measurements view: renders a
:class:`~napari_sam2.widget.measurements_controller.MeasurementsController` in the
:class:`~napari_sam2.widget.panels.MeasurementsPanel` table and forwards clicks.

Cells show rounded numbers but sort by their exact values; each row keeps the index of its
measurement, so a click after sorting still leads to the right frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

from napari_sam2.widget.measurements_controller import MeasurementsController
from napari_sam2.widget.panels import MeasurementsPanel

__all__ = ["MeasurementsView"]

ROW_ROLE = Qt.ItemDataRole.UserRole
"""Item data: the index of the row's measurement in the controller's table."""
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
"""Item data: the exact value the column sorts by."""


class _Item(QTableWidgetItem):
    """A cell that sorts by its exact value (numbers as numbers, empty cells first)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:  # Qt calls this when sorting
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return str(a if a is not None else "") < str(b if b is not None else "")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


class MeasurementsView:
    """Shows ``controller`` in ``panel``; a clicked row calls ``go_to(frame)``."""

    def __init__(
        self,
        panel: MeasurementsPanel,
        controller: MeasurementsController,
        go_to: Callable[[int], None],
    ) -> None:
        self.panel = panel
        self.controller = controller
        self.go_to = go_to
        controller.changed.connect(self.render)
        panel.table.cellClicked.connect(self.row_clicked)
        panel.kind_combo.currentIndexChanged.connect(self._kind_chosen)
        self.render()

    def _kind_chosen(self, *args: Any) -> None:
        self.controller.set_kind(self.panel.kind_combo.currentData())

    def render(self) -> None:
        """Fill the table from the controller (sorting is paused while it is filled)."""
        table = self.panel.table
        headers = self.controller.headers()
        rows = self.controller.rows()
        table.setSortingEnabled(False)
        table.clearContents()
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                item = _Item(_text(value))
                item.setData(SORT_ROLE, value)
                item.setData(ROW_ROLE, r)
                if isinstance(value, (int, float)):
                    item.setTextAlignment(
                        int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    )
                table.setItem(r, c, item)
        table.setSortingEnabled(True)
        table.resizeColumnsToContents()
        self.panel.summary_label.setText(self.controller.message)

    def measurement_index(self, table_row: int) -> int | None:
        """The controller's row shown in ``table_row`` of the (maybe sorted) table."""
        item = self.panel.table.item(table_row, 0)
        return None if item is None else int(item.data(ROW_ROLE))

    def row_clicked(self, table_row: int, column: int = 0) -> None:
        """Go to the frame of the clicked row."""
        index = self.measurement_index(table_row)
        frame = None if index is None else self.controller.frame_of(index)
        if frame is not None:
            self.go_to(frame)

    def disconnect(self) -> None:
        """Stop rendering the controller (the widget is closing)."""
        self.controller.changed.disconnect(self.render)
