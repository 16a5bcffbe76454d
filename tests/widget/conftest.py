"""Fixtures for viewer tests: the widget added through napari's plugin manager."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def add_widget(make_napari_viewer, qtbot):
    """``add_widget(image_data, **image_kwargs) -> (viewer, widget)``."""

    def add(data: np.ndarray, **kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(data, **kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 tracking")
        return viewer, widget

    return add


@pytest.fixture
def run_and_wait(qtbot):
    """Start work on the widget and wait (on Qt signals, never sleeping) until it is idle."""

    def run(widget, action, timeout=60_000):
        with qtbot.waitSignal(widget.idle, timeout=timeout):
            action()

    return run
