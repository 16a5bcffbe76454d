"""The widget's work queue, without Qt: applying prompts, propagating, progress and errors.

:class:`PropagationController` owns the :class:`~napari_sam2.widget.session.TrackingSession`,
the queue of jobs (``"prompts"``: send the prompt layers' changes to the tracker;
``"propagate"``: that, then a run), the run's progress and what the user is told when work
fails. It runs one job at a time through a :class:`JobRunner`: in the widget a napari worker
thread (:class:`~napari_sam2.widget.workers.QtJobRunner`), in tests :class:`InlineRunner`.

Threads: a job's generator (:meth:`PropagationController.work`) runs in the worker; it calls
the tracker and yields values. Everything the widget shows (the session, labels, progress,
status) changes in the callbacks, which the runner calls on the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from psygnal import Signal

from napari_sam2.tracking.layer_prompts import AxisPlan, PromptSet
from napari_sam2.widget.progress import PropagationProgress
from napari_sam2.widget.session import TrackingSession

__all__ = [
    "FILL_HOLE_AREA",
    "InlineRunner",
    "JobRunner",
    "PropagationController",
    "RunSettings",
    "SessionSpec",
    "failure_message",
]

FILL_HOLE_AREA = 8
"""Decision D4: the widget fills small holes in masks on every device."""

SHORT_LIMIT = 120
"""Characters of a failure's first line: what a notification shows without cutting it."""

_HINTS = {
    "WeightsError": "check the model choice and the network, or give a local checkpoint",
    "OutOfMemoryError": "choose a smaller model or the CPU",
    "RuntimeError": "check the prompts (every object needs one) and the device",
    "ValueError": "check the image, axes and prompts",
}


@dataclass(frozen=True)
class SessionSpec:
    """What a tracking session is built from, read from the widget on the GUI thread.

    ``key`` changes whenever a new session is needed (another image, plan, channel, model or
    output layer); ``labels`` is the (T, H, W) view of the output layer's data that results
    are written into.
    """

    key: tuple
    data: Any
    plan: AxisPlan
    channel: Any
    contrast_limits: tuple[float, float] | None
    model_key: tuple
    labels: Any

    def frames(self) -> Any:
        """The lazy (T, H, W[, C]) stack the tracker reads."""
        from napari_sam2.tracking.frames import stack_view

        plan = self.plan
        fixed = dict(plan.fixed)
        channel_axis = None
        if plan.channel_axis is not None:
            if self.channel == "rgb":
                channel_axis = plan.channel_axis
            else:
                fixed[plan.channel_axis] = int(self.channel or 0)
        return stack_view(self.data, plan.frame_axis, channel_axis, fixed)


@dataclass(frozen=True)
class RunSettings:
    """One propagation: ``direction`` (forward / reverse / both), ``start_frame`` (None: the
    session chooses) and ``max_frames`` after the start (None: to the end)."""

    direction: str = "forward"
    start_frame: int | None = None
    max_frames: int | None = None


@dataclass
class _Job:
    kind: str  # "prompts" or "propagate"
    settings: RunSettings | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class JobHandle(Protocol):
    """A job made by a :class:`JobRunner` (a napari worker satisfies it)."""

    @property
    def abort_requested(self) -> bool: ...

    def start(self) -> None: ...

    def quit(self) -> None: ...


class JobRunner(Protocol):
    """Makes jobs that run a generator off the GUI thread and call back on the GUI thread."""

    def create(
        self,
        work: Callable[[], Iterator[Any]],
        on_yield: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_finish: Callable[[], None],
    ) -> JobHandle: ...


class InlineJob:
    """A job that runs in the calling thread when started (see :class:`InlineRunner`)."""

    def __init__(self, work, on_yield, on_error, on_finish) -> None:
        self.abort_requested = False
        self._parts = (work, on_yield, on_error, on_finish)

    def start(self) -> None:
        work, on_yield, on_error, on_finish = self._parts
        try:
            for item in work():
                on_yield(item)
        except Exception as exc:  # noqa: BLE001 - handed on, as a worker's errored signal does
            on_error(exc)
        on_finish()

    def quit(self) -> None:
        self.abort_requested = True


class InlineRunner:
    """Runs each job to its end as soon as it starts, in the calling thread (tests, scripts)."""

    def create(self, work, on_yield, on_error, on_finish) -> InlineJob:
        return InlineJob(work, on_yield, on_error, on_finish)


def failure_message(kind: str, exc: BaseException) -> tuple[str, str]:
    """What the user is told when a job fails: a short line, then the whole story.

    The line names what failed and what to do (it fits a notification); the detail holds the
    exception's own message, which may be long (paths, shapes). Errors that carry their own
    short ``summary`` and long ``detail`` (the model part's ``ModelError``) are told with them.
    """
    wrapped = exc.__cause__ is not None and type(exc).__name__ == "WorkError"
    cause = exc.__cause__ if wrapped else exc
    what = "propagation" if kind == "propagate" else "applying the prompts"
    summary = getattr(cause, "summary", None)
    if summary:
        short = _clip(f"SAM 2: {what} failed: {summary}")
        detail = str(getattr(cause, "detail", None) or cause)
    else:
        name = type(cause).__name__
        short = _clip(f"SAM 2: {what} failed ({name}): {_HINTS.get(name, _HINTS['ValueError'])}")
        detail = f"{what} failed: {name}: {cause}"
    return short, detail + "\nLabels already written are kept."


def _clip(line: str, limit: int = SHORT_LIMIT) -> str:
    line = " ".join(line.split())  # one line
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class PropagationController:
    """The session, the job queue, the run's progress and the status the user sees.

    Parameters
    ----------
    runner
        Runs each job's generator (see :class:`JobRunner`).
    prepare
        Called on the GUI thread when a job starts: the :class:`SessionSpec` and the prompts in
        the prompt layers. Raises ValueError with a message for the user when the choices do
        not make a session (no image, wrong layer shapes).
    make_tracker
        Called in the worker as ``make_tracker(spec, frames, contrast_limits=...,
        fill_hole_area=...)``: a tracker over ``frames`` (the spec's lazy stack).
    """

    started = Signal(object)
    """A job started: its handle (the napari worker in the widget)."""
    idle = Signal()
    """No job runs and none waits."""
    running_changed = Signal(bool, bool)
    """(a job runs, it is a propagation)."""
    results_changed = Signal()
    """Labels and the timeline changed."""
    progress_changed = Signal(str, int, int)
    """(progress line, frames done, frames in the leg)."""
    status_changed = Signal(str, str, bool)
    """(short status, detail, is an error); ("", "", False) clears it."""
    failed = Signal(str, str, object)
    """(short message, detail, exception): one emission per failed job."""
    cancelled = Signal()

    def __init__(
        self,
        runner: JobRunner,
        prepare: Callable[[], tuple[SessionSpec, PromptSet]],
        make_tracker: Callable[..., Any],
    ) -> None:
        self.runner = runner
        self.prepare = prepare
        self.make_tracker = make_tracker
        self.session: TrackingSession | None = None
        self.session_key: tuple | None = None
        self.worker: JobHandle | None = None
        self.queue: list[_Job] = []
        self.progress = PropagationProgress()
        self.last_error: BaseException | None = None
        self.closed = False
        self._job: _Job | None = None
        self._to_close: list[TrackingSession] = []

    # --- user actions ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A job runs or waits."""
        return self.worker is not None or bool(self.queue)

    def apply_prompts(self) -> None:
        """Queue sending the prompt layers' changes (one such job waits at most)."""
        if not any(job.kind == "prompts" for job in self.queue):
            self.queue.append(_Job("prompts"))
        self.start_next()

    def propagate(self, settings: RunSettings) -> None:
        """Queue a run (after any waiting job)."""
        self.queue.append(_Job("propagate", settings))
        self.start_next()

    def cancel(self) -> None:
        """Stop the running propagation after the frame in progress; what is done stays."""
        self.queue = [job for job in self.queue if job.kind != "propagate"]
        if self._job is not None and self._job.kind == "propagate":
            # the job sees it after its frame and ends by itself; quitting the worker instead
            # would leave the job's generator suspended, and with it the tracker's
            # propagation guard held: every later propagation or prompt would be refused
            self._job.stop.set()

    def reset_session(self) -> None:
        """Forget the session (the next job builds a new one) and close its tracker (once the
        running job has ended, if one runs: it may be using it)."""
        session, self.session, self.session_key = self.session, None, None
        if session is None:
            return
        if self._job is not None:
            self._to_close.append(session)
        else:
            session.close()

    def close(self) -> None:
        """Stop everything: no more jobs, the running one stops after its frame, and the
        tracker is closed (once the running job has ended, so it never runs on a closed one).
        A closed controller emits nothing more: the views it spoke to may be deleted."""
        self.closed = True
        self.queue.clear()
        if self._job is not None:
            self._job.stop.set()
            if self.worker is not None:
                self.worker.quit()
        self.reset_session()

    # --- running jobs ------------------------------------------------------------------------

    def start_next(self) -> None:
        """Start the next queued job unless one runs (GUI thread)."""
        if self.worker is not None or self.closed:
            return
        if not self.queue:
            self.idle.emit()
            return
        job = self.queue.pop(0)
        try:
            spec, prompts = self.prepare()
        except ValueError as exc:
            self.queue.clear()
            self._fail(job, exc)
            self.idle.emit()
            return
        if job.kind == "prompts" and self.session is None and not prompts.keys():
            self.start_next()  # nothing to do: no session and no prompts
            return
        if spec.key != self.session_key:
            self.reset_session()
            self.session_key = spec.key
        if job.kind == "propagate":
            self.progress = PropagationProgress()
        self._job = job
        session = self.session
        worker = self.runner.create(
            lambda: self.work(job, spec, prompts, session),
            lambda item: self._on_yielded(job, item),
            lambda exc: self._on_error(job, exc),
            lambda: self._on_finished(job),
        )
        self.worker = worker
        self.running_changed.emit(True, job.kind == "propagate")
        self.started.emit(worker)  # before it runs, so listeners see all it yields
        worker.start()

    def work(
        self, job: _Job, spec: SessionSpec, prompts: PromptSet, session: TrackingSession | None
    ) -> Iterator[tuple[str, Any]]:
        """A job, in the worker thread: yields ``(what, value)`` for the GUI thread.

        ``("session", s)`` a new session; ``("prompt", result)`` a prompted frame's result;
        ``("cleared", None)`` after the prompts went out; ``("leg", (name, frames))`` a pass
        begins; ``("frame", result)`` one propagated frame.
        """
        if session is None:
            tracker = self.make_tracker(
                spec,
                spec.frames(),
                contrast_limits=spec.contrast_limits,
                fill_hole_area=FILL_HOLE_AREA,
            )
            session = TrackingSession(tracker, spec.labels)
            yield ("session", session)
        for result in session.apply_prompts(prompts):
            yield ("prompt", result)
        yield ("cleared", None)
        if job.kind != "propagate" or job.stop.is_set():
            return
        settings = job.settings or RunSettings()
        for leg in session.legs(settings.direction, settings.start_frame, settings.max_frames):
            yield ("leg", (leg.name, len(leg)))
            for result in session.propagate_leg(leg, should_stop=job.stop.is_set):
                yield ("frame", result)
            if job.stop.is_set():
                return

    def _on_yielded(self, job: _Job, item: tuple[str, Any]) -> None:
        what, value = item
        if what == "session":
            if self.closed or job.failed:
                value.close()
                return
            self.session = value
            return
        if self.closed:
            return
        session = self.session
        if session is None:
            return
        if what == "leg":
            self.progress.start_leg(*value)
            self._emit_progress()
            return
        if what == "cleared":
            session.record_cleared()
        else:
            session.record(value)
            if what == "frame":
                self.progress.frame_done()
                self._emit_progress()
        self.results_changed.emit()

    def _emit_progress(self) -> None:
        p = self.progress
        self.progress_changed.emit(p.text, p.done, p.total)

    def _on_error(self, job: _Job, exc: BaseException) -> None:
        if self.closed:
            job.failed = True
            return
        self._fail(job, exc)
        if job.kind == "prompts" or self.session is None:
            self.reset_session()  # start over cleanly with the next edit
        # What waits was asked for on top of the failed work: it would fail the same way
        # (and tell the user twice). The next edit or run starts afresh.
        self.queue.clear()

    def _fail(self, job: _Job, exc: BaseException) -> None:
        job.failed = True
        self.last_error = exc
        short, detail = failure_message(job.kind, exc)
        if isinstance(exc, ValueError) and type(exc).__name__ == "ValueError":
            short = _clip(f"SAM 2: {exc}")  # the user's own choices: it says what to do
            detail = str(exc)
        self.status_changed.emit(short, detail, True)
        self.failed.emit(short, detail, exc)

    def _on_finished(self, job: _Job) -> None:
        if self._job is job:
            self._job = None
            self.worker = None
        while self._to_close:
            self._to_close.pop().close()
        if self.closed:  # nobody to tell: the views may be gone
            self.reset_session()
            return
        if job.kind == "propagate":
            if job.stop.is_set() and not job.failed:
                self.cancelled.emit()
            elif not job.failed and self.session is not None:
                self.session.propagation_finished()
        if not job.failed:
            self.last_error = None
            self.status_changed.emit("", "", False)
        self.running_changed.emit(False, False)
        self.results_changed.emit()
        self.start_next()
