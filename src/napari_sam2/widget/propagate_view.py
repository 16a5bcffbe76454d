"""The propagation view: run / cancel buttons, the progress line and bar, and the status line
of the Propagate panel, rendering a
:class:`~napari_sam2.widget.propagation.PropagationController`.

Failures reach the user once each: a napari notification with a short first line (what failed
and what to do; "View Traceback" holds the whole story) and the status line in the panel, whose
tooltip holds the full message until work succeeds again.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import (
    ErrorNotification,
    Notification,
    NotificationSeverity,
    notification_manager,
    show_info,
)

from napari_sam2.widget.panels import PropagatePanel
from napari_sam2.widget.propagation import PropagationController

__all__ = ["PropagateView", "notify_failure"]


def notify_failure(
    short: str, exc: BaseException | None = None, detail: str | None = None
) -> Notification:
    """One error notification: ``short`` as its message, ``exc`` behind "View Traceback".

    An error about the user's own choices (a plain ValueError) has no traceback to show, and
    its end says what to do: a ``short`` cut to one line gives way to the whole ``detail``.
    """
    if exc is not None and type(exc) is not ValueError:
        notification: Notification = ErrorNotification(exc)
        notification.message = short
    else:
        if detail and short.endswith("…"):
            short = "SAM 2: " + " ".join(detail.split())
        notification = Notification(short, NotificationSeverity.ERROR)
    notification_manager.dispatch(notification)
    return notification


def render_progress(panel: Any, text: str, done: int, total: int) -> None:
    """A panel's progress line and bar (its ``progress_label`` and ``progress_bar``)."""
    panel.progress_label.setText(text)
    panel.progress_bar.setMaximum(max(total, 1))
    panel.progress_bar.setValue(min(done, max(total, 1)))


def render_status(label: Any, text: str, detail: str) -> None:
    """A status line: the short text, the details in its tooltip, hidden when empty."""
    label.setText(text)
    label.setToolTip(detail)
    label.setVisible(bool(text))


class PropagateView:
    """Renders ``runs`` in ``panel`` and tells the user about failures and cancels."""

    def __init__(self, panel: PropagatePanel, runs: PropagationController) -> None:
        self.panel = panel
        self.runs = runs
        self._connections = [
            (runs.running_changed, self.show_running),
            (runs.progress_changed, self.show_progress),
            (runs.status_changed, self.show_status),
            (runs.failed, self.notify),
            (runs.cancelled, self.notify_cancelled),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)

    def show_running(self, running: bool, propagating: bool) -> None:
        self.panel.propagate_button.setEnabled(not running)
        self.panel.cancel_button.setEnabled(propagating)

    def show_progress(self, text: str, done: int, total: int) -> None:
        render_progress(self.panel, text, done, total)

    def show_status(self, text: str, detail: str, error: bool) -> None:
        render_status(self.panel.status_label, text, detail)

    def notify(self, short: str, detail: str, exc: BaseException) -> None:
        notify_failure(short, exc, detail)

    def notify_cancelled(self) -> None:
        show_info("SAM 2: propagation cancelled; the frames done are kept")

    def disconnect(self) -> None:
        """Stop rendering the controller (the widget is closing)."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
