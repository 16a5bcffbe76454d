"""The Qt side of the widget's model part: forwards the Model panel's controls to a
:class:`~napari_sam2.widget.model_controller.ModelController` and renders its state.

Nothing is decided here. Workers return values; their outcome reaches the controller in the GUI
thread (queued Qt signals), and every change ends with :meth:`ModelView.render`.
"""

from __future__ import annotations

from typing import Any

from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QFileDialog

from napari_sam2.widget.model_controller import ModelController, ModelError, ModelRequest
from napari_sam2.widget.panels import ModelPanel

__all__ = ["ModelView"]


class ModelView(QObject):
    """Connects a :class:`~napari_sam2.widget.panels.ModelPanel` to a model controller.

    The user's actions: choosing in the model list, the image size list or the device list,
    typing a checkpoint path (applied on Return or when the field loses focus), the "..."
    browse button, Download. Each registered entry of the model list has its source, download
    size, licence and image size as tooltip.
    Download failures are reported once, as a short napari error notification; the full text
    (URL, where to put the file) is the model state line's tooltip.
    """

    download_finished = Signal()
    """Emitted in the GUI thread when a download has ended, well or not."""
    _loading = Signal(object)  # ModelRequest: a worker starts loading it
    _loaded = Signal(object, object)  # ModelRequest, model: from the worker that loaded it
    _failed = Signal(object, object)  # ModelRequest, ModelError
    _progress = Signal(object, object)  # bytes done, bytes total (or None)

    def __init__(
        self,
        panel: ModelPanel,
        controller: ModelController | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.panel = panel
        self.controller = controller if controller is not None else ModelController()
        self.download_worker: FunctionWorker | None = None
        self._sync_from_controls()
        panel.model_combo.currentTextChanged.connect(self._on_model_chosen)
        panel.checkpoint_edit.editingFinished.connect(self._on_checkpoint_edited)
        panel.browse_button.clicked.connect(self.browse)
        panel.download_button.clicked.connect(self.download)
        panel.device_combo.currentTextChanged.connect(self._on_device_chosen)
        panel.precision_combo.currentTextChanged.connect(self._on_precision_chosen)
        panel.image_size_combo.currentTextChanged.connect(self._on_image_size_chosen)
        self._loading.connect(self._on_loading)
        self._loaded.connect(self._on_loaded)
        self._failed.connect(self._on_failed)
        self._progress.connect(self._on_progress)
        self.render()

    # --- user actions ---------------------------------------------------------------------

    def use_model(self, model: Any, name: str = "custom model") -> None:
        """Add a built model or a ``SAM2Config`` to the model list and choose it."""
        self.controller.use_model(model, name)
        self.render()

    def set_checkpoint(self, path: str) -> None:
        """Give a checkpoint file as the user does in the checkpoint field."""
        self.panel.checkpoint_edit.setText(path)
        self._on_checkpoint_edited()

    def browse(self) -> None:
        """Choose a checkpoint file in a file dialog."""
        path, _ = QFileDialog.getOpenFileName(
            self.panel, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.set_checkpoint(path)

    def download(self) -> FunctionWorker | None:
        """Download the chosen official checkpoint in a worker, with progress (None: nothing to
        download)."""
        if not self.controller.can_download():
            return None
        name = self.controller.begin_download()
        self.panel.download_bar.setRange(0, 0)  # busy until the size is known
        worker = create_worker(self._download_work, name, _ignore_errors=True)
        worker.returned.connect(self._on_download_returned)
        worker.errored.connect(  # only what the work cannot catch (e.g. KeyboardInterrupt)
            lambda exc: self._on_download_returned((ModelError.from_exception(exc),))
        )
        self.download_worker = worker
        self.render()
        worker.start()
        return worker

    def refresh(self) -> None:
        """Take over what scripts set in the controls directly, then render."""
        self._sync_from_controls()
        self.render()

    # --- worker side ---------------------------------------------------------------------

    def load_in_worker(self, key: tuple[str, str]) -> Any:
        """Worker thread: the model for a session key, from memory when already loaded.

        The outcome is handed to the controller in the GUI thread; a failure is raised on as a
        :class:`ModelError` (short message) for the worker that asked to report.
        """
        controller = self.controller
        request = controller.request_for_key(key)
        loaded = controller.loaded
        if loaded is None or loaded[0] != request:
            self._emit(self._loading, request)
        try:
            model = controller.load(request)
        except ModelError as error:
            self._emit(self._failed, request, error)
            raise
        self._emit(self._loaded, request, model)
        return model

    def _download_work(self, name: str) -> tuple[ModelError | None]:
        """Worker thread: returns ``(error or None,)`` instead of raising (the GUI thread
        reports it; a worker that returns an exception itself would raise it)."""
        try:
            self.controller.download(name, progress=self._report_progress)
        except ModelError as error:
            return (error,)
        except Exception as exc:  # noqa: BLE001 - a failure of any kind is reported the same
            return (ModelError.from_exception(exc),)
        return (None,)

    def _report_progress(self, done: int, total: int | None) -> None:
        self._emit(self._progress, done, total)

    @staticmethod
    def _emit(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:
            pass  # the widget was closed while the worker ran

    # --- GUI thread ----------------------------------------------------------------------

    def _sync_from_controls(self) -> None:
        panel, controller = self.panel, self.controller
        name = panel.model_combo.currentText()
        if name and name != controller.name and name in controller.names():
            controller.choose(name)
        path = panel.checkpoint_edit.text().strip() or None
        if path != controller.checkpoint:
            controller.set_checkpoint(path)
        device = panel.device_combo.currentText()
        if device:
            controller.set_device(device)
        precision = panel.precision_combo.currentText()
        if precision:
            controller.set_precision(precision)
        self._apply_image_size(panel.image_size_combo.currentText())

    def _on_model_chosen(self, name: str) -> None:
        if name and name != self.controller.name and name in self.controller.names():
            self.controller.choose(name)
            self.render()

    def _on_checkpoint_edited(self) -> None:
        path = self.panel.checkpoint_edit.text().strip() or None
        if path != self.controller.checkpoint:
            self.controller.set_checkpoint(path)  # may switch the model list to the file's model
        self.render()

    def _on_device_chosen(self, device: str) -> None:
        self.controller.set_device(device)
        self.render()

    def _on_precision_chosen(self, precision: str) -> None:
        if precision:
            self.controller.set_precision(precision)
            self.render()

    def _on_image_size_chosen(self, text: str) -> None:
        self._apply_image_size(text)
        self.render()

    def _apply_image_size(self, text: str) -> None:
        try:
            self.controller.set_image_size(text)
        except ValueError as error:  # only scripts can put such a text into the list
            show_error(f"SAM 2: image size {text!r}: {error}")

    def _on_loading(self, request: ModelRequest) -> None:
        self.controller.begin_load(request)
        self.render()

    def _on_loaded(self, request: ModelRequest, model: Any) -> None:
        self.controller.record_loaded(request, model)
        self.render()

    def _on_failed(self, request: ModelRequest, error: ModelError) -> None:
        # no notification here: the work that needed the model reports its failure
        self.controller.record_failure("load", request, error)
        self.render()

    def _on_progress(self, done: int, total: int | None) -> None:
        bar = self.panel.download_bar
        bar.setRange(0, int(total or 0) // 1024)
        bar.setValue(int(done) // 1024)

    def _on_download_returned(self, outcome: tuple[ModelError | None]) -> None:
        (error,) = outcome
        self.download_worker = None
        self.controller.finish_download(error)
        self.render()
        if error is not None:
            show_error(f"SAM 2: {error.summary}")
        self.download_finished.emit()

    def render(self) -> None:
        """Show the controller's state in the panel's controls."""
        panel, controller = self.panel, self.controller
        combo = panel.model_combo
        combo.blockSignals(True)
        for name in controller.names():
            index = combo.findText(name)
            if index < 0:
                combo.addItem(name)
                index = combo.count() - 1
            if combo.itemData(index, Qt.ItemDataRole.ToolTipRole) is None:
                combo.setItemData(index, controller.describe(name), Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentText(controller.name)
        combo.blockSignals(False)
        sizes = panel.image_size_combo
        size_text = "auto" if controller.image_size is None else str(controller.image_size)
        if sizes.currentText() != size_text:
            sizes.blockSignals(True)
            if sizes.findText(size_text) < 0:
                sizes.addItem(size_text)  # a size a script chose
            sizes.setCurrentText(size_text)
            sizes.blockSignals(False)
        if panel.device_combo.currentText() != controller.device:
            panel.device_combo.blockSignals(True)
            panel.device_combo.setCurrentText(controller.device)
            panel.device_combo.blockSignals(False)
        if panel.precision_combo.currentText() != controller.precision:
            panel.precision_combo.blockSignals(True)
            panel.precision_combo.setCurrentText(controller.precision)
            panel.precision_combo.blockSignals(False)
        panel.model_status.setText(controller.status())
        panel.model_status.setToolTip(controller.detail())
        panel.download_button.setEnabled(controller.can_download())
        panel.download_bar.setVisible(controller.downloading is not None)
