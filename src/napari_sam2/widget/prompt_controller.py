"""The prompts of the widget, without Qt: which layers hold them, the object being prompted,
click polarity, and reading the layers as the tracker's prompts.

:class:`PromptController` watches the chosen Points / Shapes / Labels layers (napari events,
no Qt) and says when the user edited them (:attr:`PromptController.edited`); the widget's
prompts view shows :attr:`object_id` and :attr:`positive` and forwards the user's choices.
Keyboard shortcuts on the prompt layers: ``n`` starts the next object, ``t`` (points) toggles
positive / negative clicks and flips the selected points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from psygnal import Signal

from napari_sam2.tracking.layer_prompts import AxisPlan, PromptSet
from napari_sam2.widget import layers as L

__all__ = ["PromptController"]

# napari's data events before the change is made: the change itself follows
_BEFORE_CHANGE = ("adding", "removing", "changing")


class PromptController:
    """Prompt layers, the current object and click polarity.

    Parameters
    ----------
    output
        Returns the output Labels layer (or None): prompts take its label colours.
    tracked_ids
        Returns the object ids the tracker knows (so a new object gets an unused id).
    """

    edited = Signal()
    """The user changed a prompt layer's data: the prompts should be applied."""
    object_changed = Signal(int)
    polarity_changed = Signal(bool)

    def __init__(
        self,
        output: Callable[[], Labels | None] = lambda: None,
        tracked_ids: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        self._output = output
        self._tracked_ids = tracked_ids
        self.points: Points | None = None
        self.shapes: Shapes | None = None
        self.masks: Labels | None = None
        self.object_id = 1
        self.positive = True
        self._watched: set[int] = set()
        self._writing = False  # our own changes to the layers are not user edits

    # --- layers --------------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Points | None, Shapes | None, Labels | None]:
        return self.points, self.shapes, self.masks

    @staticmethod
    def create_layers(
        image: Image, plan: AxisPlan, object_id: int = 1
    ) -> tuple[Points, Shapes, Labels]:
        """New, empty prompt layers with the image's geometry (not added to a viewer)."""
        return (
            L.new_points_layer(image, plan, object_id),
            L.new_shapes_layer(image, plan, object_id),
            L.new_labels_layer(image, plan, L.MASKS_NAME),
        )

    def set_layers(
        self, points: Points | None, shapes: Shapes | None, masks: Labels | None
    ) -> None:
        """Use these layers for prompts (None: no such prompts); watch them for edits."""
        self.points, self.shapes, self.masks = points, shapes, masks
        for layer in self.layers:
            if layer is not None and id(layer) not in self._watched:
                self._watch(layer)
        self.apply_defaults()
        self.style()

    def _watch(self, layer: Any) -> None:
        self._watched.add(id(layer))
        layer.events.data.connect(self._on_data)
        if isinstance(layer, (Points, Shapes)):
            layer.events.features.connect(self._on_data)
        if isinstance(layer, Labels) and hasattr(layer.events, "paint"):
            layer.events.paint.connect(self._on_data)
        if isinstance(layer, Points):
            layer.bind_key("n", lambda _layer: self.next_object(), overwrite=True)
            layer.bind_key("t", lambda _layer: self.toggle_polarity(), overwrite=True)
        elif "N" not in {str(key).upper() for key in layer.keymap}:
            # boxes and painted masks for several objects: `n` starts the next one too
            layer.bind_key("n", lambda _layer: self.next_object())

    def _on_data(self, event: Any = None) -> None:
        if self._writing or str(getattr(event, "action", None)) in _BEFORE_CHANGE:
            return
        source = getattr(event, "source", None)
        if source is not None and all(source is not layer for layer in self.layers):
            return  # a layer no longer chosen
        self.style()
        self.edited.emit()

    # --- object and polarity ------------------------------------------------------------------

    def set_object(self, object_id: int) -> None:
        """Prompt object ``object_id`` from now on."""
        object_id = int(object_id)
        if object_id != self.object_id:
            self.object_id = object_id
            self.object_changed.emit(object_id)
        self.apply_defaults()

    def set_positive(self, positive: bool) -> None:
        """Positive clicks add to the object, negative ones cut it."""
        positive = bool(positive)
        if positive != self.positive:
            self.positive = positive
            self.polarity_changed.emit(positive)
        self.apply_defaults()

    def toggle_polarity(self) -> None:
        """Flip the selected points' polarity if points are selected, else the click mode."""
        points = self.points
        if points is not None and points.selected_data and "positive" in points.features:
            selected = sorted(points.selected_data)
            features = points.features.copy()
            features.loc[selected, "positive"] = ~features.loc[selected, "positive"].astype(bool)
            with self._own_changes():
                points.features = features
            self.style()
            self.edited.emit()
            return
        self.set_positive(not self.positive)

    def used_ids(self) -> set[int]:
        """Object ids of the points, boxes and the tracker, and the largest label of the output
        layer when its data is in memory: labels drawn by hand or by Segment all are ids in
        use too, and a new object with one of their ids would take their pixels over. Painted
        masks and a lazy output layer are not scanned: that would read a whole volume at each
        key press."""
        used = set(int(k) for k in self._tracked_ids())
        for layer in (self.points, self.shapes):
            if layer is not None and "object_id" in layer.features and len(layer.features):
                used.update(int(k) for k in np.unique(layer.features["object_id"]))
        output = self._output()
        labels = None if output is None else output.data
        if isinstance(labels, np.ndarray) and labels.size:
            used.add(int(labels.max()))
        return used

    def next_object(self) -> int:
        """Start a new object, one above every id in use (and above the current one), with
        positive clicks. Returns its id."""
        self.set_object(max(self.used_ids() | {self.object_id - 1}) + 1)
        self.set_positive(True)
        return self.object_id

    def apply_defaults(self) -> None:
        """New points, boxes and painted masks go to the current object and polarity."""
        obj = self.object_id
        with self._own_changes():
            if self.points is not None:
                self.points.feature_defaults = {"object_id": obj, "positive": self.positive}
                self.points.current_face_color = _hex(L.color_of(obj, self._output()))
            if self.shapes is not None and "object_id" in self.shapes.features:
                self.shapes.feature_defaults = {"object_id": obj}
            if self.masks is not None:
                self.masks.selected_label = obj

    def style(self) -> None:
        """Points and boxes in their object's label colour; negative clicks as red crosses."""
        with self._own_changes():
            if self.points is not None:
                L.style_points(self.points, self._output())
            if self.shapes is not None:
                L.style_shapes(self.shapes, self._output())

    # --- reading and removing ---------------------------------------------------------------

    def read(self, plan: AxisPlan, image: Image) -> PromptSet:
        """Every prompt in the layers, in frame pixels of the tracked stack."""
        return L.read_prompts(plan, image, self.points, self.shapes, self.masks, self.object_id)

    def remove_object_prompts(self, object_id: int) -> None:
        """Delete an object's points, boxes and painted mask (not an edit to apply)."""
        with self._own_changes():
            for layer in (self.points, self.shapes):
                if layer is not None and "object_id" in layer.features and len(layer.data):
                    keep = np.asarray(layer.features["object_id"]) != object_id
                    if not keep.all():
                        layer.selected_data = set(np.nonzero(~keep)[0].tolist())
                        layer.remove_selected()
            if self.masks is not None:
                data = self.masks.data
                data[data == object_id] = 0
                self.masks.refresh()

    def _own_changes(self) -> _Writing:
        return _Writing(self)


class _Writing:
    """``with``: layer events raised by the controller itself are not user edits."""

    def __init__(self, controller: PromptController) -> None:
        self.controller = controller
        self.before = False

    def __enter__(self) -> None:
        self.before = self.controller._writing
        self.controller._writing = True

    def __exit__(self, *exc_info: object) -> None:
        self.controller._writing = self.before


def _hex(rgba: np.ndarray) -> str:
    r, g, b = (int(round(float(v) * 255)) for v in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
