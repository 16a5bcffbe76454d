"""The SAM 2 tracking dock widget.

Thin by design: prompt layers are read with :mod:`napari_sam2.widget.layers` and
:mod:`napari_sam2.tracking.layer_prompts`, the tracker is driven by a
:class:`~napari_sam2.widget.session.TrackingSession`, and everything that runs the network
(loading the model, the decoder pass after a click, propagation) runs in a napari
``thread_worker`` so the viewer never freezes. Workers run one at a time: a click made while
one runs is applied right after it. Results are yielded by the worker and written into the
Labels layer in the GUI thread, frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget import layers as L
from napari_sam2.widget.session import DIRECTIONS, TrackingSession
from napari_sam2.widget.timeline import Timeline

FILL_HOLE_AREA = 8  # decision D4: the widget fills small holes on every device
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_MODEL = "sam2.1_hiera_tiny"
NEW_LAYER = "new layer"
NONE = "none"

TrackerFactory = Callable[..., Any]


class WorkError(Exception):
    """An error in a worker (a RuntimeError from the tracker or torch, passed on as is)."""


class SAM2Widget(QWidget):
    """Dock widget: choose the image, prompt objects, propagate, correct and export.

    Keyboard shortcuts on the points layer: ``n`` starts the next object, ``t`` toggles
    positive / negative clicks (and flips the selected points).
    """

    idle = Signal()
    """Emitted when no worker runs and none is waiting (prompts applied, runs finished)."""
    worker_started = Signal(object)
    """Emitted with each worker just before it starts."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: TrackingSession | None = None
        self.worker: GeneratorWorker | None = None
        self._session_key: tuple | None = None
        self._model: Any = None
        self._model_key: tuple | None = None
        self._custom_model: tuple[str, Any] | None = None
        self._tracker_factory: TrackerFactory | None = None
        self._queue: list[tuple[str, dict]] = []
        self._pbar: progress | None = None
        self._syncing_layers = False
        self._connected: set[int] = set()
        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_choices()

    # ======================================================================================
    # UI
    # ======================================================================================

    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)

        box = QGroupBox("Image")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.axis_combo = QComboBox()
        self.channel_axis_combo = QComboBox()
        self.channel_combo = QComboBox()
        self.axes_info = QLabel()
        self.axes_info.setWordWrap(True)
        form.addRow("image", self.image_combo)
        form.addRow("track along", self.axis_combo)
        form.addRow("channel axis", self.channel_axis_combo)
        form.addRow("channel", self.channel_combo)
        form.addRow(self.axes_info)
        root.addWidget(box)

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        from napari_sam2.weights import CHECKPOINT_NAMES

        self.model_combo.addItems(list(CHECKPOINT_NAMES))
        self.model_combo.setCurrentText(DEFAULT_MODEL)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("optional: a local .pt checkpoint")
        browse = QPushButton("...")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_checkpoint)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint_edit)
        row.addWidget(browse)
        self.model_status = QLabel()
        self.download_button = QPushButton("Download")
        self.download_bar = QProgressBar()
        self.download_bar.setVisible(False)
        status_row = QHBoxLayout()
        status_row.addWidget(self.model_status, 1)
        status_row.addWidget(self.download_button)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        form.addRow("model", self.model_combo)
        form.addRow("checkpoint", row)
        form.addRow("weights", status_row)
        form.addRow(self.download_bar)
        form.addRow("device", self.device_combo)
        root.addWidget(box)

        box = QGroupBox("Prompts")
        form = QFormLayout(box)
        self.points_combo = QComboBox()
        self.shapes_combo = QComboBox()
        self.masks_combo = QComboBox()
        self.new_prompts_button = QPushButton("New prompt layers")
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 65535)
        self.next_object_button = QPushButton("Next object (n)")
        self.polarity_button = QPushButton()
        self.polarity_button.setCheckable(True)
        self.polarity_button.setToolTip("Positive clicks add to the object, negative ones cut")
        self.remove_object_button = QPushButton("Remove object")
        obj_row = QHBoxLayout()
        obj_row.addWidget(self.object_spin)
        obj_row.addWidget(self.next_object_button)
        click_row = QHBoxLayout()
        click_row.addWidget(self.polarity_button)
        click_row.addWidget(self.remove_object_button)
        form.addRow(self.new_prompts_button)
        form.addRow("clicks", self.points_combo)
        form.addRow("boxes", self.shapes_combo)
        form.addRow("masks", self.masks_combo)
        form.addRow("object", obj_row)
        form.addRow(click_row)
        root.addWidget(box)

        box = QGroupBox("Propagate")
        form = QFormLayout(box)
        self.output_combo = QComboBox()
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(list(DIRECTIONS))
        self.start_spin = QSpinBox()
        self.start_spin.setRange(-1, 1_000_000)
        self.start_spin.setValue(-1)
        self.start_spin.setSpecialValueText("auto")
        self.start_spin.setToolTip(
            "auto: the first (reverse: last) frame whose prompts changed since the last run, "
            "so a correction re-propagates from its own frame"
        )
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(0, 1_000_000)
        self.frames_spin.setSpecialValueText("all")
        self.frames_spin.setToolTip("how many frames after the start frame (all: to the end)")
        self.propagate_button = QPushButton("Propagate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        run_row = QHBoxLayout()
        run_row.addWidget(self.propagate_button)
        run_row.addWidget(self.cancel_button)
        self.timeline = Timeline()
        self.timeline.color_of = lambda obj: tuple(L.color_of(obj, self._output_layer()))
        form.addRow("output", self.output_combo)
        form.addRow("direction", self.direction_combo)
        form.addRow("start frame", self.start_spin)
        form.addRow("frames", self.frames_spin)
        form.addRow(run_row)
        form.addRow(self.timeline)
        root.addWidget(box)

        box = QGroupBox("Export")
        row = QHBoxLayout(box)
        self.export_tiff_button = QPushButton("TIFF")
        self.export_ctc_button = QPushButton("CTC")
        self.export_csv_button = QPushButton("CSV")
        for b in (self.export_tiff_button, self.export_ctc_button, self.export_csv_button):
            row.addWidget(b)
        root.addWidget(box)
        root.addStretch(1)

        self._set_polarity(True)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.axis_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.channel_axis_combo.currentIndexChanged.connect(self._on_channel_axis_changed)
        self.channel_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.model_combo.currentIndexChanged.connect(self._update_model_status)
        self.checkpoint_edit.editingFinished.connect(self._update_model_status)
        self.download_button.clicked.connect(self.download_weights)
        self.new_prompts_button.clicked.connect(self.new_prompt_layers)
        self.next_object_button.clicked.connect(self.next_object)
        self.polarity_button.clicked.connect(lambda: self._set_polarity(not self.positive))
        self.object_spin.valueChanged.connect(self._on_object_changed)
        self.remove_object_button.clicked.connect(lambda: self.remove_object())
        self.propagate_button.clicked.connect(lambda: self.propagate())
        self.cancel_button.clicked.connect(self.cancel)
        self.timeline.frame_clicked.connect(self.go_to_frame)
        self.export_tiff_button.clicked.connect(lambda: self._export_dialog("tiff"))
        self.export_ctc_button.clicked.connect(lambda: self._export_dialog("ctc"))
        self.export_csv_button.clicked.connect(lambda: self._export_dialog("csv"))
        for combo in (self.points_combo, self.shapes_combo, self.masks_combo):
            combo.currentIndexChanged.connect(self._on_prompt_layers_changed)
        self._update_model_status()

    # ======================================================================================
    # layers and choices
    # ======================================================================================

    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.layers.events.reordered.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._on_dims_changed)
        self.viewer.dims.events.axis_labels.connect(self._on_image_changed)

    def _layers_of(self, kind: type) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, kind)]

    @staticmethod
    def _fill_combo(combo: QComboBox, layers: list, extra: list[str]) -> None:
        current = combo.currentData()
        current_text = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        for text in extra:
            combo.addItem(text, None)
        for layer in layers:
            combo.addItem(layer.name, layer)
        index = next((i for i in range(combo.count()) if combo.itemData(i) is current), -1)
        if index < 0:
            index = combo.findText(current_text)
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)

    def _refresh_layer_choices(self, event: Any = None) -> None:
        old_image = self.image_layer
        self._fill_combo(self.image_combo, self._layers_of(Image), [])
        prompts = [self.points_layer, self.shapes_layer, self.masks_layer]
        self._fill_combo(self.points_combo, self._layers_of(Points), [NONE])
        self._fill_combo(self.shapes_combo, self._layers_of(Shapes), [NONE])
        self._fill_combo(self.masks_combo, self._layers_of(Labels), [NONE])
        self._fill_combo(self.output_combo, self._layers_of(Labels), [NEW_LAYER])
        if self.image_layer is not old_image:
            self._on_image_changed()
        if prompts != [self.points_layer, self.shapes_layer, self.masks_layer]:
            self._on_prompt_layers_changed()

    @property
    def image_layer(self) -> Image | None:
        return self.image_combo.currentData()

    @property
    def points_layer(self) -> Points | None:
        return self.points_combo.currentData()

    @property
    def shapes_layer(self) -> Shapes | None:
        return self.shapes_combo.currentData()

    @property
    def masks_layer(self) -> Labels | None:
        return self.masks_combo.currentData()

    def _output_layer(self) -> Labels | None:
        return self.output_combo.currentData()

    def _on_image_changed(self, *args: Any) -> None:
        image = self.image_layer
        self.axis_combo.blockSignals(True)
        self.channel_axis_combo.blockSignals(True)
        self.axis_combo.clear()
        self.channel_axis_combo.clear()
        self.channel_axis_combo.addItem(NONE, None)
        if image is not None:
            shape = L.image_data(image).shape
            spatial = len(shape) - (1 if image.rgb else 0)
            labels = self._axis_labels(spatial)
            for axis in range(spatial - 2):
                self.axis_combo.addItem(f"{labels[axis]} ({shape[axis]})", axis)
            if not image.rgb:
                for axis in range(spatial - 2):
                    self.channel_axis_combo.addItem(f"{labels[axis]} ({shape[axis]})", axis)
        self.channel_axis_combo.setEnabled(image is not None and not image.rgb)
        self.axis_combo.blockSignals(False)
        self.channel_axis_combo.blockSignals(False)
        self._on_channel_axis_changed()

    def _axis_labels(self, ndim: int) -> list[str]:
        labels = list(self.viewer.dims.axis_labels)[-ndim:] if self.viewer.dims.ndim >= ndim else []
        if len(labels) != ndim:
            labels = [str(i) for i in range(ndim)]
        # napari's default labels are numbers ("-3", "0"): show those as plain axis numbers.
        return [
            f"axis {i}" if name.lstrip("-").isdigit() else f"axis {i}: {name}"
            for i, name in enumerate(labels)
        ]

    def _on_channel_axis_changed(self, *args: Any) -> None:
        image = self.image_layer
        self.channel_combo.blockSignals(True)
        self.channel_combo.clear()
        c_axis = self.channel_axis_combo.currentData()
        if image is not None and image.rgb:
            self.channel_combo.addItem("RGB", "rgb")
        elif image is not None and c_axis is not None:
            count = L.image_data(image).shape[c_axis]
            for c in range(count):
                self.channel_combo.addItem(str(c), c)
            if count == 3:
                self.channel_combo.addItem("RGB (0, 1, 2)", "rgb")
        self.channel_combo.setEnabled(self.channel_combo.count() > 1)
        self.channel_combo.blockSignals(False)
        self._on_axes_changed()

    def _on_axes_changed(self, *args: Any) -> None:
        try:
            plan = self.plan()
        except ValueError as exc:
            self.axes_info.setText(str(exc))
            return
        if plan is None:
            self.axes_info.setText("add an image layer")
            return
        fixed = ", ".join(f"axis {a} = {i}" for a, i in sorted(plan.fixed.items()))
        self.axes_info.setText(
            f"{plan.num_frames} frames"
            + (f"; fixed at the viewer's position: {fixed}" if fixed else "")
        )
        self.timeline.set_data([], np.zeros((0, plan.num_frames)))
        self._update_timeline()

    def plan(self) -> AxisPlan | None:
        """How the chosen image maps to the tracked stack (None without an image).

        Axes other than the frame, channel, Y and X axes are fixed at the viewer's position.
        """
        image = self.image_layer
        if image is None:
            return None
        shape = L.image_data(image).shape
        frame_axis = self.axis_combo.currentData()
        if frame_axis is None:
            raise ValueError(
                f"the image {image.name!r} of shape {shape} has no axis to track along: it "
                "needs a time or Z axis besides Y and X"
            )
        c_axis = None if image.rgb else self.channel_axis_combo.currentData()
        spatial = len(shape) - (1 if image.rgb else 0)
        others = [a for a in range(spatial - 2) if a not in (frame_axis, c_axis)]
        fixed = {a: self._viewer_index(image, a) for a in others}
        return AxisPlan.from_shape(shape, frame_axis, c_axis, fixed, rgb=image.rgb)

    def _viewer_axis(self, image: Image, axis: int) -> int:
        return axis + self.viewer.dims.ndim - image.ndim

    def _viewer_index(self, image: Image, axis: int) -> int:
        """The image's data index along ``axis`` at the viewer's current position."""
        world = self.viewer.dims.point[self._viewer_axis(image, axis)]
        index = int(round((world - image.translate[axis]) / image.scale[axis]))
        return int(np.clip(index, 0, L.image_data(image).shape[axis] - 1))

    def current_frame(self) -> int | None:
        plan = self._safe_plan()
        if plan is None:
            return None
        return self._viewer_index(self.image_layer, plan.frame_axis)

    def _safe_plan(self) -> AxisPlan | None:
        try:
            return self.plan()
        except ValueError:
            return None

    def _on_dims_changed(self, event: Any = None) -> None:
        self.timeline.set_current_frame(self.current_frame())

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer to ``frame`` along the tracked axis."""
        image, plan = self.image_layer, self._safe_plan()
        if image is None or plan is None:
            return
        axis = plan.frame_axis
        world = image.translate[axis] + frame * image.scale[axis]
        self.viewer.dims.set_point(self._viewer_axis(image, axis), world)

    # --- prompt layers --------------------------------------------------------------------

    def new_prompt_layers(self) -> tuple[Points, Shapes, Labels]:
        """Add a Points layer (clicks), a Shapes layer (boxes) and a Labels layer (mask
        prompts) with the image's geometry and select them as prompt layers."""
        image, plan = self.image_layer, self.plan()
        if image is None or plan is None:
            raise ValueError("add an image layer first")
        obj = self.object_spin.value()
        masks = L.new_labels_layer(image, plan, L.MASKS_NAME)
        shapes = L.new_shapes_layer(image, plan, obj)
        points = L.new_points_layer(image, plan, obj)
        for layer in (masks, shapes, points):
            self.viewer.layers.append(layer)
        self.points_combo.setCurrentIndex(self.points_combo.findData(points))
        self.shapes_combo.setCurrentIndex(self.shapes_combo.findData(shapes))
        self.masks_combo.setCurrentIndex(self.masks_combo.findData(masks))
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points, shapes, masks

    def _on_prompt_layers_changed(self, *args: Any) -> None:
        for layer in (self.points_layer, self.shapes_layer, self.masks_layer):
            if layer is None or id(layer) in self._connected:
                continue
            self._connected.add(id(layer))
            layer.events.data.connect(self._on_prompt_data)
            if isinstance(layer, (Points, Shapes)):
                layer.events.features.connect(self._on_prompt_data)
            if isinstance(layer, Labels) and hasattr(layer.events, "paint"):
                layer.events.paint.connect(self._on_prompt_data)
            if isinstance(layer, Points):
                layer.bind_key("n", lambda _layer: self.next_object(), overwrite=True)
                layer.bind_key("t", lambda _layer: self.toggle_polarity(), overwrite=True)
        self._apply_defaults()
        self._style_prompt_layers()

    def _on_prompt_data(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if self._syncing_layers or str(action) in ("adding", "removing", "changing"):
            return
        source = getattr(event, "source", None)
        if source is not None and source not in (
            self.points_layer,
            self.shapes_layer,
            self.masks_layer,
        ):
            return
        self._style_prompt_layers()
        self.apply_prompts()

    def _style_prompt_layers(self) -> None:
        self._syncing_layers = True
        try:
            if self.points_layer is not None:
                L.style_points(self.points_layer, self._output_layer())
            if self.shapes_layer is not None:
                L.style_shapes(self.shapes_layer, self._output_layer())
        finally:
            self._syncing_layers = False

    @property
    def positive(self) -> bool:
        return self.polarity_button.isChecked()

    def _set_polarity(self, positive: bool) -> None:
        self.polarity_button.setChecked(positive)
        self.polarity_button.setText("Positive clicks (t)" if positive else "Negative clicks (t)")
        self._apply_defaults()

    def toggle_polarity(self) -> None:
        """Switch between positive and negative clicks; flips the selected points too."""
        points = self.points_layer
        if points is not None and points.selected_data and "positive" in points.features:
            selected = sorted(points.selected_data)
            features = points.features.copy()
            features.loc[selected, "positive"] = ~features.loc[selected, "positive"].astype(bool)
            points.features = features
            self._style_prompt_layers()
            self.apply_prompts()
            return
        self._set_polarity(not self.positive)

    def next_object(self) -> int:
        """Start a new object: one above every object id in use. Returns it."""
        used = {self.object_spin.value() - 1}
        for layer in (self.points_layer, self.shapes_layer):
            if layer is not None and "object_id" in layer.features and len(layer.features):
                used.add(int(np.max(layer.features["object_id"])))
        if self.session is not None:
            used.update(self.session.object_ids())
        self.object_spin.setValue(max(used) + 1)
        self._set_polarity(True)
        return self.object_spin.value()

    def _on_object_changed(self, *args: Any) -> None:
        self._apply_defaults()

    def _apply_defaults(self) -> None:
        obj = self.object_spin.value()
        if self.points_layer is not None:
            self.points_layer.feature_defaults = {"object_id": obj, "positive": self.positive}
            self.points_layer.current_face_color = _hex(L.color_of(obj, self._output_layer()))
        if self.shapes_layer is not None and "object_id" in self.shapes_layer.features:
            self.shapes_layer.feature_defaults = {"object_id": obj}
        if self.masks_layer is not None:
            self.masks_layer.selected_label = obj

    # --- model ----------------------------------------------------------------------------

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

    # ======================================================================================
    # session
    # ======================================================================================

    def _reset_session(self) -> None:
        if self.session is not None:
            close = getattr(getattr(self.session.tracker, "frames", None), "close", None)
            if callable(close):
                close()
        self.session = None
        self._session_key = None

    def _ensure_output_layer(self, image: Image, plan: AxisPlan) -> Labels:
        layer = self._output_layer()
        expected = plan.labels_shape(L.image_data(image).shape)
        if layer is None:
            layer = L.new_labels_layer(image, plan, L.OUTPUT_NAME)
            self.viewer.layers.append(layer)
            self.output_combo.setCurrentIndex(self.output_combo.findData(layer))
            self._style_prompt_layers()
        elif tuple(layer.data.shape) != tuple(expected):
            raise ValueError(
                f"the output layer {layer.name!r} has shape {tuple(layer.data.shape)} but the "
                f"image needs {tuple(expected)}: choose '{NEW_LAYER}' as output"
            )
        return layer

    def _session_spec(self) -> dict:
        """Everything a session depends on, read in the GUI thread."""
        image, plan = self.image_layer, self.plan()
        if image is None or plan is None:
            raise ValueError("choose an image layer to track in")
        output = self._ensure_output_layer(image, plan)
        channel = self.channel_combo.currentData()
        model_key = (
            self.model_combo.currentText()
            if not self.checkpoint_edit.text().strip()
            else self.checkpoint_edit.text().strip(),
            self.device_combo.currentText(),
        )
        key = (id(image), plan, channel, model_key, id(output.data), id(self._tracker_factory))
        limits = None
        if not image.rgb and channel != "rgb":
            limits = tuple(float(v) for v in image.contrast_limits)
        return {
            "key": key,
            "image": image,
            "data": L.image_data(image),
            "plan": plan,
            "channel": channel,
            "contrast_limits": limits,
            "model_key": model_key,
            "labels": plan.labels_view(output.data),
            "output": output,
        }

    def _build_session(self, spec: dict) -> TrackingSession:
        """Runs in a worker: the tracker over the lazy (T, H, W[, C]) view of the image."""
        from napari_sam2.tracking.frames import stack_view

        plan: AxisPlan = spec["plan"]
        fixed = dict(plan.fixed)
        channel_axis = None
        if plan.channel_axis is not None:
            if spec["channel"] == "rgb":
                channel_axis = plan.channel_axis
            else:
                fixed[plan.channel_axis] = int(spec["channel"] or 0)
        frames = stack_view(spec["data"], plan.frame_axis, channel_axis, fixed)
        kwargs = {"contrast_limits": spec["contrast_limits"], "fill_hole_area": FILL_HOLE_AREA}
        if self._tracker_factory is not None:
            tracker = self._tracker_factory(frames, **kwargs)
        else:
            from napari_sam2.tracking.tracker import Tracker

            tracker = Tracker(self._load_model(spec["model_key"]), frames, **kwargs)
        return TrackingSession(tracker, spec["labels"])

    # ======================================================================================
    # workers
    # ======================================================================================

    @property
    def busy(self) -> bool:
        return self.worker is not None or bool(self._queue)

    def apply_prompts(self) -> None:
        """Send what changed in the prompt layers to the tracker (in a worker) and show the
        prompted frames' masks at once."""
        if not any(kind == "prompts" for kind, _ in self._queue):
            self._queue.append(("prompts", {}))
        self._start_next()

    def propagate(
        self,
        direction: str | None = None,
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> None:
        """Propagate in a worker (arguments default to the widget's settings)."""
        direction = direction or self.direction_combo.currentText()
        if start_frame is None and self.start_spin.value() >= 0:
            start_frame = self.start_spin.value()
        if max_frames is None and self.frames_spin.value() > 0:
            max_frames = self.frames_spin.value()
        self._queue.append(
            ("propagate", {"direction": direction, "start": start_frame, "max": max_frames})
        )
        self._start_next()

    def cancel(self) -> None:
        """Stop the running propagation after the frame in progress; what is done stays."""
        self._queue = [job for job in self._queue if job[0] != "propagate"]
        if self.worker is not None:
            self.worker.quit()

    def _start_next(self) -> None:
        if self.worker is not None:
            return
        if not self._queue:
            self.idle.emit()
            return
        kind, args = self._queue.pop(0)
        try:
            spec = self._session_spec()
            prompts = L.read_prompts(
                spec["plan"],
                spec["image"],
                self.points_layer,
                self.shapes_layer,
                self.masks_layer,
                self.object_spin.value(),
            )
        except ValueError as exc:
            show_error(f"SAM 2: {exc}")
            self._queue.clear()
            self.idle.emit()
            return
        if kind == "prompts" and self.session is None and not prompts.keys():
            self._start_next()  # nothing to do: no session and no prompts
            return
        if spec["key"] != self._session_key:
            self._reset_session()
            self._session_key = spec["key"]
        worker = create_worker(self._work, kind, args, spec, prompts, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.errored.connect(lambda exc, w=worker, kind=kind: self._on_error(w, kind, exc))
        worker.finished.connect(lambda w=worker, kind=kind: self._on_finished(w, kind))
        if kind == "propagate":
            worker.aborted.connect(lambda: show_info("SAM 2: propagation cancelled"))
            self._pbar = progress(total=0, desc="SAM 2: propagating")
            self.cancel_button.setEnabled(True)
        self.propagate_button.setEnabled(False)
        self.worker = worker
        self.worker_started.emit(worker)
        worker.start()

    def _work(self, kind: str, args: dict, spec: dict, prompts: Any) -> Iterator[Any]:
        """The worker's generator: apply the prompts, then (for a run) propagate."""
        try:
            yield from self._work_steps(kind, args, spec, prompts)
        except RuntimeError as exc:
            # superqt takes a RuntimeError from a worker for a deleted Qt object and ends the
            # worker silently (no errored, no finished): hand it on as another type.
            raise WorkError(str(exc)) from exc

    def _work_steps(self, kind: str, args: dict, spec: dict, prompts: Any) -> Iterator[Any]:
        if self.session is None:
            self.session = self._build_session(spec)
        session = self.session
        for result in session.apply_prompts(prompts):
            yield ("prompt", result)
        yield ("cleared", None)
        if kind != "propagate":
            return
        direction, start, max_frames = args["direction"], args["start"], args["max"]
        yield ("total", self._expected_frames(session, direction, start, max_frames))
        worker = self.worker
        for result in session.propagate(
            direction,
            start,
            max_frames,
            should_stop=lambda: worker is not None and worker.abort_requested,
        ):
            yield ("frame", result)

    @staticmethod
    def _expected_frames(
        session: TrackingSession, direction: str, start: int | None, max_frames: int | None
    ) -> int:
        total = 0
        prompted = sorted(session.sent.frames())
        for leg in ["forward", "reverse"] if direction == "both" else [direction]:
            s = start if start is not None else session.start_frame(leg)
            if s is None:
                s = prompted[-1] if leg == "reverse" else prompted[0]
            n = s + 1 if leg == "reverse" else session.num_frames - s
            total += n if max_frames is None else min(n, max_frames + 1)
        return total

    def _on_yielded(self, item: tuple[str, Any]) -> None:
        what, value = item
        session = self.session
        if session is None:
            return
        if what == "total":
            if self._pbar is not None:
                self._pbar.total = int(value)
            return
        if what == "cleared":
            session.record_cleared()
        else:
            session.record(value)
            if what == "frame" and self._pbar is not None:
                self._pbar.update(1)
        output = self._output_layer()
        if output is not None:
            output.refresh()
        self._update_timeline()

    def _update_timeline(self) -> None:
        session = self.session
        if session is None:
            return
        ids, states = session.timeline()
        self.timeline.set_data(ids, states, {k: session.prompted_frames(k) for k in ids})
        self.timeline.set_current_frame(self.current_frame())

    def _on_error(self, worker: GeneratorWorker, kind: str, exc: BaseException) -> None:
        worker.sam2_failed = True
        what = "propagation" if kind == "propagate" else "applying the prompts"
        cause = exc.__cause__ if isinstance(exc, WorkError) and exc.__cause__ else exc
        hint = {
            "WeightsError": "check the model choice, the network, or give a local checkpoint",
            "RuntimeError": "check the prompts (every object needs one) and the device",
            "OutOfMemoryError": "choose a smaller model or the CPU",
        }.get(type(cause).__name__, "check the image, axes and prompts")
        show_error(f"SAM 2: {what} failed: {exc} ({hint}); labels already written are kept")
        if kind == "prompts" or self.session is None:
            self._reset_session()  # start over cleanly with the next click
        self._queue = [job for job in self._queue if job[0] != "propagate"]
        self.last_error = exc

    def _on_finished(self, worker: GeneratorWorker, kind: str) -> None:
        try:
            self._after_worker(worker, kind)
        except RuntimeError:
            pass  # the widget was closed while the worker ran

    def _after_worker(self, worker: GeneratorWorker, kind: str) -> None:
        if self.worker is worker:
            self.worker = None
        if kind == "propagate":
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None
            finished_run = not worker.abort_requested and not getattr(worker, "sam2_failed", False)
            if finished_run and self.session is not None:
                self.session.propagation_finished()
        self.cancel_button.setEnabled(False)
        self.propagate_button.setEnabled(True)
        self._update_timeline()
        self._start_next()

    # --- objects --------------------------------------------------------------------------

    def remove_object(self, object_id: int | None = None) -> None:
        """Remove an object: its prompts, its tracking and its labels (other labels stay)."""
        obj = self.object_spin.value() if object_id is None else int(object_id)
        if self.busy:
            show_error("SAM 2: wait for the running work to finish (or cancel it) first")
            return
        self._syncing_layers = True
        try:
            for layer in (self.points_layer, self.shapes_layer):
                if layer is not None and "object_id" in layer.features and len(layer.data):
                    keep = np.asarray(layer.features["object_id"]) != obj
                    if not keep.all():
                        layer.selected_data = set(np.nonzero(~keep)[0].tolist())
                        layer.remove_selected()
            masks = self.masks_layer
            if masks is not None:
                data = masks.data
                data[data == obj] = 0
                masks.refresh()
        finally:
            self._syncing_layers = False
        if self.session is not None:
            self.session.remove_object(obj)
        output = self._output_layer()
        if output is not None:
            output.refresh()
        self._update_timeline()

    # --- export ---------------------------------------------------------------------------

    def export(self, kind: str, path: str | os.PathLike) -> Any:
        """Write the output labels as ``tiff`` or ``ctc`` (a folder), or the presence ``csv``."""
        from napari_sam2.outputs import export_ctc, export_labels_tiff

        output = self._output_layer()
        plan = self._safe_plan()
        if kind == "csv":
            if self.session is None:
                raise ValueError("nothing tracked yet: propagate before exporting the table")
            return self.session.table.to_csv(path)
        if output is None or plan is None:
            raise ValueError("no output labels yet: prompt and propagate first")
        if kind == "ctc":
            return export_ctc(np.asarray(plan.labels_view(output.data)), path)
        if kind == "tiff":
            labels = np.asarray(output.data)
            scale = list(output.scale)
            if plan.channel_axis is not None and not plan.rgb:
                labels = np.take(labels, 0, axis=plan.channel_axis)
                scale.pop(plan.channel_axis)
            names = _axes_names(labels.ndim, plan)
            return export_labels_tiff(labels, path, axes=names, scale=scale)
        raise ValueError(f"unknown export {kind!r}: choose tiff, ctc or csv")

    def _export_dialog(self, kind: str) -> None:
        try:
            if kind == "ctc":
                path = QFileDialog.getExistingDirectory(self, "CTC result folder")
            else:
                filt = "TIFF (*.tif *.tiff)" if kind == "tiff" else "CSV (*.csv)"
                path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", "", filt)
            if path:
                self.export(kind, path)
                show_info(f"SAM 2: wrote {path}")
        except (ValueError, TypeError, OSError) as exc:
            show_error(f"SAM 2: export failed: {exc}")


def _axes_names(ndim: int, plan: AxisPlan) -> str:
    """TIFF axes letters for labels of ``ndim`` axes: frame axis T (Z if nothing else), Y, X."""
    if ndim == 3:
        return "TYX"
    if ndim == 4:
        return "TZYX"
    raise ValueError(f"TIFF export takes 3 or 4 label axes, got {ndim}")


def _hex(rgba: np.ndarray) -> str:
    r, g, b = (int(round(float(v) * 255)) for v in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
