"""Prompt layers and objects in the SAM 2 dock widget: creating, watching and styling the
Points / Shapes / Labels prompt layers, click polarity, and starting or removing objects.

A mixin of :class:`~napari_sam2.widget._widget.SAM2Widget`; what it reads from prompt layers goes
through :mod:`napari_sam2.widget.layers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QPushButton, QSpinBox

from napari_sam2.widget import layers as L
from napari_sam2.widget.session import TrackingSession


class PromptsMixin:
    """Prompt layer handling of :class:`~napari_sam2.widget._widget.SAM2Widget`.

    Keyboard shortcuts on the points layer: ``n`` starts the next object, ``t`` toggles
    positive / negative clicks (and flips the selected points).
    """

    # Provided by the widget.
    viewer: Any
    session: TrackingSession | None
    image_layer: Image | None
    points_layer: Points | None
    shapes_layer: Shapes | None
    masks_layer: Labels | None
    points_combo: QComboBox
    shapes_combo: QComboBox
    masks_combo: QComboBox
    object_spin: QSpinBox
    polarity_button: QPushButton
    busy: bool
    _connected: set[int]
    _syncing_layers: bool
    # Also: plan(), apply_prompts(), _output_layer() and _update_timeline().

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
            elif "N" not in {str(key).upper() for key in layer.keymap}:
                # boxes and painted masks for several objects: `n` starts the next one too
                layer.bind_key("n", lambda _layer: self.next_object())
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


def _hex(rgba: np.ndarray) -> str:
    r, g, b = (int(round(float(v) * 255)) for v in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
