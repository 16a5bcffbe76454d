"""Propagation progress as the widget shows it, without Qt: "frame k of n", speed, time left.

A run is one or two legs (``both`` runs forward, then in reverse). Each leg's frame count comes
from :func:`napari_sam2.tracking.propagation_frames`, the one definition of which frames a
propagation visits, so "of n" always equals the results the tracker yields.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PropagationProgress", "format_duration", "progress_text"]


def format_duration(seconds: float) -> str:
    """``seconds`` rounded for people: "8 s", "2 min 05 s", "1 h 04 min"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(leg: str, done: int, total: int, elapsed: float) -> str:
    """One progress line, e.g. ``"forward: frame 12 of 40 · 1.8 frames/s · 18 s left"``.

    Speed and time left need a finished frame and some elapsed time; before that the line says
    the leg is starting, and at the end it says how long the leg took.
    """
    line = f"{leg}: frame {done} of {total}"
    if done <= 0 or elapsed <= 0:
        return line + " · starting"
    rate = done / elapsed
    speed = f"{rate:.1f} frames/s" if rate >= 0.1 else f"{elapsed / done:.0f} s/frame"
    if done >= total:
        return f"{line} · {speed} · done in {format_duration(elapsed)}"
    return f"{line} · {speed} · {format_duration((total - done) / rate)} left"


class PropagationProgress:
    """Counts the frames of a run, leg by leg, and says where it is.

    Parameters
    ----------
    clock
        Seconds as a float (``time.monotonic``; tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.leg = ""
        self.done = 0
        self.total = 0
        self._started = clock()
        self._elapsed: float | None = None

    def start_leg(self, leg: str, total: int) -> None:
        """A new leg (``"forward"`` or ``"reverse"``) of ``total`` frames begins now."""
        self.leg, self.total, self.done = leg, int(total), 0
        self._started = self._clock()
        self._elapsed = None

    def frame_done(self) -> None:
        """One more frame of the current leg has its result."""
        self.done += 1
        if self.done >= self.total:
            self._elapsed = self._clock() - self._started  # the leg's time stays as it ended

    @property
    def elapsed(self) -> float:
        """Seconds since the current leg started (its whole time once it is done)."""
        return self._elapsed if self._elapsed is not None else self._clock() - self._started

    @property
    def text(self) -> str:
        """The progress line of the current leg ("" before any leg)."""
        if not self.leg:
            return ""
        return progress_text(self.leg, self.done, self.total, self.elapsed)
