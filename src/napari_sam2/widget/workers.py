"""Running the widget's jobs in napari worker threads.

:class:`QtJobRunner` is the :class:`~napari_sam2.widget.propagation.JobRunner` of the widget:
each job's generator runs in a napari ``thread_worker`` (so the viewer never freezes) and what
it yields, its error and its end reach the
:class:`~napari_sam2.widget.propagation.PropagationController` through Qt signals, on the GUI
thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker

from napari_sam2.widget.propagation import FILL_HOLE_AREA

__all__ = ["FILL_HOLE_AREA", "NEW_LAYER", "QtJobRunner", "WorkError"]

NEW_LAYER = "new layer"
"""The output choice that makes a new Labels layer at the first result."""


class WorkError(Exception):
    """An error in a worker (a RuntimeError from the tracker or torch, passed on as is)."""


class QtJobRunner:
    """Makes napari generator workers for the controller's jobs (not started)."""

    def create(
        self,
        work: Callable[[], Iterator[Any]],
        on_yield: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_finish: Callable[[], None],
    ) -> GeneratorWorker:
        def run() -> Iterator[Any]:
            try:
                yield from work()
            except RuntimeError as exc:
                # superqt takes a RuntimeError from a worker for a deleted Qt object and ends
                # the worker silently (no errored, no finished): hand it on as another type.
                raise WorkError(str(exc)) from exc

        worker = create_worker(run, _ignore_errors=True)
        worker.yielded.connect(on_yield)
        worker.errored.connect(on_error)
        worker.finished.connect(on_finish)
        return worker
