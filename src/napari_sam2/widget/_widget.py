"""The SAM 2 tracking dock widget: a composition of Qt-free controllers and thin views.

- :class:`~napari_sam2.widget.prompt_controller.PromptController` owns the prompt layers, the
  object being prompted and the click polarity (view: :mod:`napari_sam2.widget.prompting`);
- :class:`~napari_sam2.widget.propagation.PropagationController` owns the tracking session,
  the queue of jobs, run progress and errors (view: :mod:`napari_sam2.widget.propagate_view`);
  its jobs run in napari workers (:mod:`napari_sam2.widget.workers`), which compute and yield,
  while state changes on the GUI thread;
- :class:`~napari_sam2.widget.model_controller.ModelController` owns the model choice, its
  download and loading (view: :mod:`napari_sam2.widget.model_view`); exports are
  :mod:`napari_sam2.widget.label_export`;
- :class:`~napari_sam2.widget.track_all_controller.TrackAllController` owns automatic
  tracking: segment everything on a frame, and Track all (view:
  :mod:`napari_sam2.widget.track_all_view`); its runs end in a Tracks layer of the lineage.

This module builds the panels, keeps the image / axis choices and the viewer position, and
wires the parts together. Its public methods are those scripts and tests use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes, Tracks
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QVBoxLayout, QWidget

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget import layers as L
from napari_sam2.widget.image_axes import AxesController
from napari_sam2.widget.label_export import export_results
from napari_sam2.widget.measurements_controller import MeasureInput, MeasurementsController
from napari_sam2.widget.measurements_view import MeasurementsView
from napari_sam2.widget.model_controller import ModelController
from napari_sam2.widget.model_view import ModelView
from napari_sam2.widget.panels import (
    ExportPanel,
    ImagePanel,
    MeasurementsPanel,
    ModelPanel,
    PromptsPanel,
    PropagatePanel,
    TrackAllPanel,
)
from napari_sam2.widget.prompt_controller import PromptController
from napari_sam2.widget.prompting import PromptsView
from napari_sam2.widget.propagate_view import PropagateView, notify_failure
from napari_sam2.widget.propagation import PropagationController, RunSettings, SessionSpec
from napari_sam2.widget.session import TrackingSession
from napari_sam2.widget.track_all_controller import (
    AutoTarget,
    TrackAllController,
    TrackAllOutcome,
    tracks_for_layer,
)
from napari_sam2.widget.track_all_view import TrackAllView
from napari_sam2.widget.workers import NEW_LAYER, QtJobRunner

NONE = "none"

TrackerFactory = Callable[..., Any]
"""``factory(frames, contrast_limits=..., fill_hole_area=...) -> tracker``."""


class SAM2Widget(QWidget):
    """Dock widget: choose the image, prompt objects, propagate, correct and export.

    Keyboard shortcuts on the points layer: ``n`` starts the next object, ``t`` toggles
    positive / negative clicks (and flips the selected points).
    """

    idle = Signal()
    """Emitted when no worker runs and none is waiting (prompts applied, runs finished)."""
    worker_started = Signal(object)
    """Emitted with each worker just before it starts."""
    progress_changed = Signal(str)
    """Emitted with each new progress line of a propagation."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._tracker_factory: TrackerFactory | None = None
        self._closed = False
        self._docked = False
        self.axes = AxesController(napari_viewer.dims)
        self.prompts = PromptController(output=self._output_layer, tracked_ids=self._tracked_ids)
        self.runs = PropagationController(
            QtJobRunner(), prepare=self._prepare_job, make_tracker=self._make_tracker
        )
        self.measurements = MeasurementsController()
        self.auto = TrackAllController(
            QtJobRunner(),
            prepare=self._prepare_auto,
            make_tracker=self._make_tracker,
            blocked=self._auto_blocked,
        )
        self._propagating = False
        self._auto_output: Labels | None = None
        """The Labels layer the running (or last) Segment all / Track all job writes."""
        self._auto_plan: AxisPlan | None = None
        self._build_ui()
        self._connect_controllers()
        self._connect_viewer()
        self._refresh_layer_choices()
        self.destroyed.connect(self._on_destroyed_callback())

    def _on_destroyed_callback(self) -> Any:
        """The last resort when the widget is deleted without closing: stop the work and the
        views (the callback holds no reference to the deleted widget)."""
        runs, auto = self.runs, self.auto
        views = (
            self._prompts_view,
            self._propagate_view,
            self._measurements_view,
            self._track_all_view,
        )

        def on_destroyed(*args: Any) -> None:
            runs.close()
            auto.close()
            for view in views:
                view.disconnect()

        return on_destroyed

    # ======================================================================================
    # UI
    # ======================================================================================

    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        image, model, prompts = ImagePanel(), ModelPanel(), PromptsPanel()
        run, export = PropagatePanel(), ExportPanel()
        measure, auto = MeasurementsPanel(), TrackAllPanel()
        for panel in (image, model, prompts, run, auto, measure, export):
            root.addWidget(panel)
        root.addStretch(1)

        # The panels' controls are the widget's own (scripts and tests use them by name).
        self.image_combo = image.image_combo
        self.axis_combo = image.axis_combo
        self.channel_axis_combo = image.channel_axis_combo
        self.channel_combo = image.channel_combo
        self.axes_info = image.axes_info
        self.window_combo = image.window_combo
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
        self.progress_label = run.progress_label
        self.progress_bar = run.progress_bar
        self.status_label = run.status_label
        self.timeline = run.timeline
        self.export_tiff_button = export.export_tiff_button
        self.export_ctc_button = export.export_ctc_button
        self.export_csv_button = export.export_csv_button
        self.measure_button = measure.measure_button
        self.measurements_table = measure.table
        self.track_all_panel = auto
        self.segment_all_button = auto.segment_button
        self.track_all_button = auto.track_button
        self.track_all_cancel_button = auto.cancel_button
        self.timeline.color_of = lambda obj: tuple(L.color_of(obj, self._output_layer()))

        self._prompts_view = PromptsView(prompts, self.prompts)
        self._propagate_view = PropagateView(run, self.runs)
        self.model_view = ModelView(model, parent=self)
        self._measurements_view = MeasurementsView(measure, self.measurements, self.go_to_frame)
        self._track_all_view = TrackAllView(auto, self.auto)

        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.axis_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.channel_axis_combo.currentIndexChanged.connect(self._on_channel_axis_changed)
        self.channel_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.window_combo.currentIndexChanged.connect(self._on_window_chosen)
        self.new_prompts_button.clicked.connect(self.new_prompt_layers)
        self.remove_object_button.clicked.connect(lambda: self.remove_object())
        self.propagate_button.clicked.connect(lambda: self.propagate())
        self.cancel_button.clicked.connect(self.cancel)
        self.measure_button.clicked.connect(lambda: self.measure())
        self.timeline.frame_clicked.connect(self.go_to_frame)
        self.export_tiff_button.clicked.connect(lambda: self._export_dialog("tiff"))
        self.export_ctc_button.clicked.connect(lambda: self._export_dialog("ctc"))
        self.export_csv_button.clicked.connect(lambda: self._export_dialog("csv"))
        for combo in (self.points_combo, self.shapes_combo, self.masks_combo):
            combo.currentIndexChanged.connect(self._on_prompt_layers_changed)

    def _connect_controllers(self) -> None:
        self.prompts.edited.connect(self.apply_prompts)
        self.runs.results_changed.connect(self._on_results_changed)
        self.runs.idle.connect(self.idle.emit)
        self.runs.started.connect(self.worker_started.emit)
        self.runs.progress_changed.connect(
            lambda text, done, total: self.progress_changed.emit(text)
        )
        self.runs.status_changed.connect(self._on_status_changed)
        self.runs.running_changed.connect(self._on_running_changed)
        self.auto.labels_changed.connect(self._on_auto_labels_changed)
        self.auto.finished.connect(self._show_tracks)
        self.auto.idle.connect(self._on_auto_idle)
        self.auto.started.connect(self.worker_started.emit)
        self.auto.progress_changed.connect(
            lambda text, done, total: self.progress_changed.emit(text)
        )

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

    @staticmethod
    def _show_choices(combo: QComboBox, choices: list[tuple[str, Any]]) -> None:
        """Fill ``combo`` with (text, value) choices, the first one chosen (no signal)."""
        combo.blockSignals(True)
        combo.clear()
        for text, value in choices:
            combo.addItem(text, value)
        combo.blockSignals(False)

    def _sync_axes(self) -> None:
        """Hand the Image panel's choices to the axes controller."""
        self.axes.image = self.image_layer
        self.axes.frame_axis = self.axis_combo.currentData()
        self.axes.channel_axis = self.channel_axis_combo.currentData()
        self.axes.channel = self.channel_combo.currentData()

    def _on_image_changed(self, *args: Any) -> None:
        self.axes.image = image = self.image_layer
        self.window_combo.blockSignals(True)  # another image: nothing chosen for it yet
        self.window_combo.setCurrentIndex(0)
        self.window_combo.blockSignals(False)
        self._show_choices(self.axis_combo, self.axes.stack_axes())
        self._show_choices(self.channel_axis_combo, self.axes.channel_axes())
        self.channel_axis_combo.setEnabled(image is not None and not image.rgb)
        self._on_channel_axis_changed()

    def _on_channel_axis_changed(self, *args: Any) -> None:
        self._sync_axes()
        self._show_choices(self.channel_combo, self.axes.channels())
        self.channel_combo.setEnabled(self.channel_combo.count() > 1)
        self._on_axes_changed()

    def _on_axes_changed(self, *args: Any) -> None:
        self._sync_axes()
        self.axes_info.setText(self.axes.summary())
        plan = self.axes.safe_plan()
        if plan is not None:
            self.timeline.set_data([], np.zeros((0, plan.num_frames)))
            self._update_timeline()

    def plan(self) -> AxisPlan | None:
        """How the chosen image maps to the tracked stack (None without an image).

        Axes other than the frame, channel, Y and X axes are fixed at the viewer's position.
        Raises ValueError when the image has no axis to track along.
        """
        self._sync_axes()
        return self.axes.plan()

    def _safe_plan(self) -> AxisPlan | None:
        self._sync_axes()
        return self.axes.safe_plan()

    def current_frame(self) -> int | None:
        """The frame the viewer shows along the tracked axis (None without an image)."""
        self._sync_axes()
        return self.axes.current_frame()

    def _on_dims_changed(self, event: Any = None) -> None:
        self.timeline.set_current_frame(self.current_frame())

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer to ``frame`` along the tracked axis."""
        self._sync_axes()
        self.axes.go_to_frame(frame)

    def _update_timeline(self) -> None:
        session = self.session
        if session is None:
            return
        ids, states = session.timeline()
        self.timeline.set_data(ids, states, {k: session.prompted_frames(k) for k in ids})
        self.timeline.set_current_frame(self.current_frame())

    # ======================================================================================
    # prompts
    # ======================================================================================

    def new_prompt_layers(self) -> tuple[Points, Shapes, Labels]:
        """Add a Points layer (clicks), a Shapes layer (boxes) and a Labels layer (mask
        prompts) with the image's geometry and select them as prompt layers; the points layer
        is left active, in add mode."""
        image, plan = self.image_layer, self.plan()
        if image is None or plan is None:
            raise ValueError("add an image layer first")
        points, shapes, masks = self.prompts.create_layers(image, plan, self.prompts.object_id)
        for layer in (masks, shapes, points):
            self.viewer.layers.append(layer)
        self.points_combo.setCurrentIndex(self.points_combo.findData(points))
        self.shapes_combo.setCurrentIndex(self.shapes_combo.findData(shapes))
        self.masks_combo.setCurrentIndex(self.masks_combo.findData(masks))
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points, shapes, masks

    def _on_prompt_layers_changed(self, *args: Any) -> None:
        self.prompts.set_layers(self.points_layer, self.shapes_layer, self.masks_layer)

    @property
    def positive(self) -> bool:
        """New clicks are positive (else negative)."""
        return self.prompts.positive

    def _set_polarity(self, positive: bool) -> None:
        self.prompts.set_positive(positive)

    def toggle_polarity(self) -> None:
        """Switch between positive and negative clicks; flips the selected points too."""
        self.prompts.toggle_polarity()

    def next_object(self) -> int:
        """Start a new object: one above every object id in use. Returns it."""
        return self.prompts.next_object()

    def _tracked_ids(self) -> list[int]:
        return self.session.object_ids() if self.session is not None else []

    def remove_object(self, object_id: int | None = None) -> None:
        """Remove an object: its prompts, its tracking and its labels (other labels stay)."""
        obj = self.prompts.object_id if object_id is None else int(object_id)
        if self.busy:
            show_error("SAM 2: wait for the running work to finish (or cancel it) first")
            return
        self.prompts.remove_object_prompts(obj)
        if self.session is not None:
            self.session.remove_object(obj)
        self._on_results_changed()

    # ======================================================================================
    # work: the session, prompts and runs
    # ======================================================================================

    @property
    def session(self) -> TrackingSession | None:
        """The tracking session (None before the first prompt, and after changing image)."""
        return self.runs.session

    @property
    def worker(self) -> Any:
        """The napari worker running now (None when idle)."""
        return self.runs.worker or self.auto.worker

    @property
    def busy(self) -> bool:
        """Work runs or waits."""
        return self.runs.busy or self.auto.busy

    @property
    def last_error(self) -> BaseException | None:
        """The error of the last job that failed (None after a job succeeded)."""
        return self.runs.last_error

    def apply_prompts(self) -> None:
        """Send what changed in the prompt layers to the tracker (in a worker) and show the
        prompted frames' masks at once."""
        self.runs.apply_prompts()

    def propagate(
        self,
        direction: str | None = None,
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> None:
        """Propagate in a worker (arguments default to the widget's settings)."""
        if self.auto.busy:
            show_error("SAM 2: wait for Track all to finish (or cancel it) first")
            return
        direction = direction or self.direction_combo.currentText()
        if start_frame is None and self.start_spin.value() >= 0:
            start_frame = self.start_spin.value()
        if max_frames is None and self.frames_spin.value() > 0:
            max_frames = self.frames_spin.value()
        self.runs.propagate(RunSettings(direction, start_frame, max_frames))

    def cancel(self) -> None:
        """Stop the running propagation after the frame in progress; what is done stays."""
        self.runs.cancel()

    def _reset_session(self) -> None:
        self.runs.reset_session()

    # --- the model part (delegated to the model view and its controller) -----------------

    @property
    def model_controller(self) -> ModelController:
        """The state of the model part (choice, loaded model, failures)."""
        return self.model_view.controller

    def use_model(self, model: Any, name: str = "custom model") -> None:
        """Use an already built model, or a ``SAM2Config`` whose weights are given as the
        checkpoint file, instead of an official one (it joins the model list, chosen)."""
        self.model_view.use_model(model, name)

    def use_tracker_factory(self, factory: TrackerFactory | None) -> None:
        """Build trackers with ``factory(frames, contrast_limits=..., fill_hole_area=...)``
        instead of the model (for tests and custom engines)."""
        self._tracker_factory = factory
        self._reset_session()

    def download_weights(self) -> Any:
        """Download the chosen official checkpoint in a worker, with progress."""
        return self.model_view.download()

    def _update_model_status(self, *args: Any) -> None:
        self.model_view.refresh()

    def _load_model(self, model_key: tuple) -> Any:
        """Worker thread: the model for the session key, kept in memory between sessions.
        Raises ``ModelError`` with a short message."""
        return self.model_view.load_in_worker(model_key)

    def _model_choice_key(self) -> tuple[str, str, str]:
        """The model part's key of the chosen model: (file or name, device, list entry)."""
        self._update_model_status()  # take over what scripts set in the controls directly
        return self.model_controller.key()

    def _prepare_job(self) -> tuple[SessionSpec, Any]:
        """GUI thread, as a job starts: what the session is built from and the prompts."""
        spec = self._session_spec()
        image = self.image_layer
        return spec, self.prompts.read(spec.plan, image)

    def _session_spec(self) -> SessionSpec:
        """GUI thread: what a tracker is built from and the output labels it writes (the
        output layer is made if "new layer" is chosen). Raises ValueError for the user."""
        image, plan = self.image_layer, self.plan()
        if image is None or plan is None:
            raise ValueError("choose an image layer to track in")
        output = self._ensure_output_layer(image, plan)
        channel = self.channel_combo.currentData()
        model_key = self._model_choice_key()
        limits = None
        if not image.rgb and channel != "rgb":
            limits = tuple(float(v) for v in image.contrast_limits)
        spec = SessionSpec(
            # the limits are part of the key: the model sees the image as the layer shows it,
            # also after the contrast (or window) changed
            key=(
                id(image),
                plan,
                channel,
                model_key,
                id(output.data),
                id(self._tracker_factory),
                limits,
            ),
            data=L.image_data(image),
            plan=plan,
            channel=channel,
            contrast_limits=limits,
            model_key=model_key,
            labels=plan.labels_view(output.data),
        )
        return spec

    def _make_tracker(self, spec: SessionSpec, frames: Any, **kwargs: Any) -> Any:
        """Worker thread: a tracker over the lazy (T, H, W[, C]) view of the image."""
        if self._tracker_factory is not None:
            return self._tracker_factory(frames, **kwargs)
        from napari_sam2.tracking.tracker import Tracker

        model = self._load_model(spec.model_key)
        # the precision the session was keyed with (auto: bfloat16 autocast on GPUs and on
        # CPUs where it measures faster, float32 elsewhere), as the model state line says
        controller = self.model_controller
        precision = controller.precision_of_key(tuple(spec.model_key))
        kwargs["dtype"] = controller.compute_dtype(next(model.parameters()), precision)
        return Tracker(model, frames, **kwargs)

    def _ensure_output_layer(self, image: Image, plan: AxisPlan) -> Labels:
        layer = self._output_layer()
        expected = plan.labels_shape(L.image_data(image).shape)
        if layer is None:
            layer = L.new_labels_layer(image, plan, L.OUTPUT_NAME)
            self._add_layer_keeping_focus(layer)
            self.output_combo.setCurrentIndex(self.output_combo.findData(layer))
            self.prompts.apply_defaults()
            self.prompts.style()
        elif tuple(layer.data.shape) != tuple(expected):
            raise ValueError(
                f"the output layer {layer.name!r} has shape {tuple(layer.data.shape)} but the "
                f"image needs {tuple(expected)}: choose '{NEW_LAYER}' as output"
            )
        return layer

    def _add_layer_keeping_focus(self, layer: Any) -> None:
        """Add ``layer`` without taking the focus from the layer the user works in (napari
        selects a new layer; the next click would then paint or pan instead of prompting)."""
        selection = self.viewer.layers.selection
        active = selection.active
        mode = getattr(active, "mode", None)
        self.viewer.layers.append(layer)
        if active is not None:
            selection.active = active
            if mode is not None and str(active.mode) != str(mode):
                active.mode = mode

    def _on_results_changed(self) -> None:
        output = self._output_layer()
        if output is not None:
            output.refresh()
        self._update_timeline()

    # --- automatic tracking (Segment all, Track all) -----------------------------------------

    def segment_all(self) -> bool:
        """Segment everything on the viewer's frame (in a worker): each object not labelled
        there yet becomes a new label of the output layer. Returns whether it started."""
        return self.auto.segment_all()

    def track_all(self) -> bool:
        """Track every object from the viewer's frame to the end (in a worker): seeds are the
        output layer's labels on that frame, or everything SAM 2 finds there; the labels fill
        frame by frame and a Tracks layer of the lineage is added at the end."""
        return self.auto.track_all()

    def cancel_track_all(self) -> None:
        """Stop Segment all / Track all after the frame in progress; what is done stays."""
        self.auto.cancel()

    def use_segmenter(self, segmenter: Callable[[int], Any] | None) -> None:
        """Find "everything" on a frame with ``segmenter(frame_index) -> (H, W) masks``
        instead of SAM 2's segment-everything (tests, other detectors); None: SAM 2's."""
        self.auto.segmenter = segmenter

    @property
    def tracks_layer(self) -> Tracks | None:
        """The Tracks layer of the output labels (None before a Track all run)."""
        output = self._output_layer()
        if output is None:
            return None
        name = f"{output.name} tracks"
        return next(
            (x for x in self._layers_of(Tracks) if x.name == name),
            None,
        )

    def _auto_blocked(self) -> str:
        if self.runs.busy:
            return "wait for the running propagation to finish (or cancel it) first"
        return ""

    def _prepare_auto(self) -> AutoTarget:
        spec = self._session_spec()
        frame = self.current_frame()
        if frame is None:
            raise ValueError("choose an image layer to track in")
        self._auto_output = self._output_layer()  # the layer the job writes, chosen now
        self._auto_plan = spec.plan
        return AutoTarget(spec, int(frame))

    def _on_auto_labels_changed(self, frame: int) -> None:
        output = self._auto_output
        if output is not None:
            output.refresh()

    def _on_auto_idle(self) -> None:
        if not self.runs.busy:
            self.idle.emit()

    def _show_tracks(self, outcome: TrackAllOutcome) -> None:
        """Add (or update) the Tracks layer of the output labels with the run's lineage."""
        output, plan = self._auto_output, self._auto_plan
        if output is None or plan is None or outcome.tracks is None:
            return
        tracks = outcome.tracks
        data = tracks_for_layer(tracks.data, plan)
        name = f"{output.name} tracks"
        layer = next((x for x in self._layers_of(Tracks) if x.name == name), None)
        if layer is not None and layer.ndim != output.ndim:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            layer = Tracks(
                data,
                graph=tracks.graph,
                properties=tracks.properties or None,
                name=name,
                scale=output.scale,
                translate=output.translate,
                **L.axes_metadata(output),
            )
            self._add_layer_keeping_focus(layer)
        else:
            layer.data = data
            if tracks.properties:
                layer.properties = tracks.properties
            layer.graph = tracks.graph
            layer.scale = output.scale
            layer.translate = output.translate

    # --- measurements ---------------------------------------------------------------------

    def measure(self) -> Any:
        """Measure the output labels now and show them in the Measurements table (volumes and
        longest diameters of a volume, areas per frame of a time-lapse); returns the
        :class:`~napari_sam2.outputs.measurements.MeasurementTable` (None: nothing to
        measure)."""
        try:
            return self.measurements.measure(self._measure_input())
        except (ValueError, TypeError) as exc:
            self.measurements.clear(f"cannot measure: {exc}")
            return None

    def _measure_input(self) -> MeasureInput | None:
        """The output labels as (N, H, W) with the pixel size and units of the tracked axis,
        Y and X, and the grey image they were tracked in (for the mean intensity)."""
        output, image, plan = self._output_layer(), self.image_layer, self._safe_plan()
        if output is None or image is None or plan is None:
            return None
        if tuple(output.data.shape) != tuple(plan.labels_shape(L.image_data(image).shape)):
            return None
        axes = (plan.frame_axis, plan.y_axis, plan.x_axis)
        layer_units = getattr(output, "units", None)
        units = tuple(layer_units[a] if layer_units is not None else None for a in axes)
        return MeasureInput(
            labels=plan.labels_view(output.data),
            scale=tuple(float(output.scale[a]) for a in axes),  # type: ignore[arg-type]
            units=units,  # type: ignore[arg-type]
            axis_label=self._axis_names_of(output)[plan.frame_axis],
            image=self._grey_view(image, plan),
        )

    def _grey_view(self, image: Image, plan: AxisPlan) -> Any:
        """The lazy (T, H, W) view of the chosen channel of ``image`` (None for colour)."""
        from napari_sam2.tracking.frames import stack_view

        channel = self.channel_combo.currentData()
        if image.rgb or channel == "rgb":
            return None
        fixed = dict(plan.fixed)
        if plan.channel_axis is not None:
            fixed[plan.channel_axis] = int(channel or 0)
        return stack_view(L.image_data(image), plan.frame_axis, None, fixed)

    # --- intensity windows ------------------------------------------------------------------

    def set_window(self, window: Any) -> tuple[float, float] | None:
        """Set the image layer's contrast limits to a window: a CT preset name (``"lung"``),
        ``(width, level)`` or ``"mr"`` (percentiles of the non-zero voxels of the tracked
        stack). The model sees the image as the layer shows it. Returns the limits."""
        from napari_sam2.tracking.intensity import MR_WINDOW, mr_limits, parse_window
        from napari_sam2.tracking.intensity import window_limits as limits_of

        image, plan = self.image_layer, self._safe_plan()
        if image is None or window is None:
            return None
        if parse_window(window) == MR_WINDOW:
            grey = self._grey_view(image, plan) if plan is not None else None
            if grey is None:
                raise ValueError("the mr window needs a grey image with an axis to track along")
            limits = mr_limits(grey)
        else:
            limits = limits_of(window)
        if limits[1] <= limits[0]:  # an empty or constant image: napari needs lo < hi
            limits = (limits[0], limits[0] + 1.0)
        image.contrast_limits = limits
        return limits

    def _on_window_chosen(self, *args: Any) -> None:
        try:
            self.set_window(self.window_combo.currentData())
        except ValueError as exc:
            notify_failure(f"SAM 2: {exc}", exc)

    def _on_running_changed(self, running: bool, propagating: bool) -> None:
        # measure once each propagation has ended (finished or cancelled), not after prompts
        if running and propagating:
            self._propagating = True
        elif not running and self._propagating:
            self._propagating = False
            self.measure()

    def _on_status_changed(self, text: str, detail: str, error: bool) -> None:
        if not text:
            self._dismiss_error_toasts()

    def _dismiss_error_toasts(self) -> None:
        """Close this plugin's error pop-ups once later work succeeded: they are out of date.
        (napari has no public way to close a notification; its toasts are plain widgets.)"""
        try:
            from napari._qt.dialogs.qt_notification import NapariQtNotification
        except ImportError:
            return
        for toast in self.window().findChildren(NapariQtNotification):
            message = getattr(toast, "message", None)
            text = message.text() if hasattr(message, "text") else ""
            if text.startswith("SAM 2:") and "failed" in text:
                toast.close()

    # ======================================================================================
    # closing
    # ======================================================================================

    def shutdown(self) -> None:
        """Stop the work (the running job ends after its frame), close the tracker and stop
        listening to the viewer. Called when the widget closes; harmless twice."""
        if self._closed:
            return
        self._closed = True
        self.runs.close()  # a closed controller tells nobody anything more
        self.auto.close()
        self._track_all_view.disconnect()
        self.prompts.edited.disconnect(self.apply_prompts)
        self._prompts_view.disconnect()
        self._propagate_view.disconnect()
        self._measurements_view.disconnect()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered):
            emitter.disconnect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.disconnect(self._on_dims_changed)
        self.viewer.dims.events.axis_labels.disconnect(self._on_image_changed)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        # napari removes a dock widget by taking its widget out of the window (setParent(None));
        # no close event comes, so a widget that had a parent and lost it is shut down.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)

    # --- export ---------------------------------------------------------------------------

    def export(self, kind: str, path: str | os.PathLike) -> Any:
        """Write the output labels as ``tiff`` (with the layer's axes, scale and units) or
        ``ctc`` (a folder), or the presence ``csv``."""
        output = self._output_layer()
        return export_results(
            kind,
            path,
            output,
            self._safe_plan(),
            self.session,
            axis_labels=self._axis_names_of(output) if output is not None else None,
        )

    def _axis_names_of(self, layer: Any) -> list[str]:
        """The layer's axis labels; where it has napari's numbered defaults, the viewer's
        labels for its axes (a user may have named the axes in the viewer only)."""
        names = [str(n) for n in getattr(layer, "axis_labels", ())]
        if len(names) == layer.ndim and not all(n.lstrip("-").isdigit() for n in names):
            return names
        viewer_names = [str(n) for n in self.viewer.dims.axis_labels][-layer.ndim :]
        return viewer_names if len(viewer_names) == layer.ndim else names

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
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if len(reason) > 80:
                reason = reason[:77] + "..."  # the whole message is behind "View Traceback"
            notify_failure(f"SAM 2: export failed: {reason}", exc)
