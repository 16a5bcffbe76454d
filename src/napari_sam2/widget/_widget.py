"""The SAM 2 tracking dock widget.

Thin by design: the form sections are built in :mod:`napari_sam2.widget.panels`, prompt layers
are handled by :mod:`napari_sam2.widget.prompting` (reading them with
:mod:`napari_sam2.widget.layers` and :mod:`napari_sam2.tracking.layer_prompts`), the model by
:mod:`napari_sam2.widget.model_choice`, and the tracker is driven by a
:class:`~napari_sam2.widget.session.TrackingSession` in napari workers run one at a time by
:mod:`napari_sam2.widget.workers`, so the viewer never freezes. This module wires them together:
the widget's controls, the image and axis choices, the viewer position and export.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QVBoxLayout, QWidget

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget import layers as L
from napari_sam2.widget.model_choice import ModelMixin, TrackerFactory
from napari_sam2.widget.panels import (
    ExportPanel,
    ImagePanel,
    ModelPanel,
    PromptsPanel,
    PropagatePanel,
)
from napari_sam2.widget.prompting import PromptsMixin
from napari_sam2.widget.session import TrackingSession
from napari_sam2.widget.workers import NEW_LAYER, WorkersMixin

NONE = "none"


class SAM2Widget(PromptsMixin, ModelMixin, WorkersMixin, QWidget):
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
        image, model, prompts = ImagePanel(), ModelPanel(), PromptsPanel()
        run, export = PropagatePanel(), ExportPanel()
        for panel in (image, model, prompts, run, export):
            root.addWidget(panel)
        root.addStretch(1)

        # The panels' controls are the widget's own (scripts and tests use them by name).
        self.image_combo = image.image_combo
        self.axis_combo = image.axis_combo
        self.channel_axis_combo = image.channel_axis_combo
        self.channel_combo = image.channel_combo
        self.axes_info = image.axes_info
        self.model_combo = model.model_combo
        self.checkpoint_edit = model.checkpoint_edit
        self.model_status = model.model_status
        self.download_button = model.download_button
        self.download_bar = model.download_bar
        self.device_combo = model.device_combo
        self.points_combo = prompts.points_combo
        self.shapes_combo = prompts.shapes_combo
        self.masks_combo = prompts.masks_combo
        self.new_prompts_button = prompts.new_prompts_button
        self.object_spin = prompts.object_spin
        self.next_object_button = prompts.next_object_button
        self.polarity_button = prompts.polarity_button
        self.remove_object_button = prompts.remove_object_button
        self.output_combo = run.output_combo
        self.direction_combo = run.direction_combo
        self.start_spin = run.start_spin
        self.frames_spin = run.frames_spin
        self.propagate_button = run.propagate_button
        self.cancel_button = run.cancel_button
        self.timeline = run.timeline
        self.export_tiff_button = export.export_tiff_button
        self.export_ctc_button = export.export_ctc_button
        self.export_csv_button = export.export_csv_button
        self.timeline.color_of = lambda obj: tuple(L.color_of(obj, self._output_layer()))

        model.browse_button.clicked.connect(self._browse_checkpoint)
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

    def _update_timeline(self) -> None:
        session = self.session
        if session is None:
            return
        ids, states = session.timeline()
        self.timeline.set_data(ids, states, {k: session.prompted_frames(k) for k in ids})
        self.timeline.set_current_frame(self.current_frame())

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
