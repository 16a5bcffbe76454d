"""Running the network from the SAM 2 dock widget: the tracking session and its workers.

Everything that runs the network (the decoder pass after a click, propagation) runs in a napari
``thread_worker`` so the viewer never freezes. Workers run one at a time from a queue: a click
made while one runs is applied right after it. Results are yielded by the worker and written
into the Labels layer in the GUI thread, frame by frame.

A mixin of :class:`~napari_sam2.widget._widget.SAM2Widget`; the session logic itself is Qt-free
in :mod:`napari_sam2.widget.session`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QLineEdit, QPushButton, QSpinBox

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget import layers as L
from napari_sam2.widget.model_choice import TrackerFactory
from napari_sam2.widget.session import TrackingSession

FILL_HOLE_AREA = 8  # decision D4: the widget fills small holes on every device
NEW_LAYER = "new layer"


class WorkError(Exception):
    """An error in a worker (a RuntimeError from the tracker or torch, passed on as is)."""


class WorkersMixin:
    """Session and worker queue of :class:`~napari_sam2.widget._widget.SAM2Widget`."""

    # Provided by the widget.
    viewer: Any
    session: TrackingSession | None
    worker: GeneratorWorker | None
    image_layer: Image | None
    points_layer: Points | None
    shapes_layer: Shapes | None
    masks_layer: Labels | None
    output_combo: QComboBox
    model_combo: QComboBox
    checkpoint_edit: QLineEdit
    device_combo: QComboBox
    channel_combo: QComboBox
    object_spin: QSpinBox
    direction_combo: QComboBox
    start_spin: QSpinBox
    frames_spin: QSpinBox
    propagate_button: QPushButton
    cancel_button: QPushButton
    idle: Any
    worker_started: Any
    _session_key: tuple | None
    _tracker_factory: TrackerFactory | None
    _queue: list[tuple[str, dict]]
    _pbar: progress | None
    # Also: plan(), _output_layer(), _style_prompt_layers(), _update_timeline(), _load_model().

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
            from napari_sam2.tracking.device import autocast_dtype
            from napari_sam2.tracking.tracker import Tracker

            model = self._load_model(spec["model_key"])
            # bfloat16 (or float16) autocast on GPUs, float32 on the CPU
            kwargs["dtype"] = autocast_dtype(next(model.parameters()).device)
            tracker = Tracker(model, frames, **kwargs)
        return TrackingSession(tracker, spec["labels"])

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
