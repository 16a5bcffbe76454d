"""The model in the SAM 2 dock widget: the choice (named checkpoint, local file or a model in
memory), its download with progress, and loading it on the chosen device in a worker.

A mixin of :class:`~napari_sam2.widget._widget.SAM2Widget`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QLineEdit, QProgressBar, QPushButton

TrackerFactory = Callable[..., Any]


class ModelMixin:
    """Model choice, download and loading of :class:`~napari_sam2.widget._widget.SAM2Widget`."""

    # Provided by the widget (the controls are those of ``panels.ModelPanel``).
    model_combo: QComboBox
    checkpoint_edit: QLineEdit
    model_status: QLabel
    download_button: QPushButton
    download_bar: QProgressBar
    _model: Any
    _model_key: tuple | None
    _custom_model: tuple[str, Any] | None
    _tracker_factory: TrackerFactory | None
    # Also: _reset_session().

    def use_model(self, model: Any, name: str = "custom model") -> None:
        """Use an already built model (e.g. a custom configuration) instead of a named one."""
        self._custom_model = (name, model)
        if self.model_combo.findText(name) < 0:
            self.model_combo.addItem(name)
        self.model_combo.setCurrentText(name)
        self._update_model_status()

    def use_tracker_factory(self, factory: TrackerFactory | None) -> None:
        """Build trackers with ``factory(frames, contrast_limits=..., fill_hole_area=...)``
        instead of the model (for tests and custom engines)."""
        self._tracker_factory = factory
        self._reset_session()

    def _model_choice(self) -> str:
        path = self.checkpoint_edit.text().strip()
        return path or self.model_combo.currentText()

    def _update_model_status(self, *args: Any) -> None:
        name = self.model_combo.currentText()
        if self._custom_model is not None and name == self._custom_model[0]:
            self.model_status.setText("in memory")
            self.download_button.setEnabled(False)
            return
        from napari_sam2.weights import WeightsError, checkpoint_status

        try:
            status = checkpoint_status(self._model_choice())
        except (WeightsError, OSError, ValueError) as exc:
            status = f"error: {exc}"
        self.model_status.setText(status)
        self.download_button.setEnabled(status == "needs download")

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth)"
        )
        if path:
            self.checkpoint_edit.setText(path)
            self._update_model_status()

    def download_weights(self) -> GeneratorWorker:
        """Download the chosen checkpoint in a worker, with progress."""
        from napari_sam2.weights import ensure_checkpoint

        name = self._model_choice()

        def work() -> Iterator[tuple[int, int | None]]:
            import queue
            import threading

            q: queue.Queue = queue.Queue()
            done = threading.Event()
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    ensure_checkpoint(name, progress=lambda d, t: q.put((d, t)))
                except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
                    errors.append(exc)
                finally:
                    done.set()

            threading.Thread(target=run, daemon=True).start()
            while not (done.is_set() and q.empty()):
                try:
                    yield q.get(timeout=0.2)
                except queue.Empty:
                    continue
            if errors:
                raise errors[0]

        worker = create_worker(work, _ignore_errors=True)
        self.download_bar.setVisible(True)
        self.download_button.setEnabled(False)

        def on_progress(value: tuple[int, int | None]) -> None:
            done_bytes, total = value
            self.download_bar.setMaximum(int(total or 0) // 1024)
            self.download_bar.setValue(int(done_bytes) // 1024)

        def on_done() -> None:
            self.download_bar.setVisible(False)
            self._update_model_status()

        worker.yielded.connect(on_progress)
        worker.errored.connect(
            lambda exc: show_error(f"SAM 2: the download of {name} failed: {exc}")
        )
        worker.finished.connect(on_done)
        worker.start()
        return worker

    def _load_model(self, model_key: tuple) -> Any:
        """Runs in a worker: the chosen model on the chosen device (cached between runs)."""
        if self._model is not None and self._model_key == model_key:
            return self._model
        from napari_sam2.model import build_sam2
        from napari_sam2.tracking.device import resolve_device
        from napari_sam2.weights import ensure_checkpoint

        name, device = model_key
        if self._custom_model is not None and name == self._custom_model[0]:
            model = self._custom_model[1]
            target = resolve_device(device) if device != "auto" else None
            if target is not None and next(model.parameters()).device != target:
                model.to(target)
        else:
            checkpoint = ensure_checkpoint(name)
            model_name = None if os.path.exists(name) else name
            if model_name is None:
                raise ValueError(
                    f"{name} is a checkpoint file: choose the model it belongs to in the model "
                    "list and give the file as 'checkpoint'"
                )
            model = build_sam2(model_name, checkpoint=checkpoint, device=resolve_device(device))
        model.eval()
        self._model, self._model_key = model, model_key
        return model
