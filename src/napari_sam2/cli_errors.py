"""Exit statuses of the ``napari-sam2`` command and the errors it reports in one line."""

from __future__ import annotations

EXIT_FAILED = 1
"""The outputs could not be written (a full disk, say); the message names the file."""
EXIT_ERROR = 2
"""Refused: bad input or options, or earlier results without --overwrite; nothing written."""
EXIT_PARTIAL = 3
"""Tracking stopped on an error (a frame that cannot be read): the outputs hold the frames
done before it."""
EXIT_READER_GONE = 141
"""What reads the output stopped reading it (``napari-sam2 models | head``): 128 + SIGPIPE, the
status of a process the signal ended."""
EXIT_INTERRUPTED = 130
"""SIGINT (Ctrl-C); SIGTERM gives 143 and SIGHUP 129 (128 + the signal number, as shells
report a process ended by that signal)."""

SETUP_ERRORS = (ValueError, TypeError, IndexError, OSError, RuntimeError)
"""Errors reported in one line, exit status 2, when they happen before tracking."""
TRACKING_ERRORS = (OSError, ValueError, RuntimeError, MemoryError)
"""Errors that stop tracking with a one-line message; any other one is a bug and its
traceback is printed too (the frames done are written either way)."""


class CliError(Exception):
    """An error to report in one line, without a traceback."""
