"""Stop signals during a ``napari-sam2`` run (SIGINT, SIGTERM, SIGHUP) and how a stop is
reported."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any


class RunStopped(BaseException):
    """A stop signal (SIGINT, SIGTERM) that ends the run at once.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP during a run: Ctrl-C; what ``timeout``, ``kill``, SLURM and
    Kubernetes send; a closed terminal or ssh session.

    Before tracking (``phase == "setup"``) a signal stops the run at once: nothing has been
    written. While tracking, the first signal asks the tracking to stop after the frame in
    progress, so the outputs hold every frame finished; a second one stops it at once. While
    the outputs are written, signals are only noted: the export finishes first (dropping it
    would lose the work done), then the run exits with 128 + the signal number.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.phase = "setup"
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over the signals (only the main thread may; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)  # SIGHUP does not exist on Windows
            # an ignored signal stays ignored: ``nohup`` and background jobs of a shell
            # ignore SIGHUP / SIGINT so that the run outlives the terminal
            if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """Whether a stop signal has arrived (polled between frames)."""
        return self.received is not None

    def _say(self, text: str) -> None:
        # os.write, not print: a signal handler may run while sys.stderr is mid-write
        try:
            os.write(2, f"\nnapari-sam2: {text}\n".encode())
        except OSError:
            pass

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
        name = signal.Signals(signum).name
        if self.phase == "setup":
            raise RunStopped(signum)
        if self.phase == "tracking":
            if not first:
                raise RunStopped(signum)
            self._say(
                f"{name}: stopping after the frame in progress and writing the frames done "
                "(send it again to stop at once)"
            )
        elif self.phase == "export":
            self._say(f"{name}: finishing the outputs first, then stopping")


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _stop_text(stop: BaseException | int) -> str:
    """Why tracking stopped early, for the message and the run record."""
    if isinstance(stop, int):
        return _signal_name(stop)
    return str(stop) or type(stop).__name__
