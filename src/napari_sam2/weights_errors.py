"""The error of the weights store: a checkpoint could not be had, and what to do about it."""

from __future__ import annotations


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or verified; the message says what to do."""
