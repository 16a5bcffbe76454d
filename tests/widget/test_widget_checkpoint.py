"""The widget's model part as the user drives it: a checkpoint file typed or browsed, the model
list, the state line, Download with no network.

Downloads never reach the internet: the weights store points at a port on 127.0.0.1 where
nothing listens.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QPushButton

from napari_sam2.weights import CACHE_ENV, MODEL_REGISTRY, WEIGHTS_ENV
from official_checkpoints import official_checkpoint
from scripted_tracker import ScriptedTracker
from small_model import moving_blob_stack


@pytest.fixture(scope="module")
def tiny20(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2_hiera_tiny")


@pytest.fixture(scope="module")
def tiny21(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2.1_hiera_tiny")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache of the test's own, no offline folder, no proxy."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    return tmp_path / "cache"


@pytest.fixture
def errors():
    """The error notifications napari receives during the test."""
    received = []

    def collect(notification):
        if notification.severity == NotificationSeverity.ERROR:
            received.append(notification)

    notification_manager.notification_ready.connect(collect)
    yield received
    notification_manager.notification_ready.disconnect(collect)


def type_path(qtbot, edit, path: Path | str) -> None:
    """Type into a line edit and press Return, as the user does."""
    edit.clear()
    qtbot.keyClicks(edit, str(path))
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def click(points, coords, object_id=1):
    """Add one positive prompt point as a click on the points layer does."""
    points.feature_defaults = {"object_id": object_id, "positive": True}
    points.add([coords])


class NetworkFreeTracker(ScriptedTracker):
    """Takes the model the widget loaded, as the real tracker does, and answers with scripted
    masks instead of running a 1024-pixel network on the CPU."""

    def __init__(self, model, frames, contrast_limits=None, fill_hole_area=0, **kwargs):
        super().__init__(
            frames, contrast_limits=contrast_limits, fill_hole_area=fill_hole_area, model=model
        )


@pytest.fixture
def network_free(monkeypatch) -> list[NetworkFreeTracker]:
    """The trackers the widget builds (with the models it loaded)."""
    built: list[NetworkFreeTracker] = []

    def make(model, frames, **kwargs):
        built.append(NetworkFreeTracker(model, frames, **kwargs))
        return built[-1]

    monkeypatch.setattr("napari_sam2.tracking.tracker.Tracker", make)
    return built


def test_official_checkpoint_file_with_its_model_in_the_list_tracks(
    add_widget, run_and_wait, tiny20, qtbot, network_free
):
    viewer, widget = add_widget(moving_blob_stack(4, 64))
    widget.device_combo.setCurrentText("cpu")
    widget.model_combo.setCurrentText("sam2_hiera_tiny")
    type_path(qtbot, widget.checkpoint_edit, tiny20)
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 32, 16)))
    output = widget._output_layer()
    assert 1 in output.data[0]
    model = network_free[-1].model
    assert model.config.name == "sam2_hiera_tiny"
    saved = torch.load(tiny20, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["no_obj_ptr"], saved["no_obj_ptr"])
    run_and_wait(widget, widget.propagate)
    assert all(1 in output.data[t] for t in range(4))
    assert widget.model_status.text() == f"loaded: sam2_hiera_tiny · {tiny20.name} · cpu · float32"
    assert widget.model_status.toolTip() == f"sam2_hiera_tiny · {tiny20} · cpu · float32"


def test_typed_file_of_another_model_switches_the_list(
    add_widget, run_and_wait, tiny20, qtbot, network_free
):
    viewer, widget = add_widget(moving_blob_stack(3, 64))
    assert widget.model_combo.currentText() == "sam2.1_hiera_tiny"
    type_path(qtbot, widget.checkpoint_edit, tiny20)
    assert widget.model_combo.currentText() == "sam2_hiera_tiny"  # the list follows the file
    assert widget.model_status.text() == "file: recognised as sam2_hiera_tiny"
    assert not widget.download_button.isEnabled()
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 32, 16)))
    assert 1 in widget._output_layer().data[0]
    assert network_free[-1].model.config.name == "sam2_hiera_tiny"
    assert widget._load_model((str(tiny20), "auto")) is network_free[-1].model  # kept


def test_checkpoint_file_of_a_configuration_in_the_list_tracks(
    add_widget, run_and_wait, small_config, small_checkpoint, qtbot
):
    """The real (small) network end to end: its configuration in the list, its weights a file."""
    viewer, widget = add_widget(moving_blob_stack(6, 96))
    widget.device_combo.setCurrentText("cpu")
    widget.use_model(small_config, "small (test)")
    type_path(qtbot, widget.checkpoint_edit, small_checkpoint)
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 48, 24)))
    output = widget._output_layer()
    assert 1 in output.data[0]
    run_and_wait(widget, widget.propagate)
    assert sum(1 in output.data[t] for t in range(6)) >= 2  # labels beyond the clicked frame
    assert widget.model_combo.currentText() == "small (test)"
    assert widget.model_status.text() == (
        f"loaded: small (test) · {small_checkpoint.name} · cpu · float32"
    )
    assert str(small_checkpoint) in widget.model_status.toolTip()
    widget.checkpoint_edit.clear()  # without its file the configuration has no weights
    qtbot.keyClick(widget.checkpoint_edit, Qt.Key.Key_Return)
    assert widget.model_status.text() == "needs a checkpoint file"


def test_browsed_file_switches_the_list_to_its_model(add_widget, tiny21, qtbot, monkeypatch):
    viewer, widget = add_widget(moving_blob_stack(3, 64))
    widget.model_combo.setCurrentText("sam2_hiera_large")
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(tiny21), ""))
    )
    (browse,) = [b for b in widget.findChildren(QPushButton) if b.text() == "..."]
    qtbot.mouseClick(browse, Qt.MouseButton.LeftButton)
    assert widget.checkpoint_edit.text() == str(tiny21)
    assert widget.model_combo.currentText() == "sam2.1_hiera_tiny"
    assert widget.model_status.text() == "file: recognised as sam2.1_hiera_tiny"


def test_file_and_list_disagree_says_so_and_a_click_fails_once(
    add_widget, run_and_wait, tiny20, qtbot, errors
):
    viewer, widget = add_widget(moving_blob_stack(3, 64))
    widget.device_combo.setCurrentText("cpu")
    type_path(qtbot, widget.checkpoint_edit, tiny20)
    widget.model_combo.setCurrentText("sam2.1_hiera_small")  # the user chooses another model
    expected = (
        f"{tiny20.name} holds sam2_hiera_tiny, not sam2.1_hiera_small: "
        "choose sam2_hiera_tiny or another file"
    )
    assert widget.model_status.text() == expected
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (0, 32, 20)))
    assert len(errors) == 1
    output = widget._output_layer()
    assert output is None or not output.data.any()
    qtbot.waitUntil(lambda: widget.model_status.text().startswith("load failed"), timeout=5000)
    assert widget.model_status.text() == f"load failed: {expected}"
    assert str(tiny20) in widget.model_status.toolTip()


def test_download_without_network_reports_once_and_recovers(add_widget, qtbot, errors, monkeypatch):
    with socket.socket() as probe:  # a port where nothing listens: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = "sam2.1_hiera_tiny"
    url = f"http://127.0.0.1:{port}/segment_anything_2/{name}.pt"
    monkeypatch.setitem(MODEL_REGISTRY, name, dataclasses.replace(MODEL_REGISTRY[name], url=url))
    viewer, widget = add_widget(moving_blob_stack(3, 64))
    assert widget.model_combo.currentText() == name
    assert widget.model_status.text() == "needs download"
    assert widget.download_button.isEnabled() and widget.download_bar.isHidden()

    qtbot.mouseClick(widget.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: widget.download_bar.isHidden() and widget.download_button.isEnabled(),
        timeout=30_000,
    )
    assert len(errors) == 1
    message = errors[0].message
    assert message.startswith("SAM 2: cannot download sam2.1_hiera_tiny")
    assert "\n" not in message and len(message) < 120 and url not in message
    status = widget.model_status.text()
    assert status.startswith("download failed: cannot download sam2.1_hiera_tiny")
    tooltip = widget.model_status.toolTip()  # the whole story: URL and where to put the file
    assert url in tooltip and WEIGHTS_ENV in tooltip
    assert widget.model_combo.isEnabled() and widget.checkpoint_edit.isEnabled()
    assert message.count("SAM 2:") == 1  # said once, not wrapped twice
