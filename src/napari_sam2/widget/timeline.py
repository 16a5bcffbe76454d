"""Swim lanes: one row per object, one cell per frame, coloured by presence.

Present cells take the object's label colour, absent cells are dark, low-confidence cells
(|object score| small) are orange with a hatch so they stand out, and frames never tracked stay
blank. A white dot marks the frames the user prompted; a vertical line marks the viewer's
current frame. Clicking a cell asks the viewer to jump to that frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt, Signal
from qtpy.QtGui import QBrush, QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_sam2.widget.session import FrameState

ABSENT_COLOR = QColor(70, 70, 78)
UNCERTAIN_COLOR = QColor(255, 150, 0)
EMPTY_COLOR = QColor(0, 0, 0, 0)
GRID_COLOR = QColor(128, 128, 128, 90)
CURRENT_COLOR = QColor(255, 255, 255)

ROW_HEIGHT = 14
LABEL_WIDTH = 34


class Timeline(QWidget):
    """Per-object presence along the propagated axis; ``frame_clicked(frame)`` on a click."""

    frame_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip(
            "One row per object, one cell per frame: colour = present, dark = absent, "
            "orange hatched = low confidence, blank = not tracked; dots = prompted frames. "
            "Click to go to a frame."
        )
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.object_ids: list[int] = []
        self.states = np.zeros((0, 0), np.uint8)
        self.prompted: dict[int, set[int]] = {}
        self.current_frame: int | None = None
        self.color_of: Callable[[int], tuple[float, float, float, float]] = lambda obj: (
            0.2,
            0.8,
            0.3,
            1.0,
        )
        self._update_height()

    # --- data ------------------------------------------------------------------------------

    def set_data(
        self,
        object_ids: list[int],
        states: np.ndarray,
        prompted: dict[int, set[int]] | None = None,
    ) -> None:
        """Show ``states`` (objects, frames) of :class:`FrameState` values."""
        self.object_ids = list(object_ids)
        states = np.asarray(states, np.uint8)
        self.states = states.reshape(len(self.object_ids), states.shape[-1] if states.ndim else 0)
        self.prompted = dict(prompted or {})
        self._update_height()
        self.update()

    def set_current_frame(self, frame: int | None) -> None:
        if frame != self.current_frame:
            self.current_frame = frame
            self.update()

    @property
    def num_frames(self) -> int:
        return int(self.states.shape[1]) if self.states.ndim == 2 else 0

    # --- geometry --------------------------------------------------------------------------

    def _update_height(self) -> None:
        self.setFixedHeight(max(1, len(self.object_ids)) * ROW_HEIGHT + 6)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(300, self.height())

    def _cell_width(self) -> float:
        return max(1.0, (self.width() - LABEL_WIDTH - 2) / max(1, self.num_frames))

    def cell_rect(self, row: int, frame: int) -> QRectF:
        """Where the cell of ``row`` and ``frame`` is drawn (widget pixels)."""
        w = self._cell_width()
        return QRectF(LABEL_WIDTH + frame * w, 3 + row * ROW_HEIGHT, w, ROW_HEIGHT - 2)

    def frame_at(self, x: float) -> int | None:
        """The frame under widget x coordinate ``x`` (None left of the cells or past the end)."""
        if self.num_frames == 0 or x < LABEL_WIDTH:
            return None
        frame = int((x - LABEL_WIDTH) // self._cell_width())
        return frame if 0 <= frame < self.num_frames else None

    # --- Qt events -------------------------------------------------------------------------

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        pos = event.pos() if hasattr(event, "pos") else event.position()
        frame = self.frame_at(pos.x())
        if frame is not None:
            self.frame_clicked.emit(frame)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        if not self.object_ids:
            painter.setPen(QPen(GRID_COLOR))
            painter.drawText(self.rect(), int(Qt.AlignCenter), "no objects yet: click on the image")
            return
        painter.setPen(Qt.NoPen)
        for row, obj in enumerate(self.object_ids):
            r, g, b, a = self.color_of(obj)
            present = QColor.fromRgbF(float(r), float(g), float(b), 1.0)
            painter.setPen(QPen(present))
            painter.drawText(
                QRectF(0, 3 + row * ROW_HEIGHT, LABEL_WIDTH - 4, ROW_HEIGHT - 2),
                int(Qt.AlignRight | Qt.AlignVCenter),
                str(obj),
            )
            painter.setPen(Qt.NoPen)
            for frame in range(self.num_frames):
                state = FrameState(int(self.states[row, frame]))
                rect = self.cell_rect(row, frame)
                if state == FrameState.PRESENT:
                    painter.fillRect(rect, present)
                elif state == FrameState.ABSENT:
                    painter.fillRect(rect, ABSENT_COLOR)
                elif state == FrameState.UNCERTAIN:
                    painter.fillRect(rect, UNCERTAIN_COLOR)
                    painter.fillRect(rect, QBrush(QColor(0, 0, 0, 120), Qt.BDiagPattern))
                else:
                    painter.setPen(QPen(GRID_COLOR))
                    painter.drawRect(rect.adjusted(0, 0, -1, -1))
                    painter.setPen(Qt.NoPen)
            painter.setBrush(QBrush(CURRENT_COLOR))
            for frame in self.prompted.get(obj, ()):
                if 0 <= frame < self.num_frames:
                    rect = self.cell_rect(row, frame)
                    d = min(rect.width(), rect.height()) * 0.45
                    painter.drawEllipse(rect.center(), d / 2, d / 2)
            painter.setBrush(Qt.NoBrush)
        if self.current_frame is not None and 0 <= self.current_frame < self.num_frames:
            rect = self.cell_rect(0, self.current_frame)
            painter.setPen(QPen(CURRENT_COLOR, 1.5))
            painter.drawRect(
                QRectF(rect.left(), 1, rect.width(), len(self.object_ids) * ROW_HEIGHT + 3)
            )
