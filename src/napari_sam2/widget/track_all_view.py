"""The Track all view: binds the :class:`~napari_sam2.widget.panels.TrackAllPanel` controls to a
:class:`~napari_sam2.widget.track_all_controller.TrackAllController` and renders its state
(running, progress, status line, summary). Failures reach the user once each, as in the
Propagate panel: a notification and the status line."""

from __future__ import annotations

from napari.utils.notifications import show_info

from napari_sam2.widget.panels import TrackAllPanel
from napari_sam2.widget.propagate_view import notify_failure, render_progress, render_status
from napari_sam2.widget.track_all_controller import TrackAllController, TrackAllOutcome

__all__ = ["TrackAllView"]


class TrackAllView:
    """Renders ``controller`` in ``panel`` and forwards what the user does with it."""

    def __init__(self, panel: TrackAllPanel, controller: TrackAllController) -> None:
        self.panel = panel
        self.controller = controller
        self.show_settings()
        for spin in (
            panel.discover_spin,
            panel.end_spin,
            panel.grid_spin,
            panel.quality_spin,
            panel.stability_spin,
            panel.min_area_spin,
        ):
            spin.valueChanged.connect(self.read_settings)
        for check in (panel.discover_check, panel.divisions_check):
            check.toggled.connect(self.read_settings)
        panel.segment_button.clicked.connect(lambda: controller.segment_all())
        panel.track_button.clicked.connect(lambda: controller.track_all())
        panel.cancel_button.clicked.connect(controller.cancel)
        self._connections = [
            (controller.running_changed, self.show_running),
            (controller.progress_changed, self.show_progress),
            (controller.status_changed, self.show_status),
            (controller.summary_changed, self.show_summary),
            (controller.failed, self.notify),
            (controller.finished, self.notify_finished),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)

    def read_settings(self, *args: object) -> None:
        """The controls' values into the controller."""
        p = self.panel
        self.controller.configure(
            discover=p.discover_check.isChecked(),
            discover_every=p.discover_spin.value(),
            divisions=p.divisions_check.isChecked(),
            end_after=p.end_spin.value(),
            points_per_side=p.grid_spin.value(),
            pred_iou_thresh=p.quality_spin.value(),
            stability_score_thresh=p.stability_spin.value(),
            min_area=p.min_area_spin.value(),
        )
        p.discover_spin.setEnabled(p.discover_check.isChecked())

    def show_settings(self) -> None:
        """The controller's settings in the controls (no signals)."""
        p, s = self.panel, self.controller.settings
        values = [
            (p.discover_check, s.discover),
            (p.discover_spin, s.discover_every),
            (p.divisions_check, s.divisions),
            (p.end_spin, s.end_after),
            (p.grid_spin, s.everything.points_per_side),
            (p.quality_spin, s.everything.pred_iou_thresh),
            (p.stability_spin, s.everything.stability_score_thresh),
            (p.min_area_spin, s.everything.min_area),
        ]
        for control, value in values:
            control.blockSignals(True)
            if hasattr(control, "setChecked"):
                control.setChecked(bool(value))
            else:
                control.setValue(value)
            control.blockSignals(False)
        p.discover_spin.setEnabled(s.discover)

    def show_running(self, running: bool, tracking: bool) -> None:
        self.panel.segment_button.setEnabled(not running)
        self.panel.track_button.setEnabled(not running)
        self.panel.cancel_button.setEnabled(running)

    def show_progress(self, text: str, done: int, total: int) -> None:
        render_progress(self.panel, text, done, total)

    def show_status(self, text: str, detail: str, error: bool) -> None:
        render_status(self.panel.status_label, text, detail)

    def show_summary(self, text: str) -> None:
        self.panel.summary_label.setText(text)

    def notify(self, short: str, detail: str, exc: BaseException) -> None:
        notify_failure(short, exc, detail)

    def notify_finished(self, outcome: TrackAllOutcome) -> None:
        if outcome.cancelled:
            show_info("SAM 2: Track all cancelled; the frames done are kept")

    def disconnect(self) -> None:
        """Stop rendering the controller (the widget is closing)."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
