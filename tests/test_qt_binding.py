"""napari runs on PyQt6, the binding the README installs, and starts without its PyQt5 warning.

napari 0.9 shows "napari support for the PyQt5 backend is deprecated ..." as a notification
when its window is first shown on PyQt5. Its pytest plugin switches that notification off for
every test (an autouse fixture), so the start-up test below switches it back on the way napari
sets it at import (on when qtpy chose PyQt5) and then watches the notifications of a viewer that
is really shown. On an environment made with the `pyqt5` extra both tests fail: qtpy's API is
PyQt5 and the viewer's first show dispatches the deprecation notification.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from importlib import util
from pathlib import Path

import pytest


def test_napari_runs_on_pyqt6():
    import qtpy

    assert qtpy.API_NAME == "PyQt6", (
        f"qtpy chose {qtpy.API_NAME}: install the pyqt6 extra (pip install -e '.[pyqt6]'); "
        "with PyQt5 also installed, uninstall it or set QT_API=pyqt6"
    )
    assert qtpy.QT6 and not qtpy.QT5


def _watch_notifications():
    from napari.utils.notifications import notification_manager

    messages: list[str] = []

    def remember(notification):
        messages.append(str(notification.message))

    notification_manager.notification_ready.connect(remember)
    return messages, lambda: notification_manager.notification_ready.disconnect(remember)


def test_viewer_starts_without_the_pyqt5_deprecation_warning(make_napari_viewer, monkeypatch):
    import qtpy
    from napari._qt import qt_main_window

    # Undo the test plugin's switch: napari sets it at import to "qtpy chose PyQt5".
    assert hasattr(qt_main_window, "SHOW_QT_WARNING"), "napari changed how it warns about PyQt5"
    monkeypatch.setattr(qt_main_window, "SHOW_QT_WARNING", qtpy.QT5)
    messages, stop = _watch_notifications()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make_napari_viewer(show=True)  # the first show of the window is when napari warns
    finally:
        stop()
    texts = messages + [str(w.message) for w in caught]
    assert not [t for t in texts if "PyQt5" in t], texts


def test_the_watch_sees_the_deprecation_warning_when_napari_shows_it(
    make_napari_viewer, monkeypatch
):
    """The test above is not vacuous: with the notification on, it is seen."""
    from napari._qt import qt_main_window

    monkeypatch.setattr(qt_main_window, "SHOW_QT_WARNING", True)  # as on PyQt5
    messages, stop = _watch_notifications()
    try:
        make_napari_viewer(show=True)
    finally:
        stop()
    assert [m for m in messages if "PyQt5" in m and "deprecated" in m], messages


def _pyqt6_xcb_plugin() -> Path:
    spec = util.find_spec("PyQt6")
    assert spec is not None and spec.submodule_search_locations, "PyQt6 is not installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "Qt6" / "plugins" / "platforms" / "libqxcb.so"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb plugin is Linux only")
def test_qt6_xcb_platform_plugin_finds_its_system_libraries():
    """The system packages of the README (and .ci/run) cover what Qt 6 loads for X11."""
    if shutil.which("ldd") is None:
        pytest.skip("ldd is not available")
    plugin = _pyqt6_xcb_plugin()
    assert plugin.is_file(), plugin
    result = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    missing = [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]
    assert not missing, f"libraries Qt's xcb plugin cannot find (install their packages): {missing}"
    assert "libxcb-cursor.so.0" in result.stdout  # the one Qt 6 added over Qt 5
