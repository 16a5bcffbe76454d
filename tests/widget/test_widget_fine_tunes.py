"""Registered fine-tunes in the widget: MedSAM2 chosen by name in the model list (found offline in
a ``$NAPARI_SAM2_WEIGHTS`` folder) runs at 512 px on a CT-like stack; the list and the state
line say each entry's source, size, licence and image size; an unregistered fine-tune's file
runs at the image size chosen for it.

The checkpoint is a random-weight sam2.1_hiera_tiny written once per session
(``official_checkpoints.py``), linked under MedSAM2's published file name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_sam2.weights import WEIGHTS_ENV
from napari_sam2.widget.model_controller import ModelController
from official_checkpoints import official_checkpoint
from scripted_tracker import ScriptedObject, ScriptedTracker


def _link_or_copy(source: Path, target: Path) -> Path:
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)  # no second 156 MB write where the file system allows
        except OSError:
            target.write_bytes(source.read_bytes())
    return target


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2.1_hiera_tiny")


@pytest.fixture(autouse=True)
def private_store(weights_env) -> Path:
    """The test's own weights store (``weights_env`` in conftest.py)."""
    return weights_env


@pytest.fixture
def medsam2_offline(tmp_path, monkeypatch, tiny_file) -> Path:
    """``MedSAM2_latest.pt`` in a ``$NAPARI_SAM2_WEIGHTS`` folder of the test's own."""
    folder = tmp_path / "weights"
    path = _link_or_copy(tiny_file, folder / "MedSAM2_latest.pt")
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    return path


def ct_stack(slices: int = 3, size: int = 48) -> np.ndarray:
    """A small CT-like volume (Hounsfield units, int16) with a round organ that shifts."""
    yy, xx = np.mgrid[:size, :size]
    volume = np.full((slices, size, size), -1000, np.int16)
    for z in range(slices):
        volume[z][(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2] = 40
        volume[z][(yy - size / 2) ** 2 + (xx - size / 2 - z) ** 2 < (size * 0.15) ** 2] = 300
    return volume


def click(points, coords, object_id=1):
    """Add one positive prompt point as a click on the points layer does."""
    points.feature_defaults = {"object_id": object_id, "positive": True}
    points.add([coords])


def test_controller_describes_fine_tunes_and_follows_their_files(medsam2_offline):
    controller = ModelController()
    assert "medsam2_latest" in controller.names()
    assert "micro_sam_hvit_t_cells" in controller.names()
    assert controller.status() == "needs download"  # official entries stay terse
    controller.choose("medsam2_us_heart")
    status = controller.status()
    assert status.startswith("needs download · MedSAM2 (bowang-lab)")
    for part in ("~156 MB", "CC-BY-SA-4.0", "512 px"):
        assert part in status
    assert controller.can_download()
    assert "huggingface.co/wanglab/MedSAM2" in controller.detail()
    controller.choose("medsam2_latest")
    assert controller.status().startswith("local file · MedSAM2")
    # the published file given as checkpoint: the list follows it to its entry and size
    controller.choose("sam2.1_hiera_tiny")
    assert controller.set_checkpoint(str(medsam2_offline)) == "medsam2_latest"
    assert controller.status() == "file: sam2.1_hiera_tiny weights as medsam2_latest"
    # an image size is part of the request and of the session key
    controller.set_checkpoint(None)
    controller.set_image_size("512")
    assert controller.request().image_size == 512
    assert controller.key() == ("medsam2_latest", "auto", "medsam2_latest", 512)
    assert controller.request_for_key(controller.key()) == controller.request()
    controller.set_image_size("auto")
    assert controller.key() == ("medsam2_latest", "auto", "medsam2_latest")
    with pytest.raises(ValueError, match="multiple of 32"):
        controller.set_image_size(500)


@pytest.mark.slow
def test_medsam2_chosen_by_name_tracks_a_ct_stack_at_512(add_widget, run_and_wait, medsam2_offline):
    viewer, widget = add_widget(ct_stack())
    widget.device_combo.setCurrentText("cpu")
    combo = widget.model_combo
    tooltip = combo.itemData(combo.findText("medsam2_latest"), Qt.ItemDataRole.ToolTipRole)
    for part in ("MedSAM2 (bowang-lab)", "~156 MB", "CC-BY-SA-4.0", "512 px"):
        assert part in tooltip
    micro = combo.itemData(combo.findText("micro_sam_hvit_t_cells"), Qt.ItemDataRole.ToolTipRole)
    assert "micro-sam" in micro and "1024 px" in micro
    combo.setCurrentText("medsam2_latest")
    assert widget.model_status.text().startswith("local file · MedSAM2 (bowang-lab)")
    assert "512 px" in widget.model_status.text()

    # the real network, once: a click on the middle slice runs MedSAM2 at 512 px
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (1, 24, 25)), timeout=120_000)
    assert not widget.status_label.isVisible(), widget.status_label.text()
    request, model = widget.model_controller.loaded
    assert request.name == "medsam2_latest" and model.config.image_size == 512
    assert model.config.grid_size == 32
    assert widget.model_status.text() == (
        "loaded: medsam2_latest · MedSAM2_latest.pt · cpu · float32 · 512 px"
    )
    assert widget._output_layer() is not None

    # propagation through the stack with scripted masks (the random weights mean nothing)
    trackers = []

    def factory(frames, **kwargs):
        trackers.append(ScriptedTracker(frames, [ScriptedObject(1, (24, 25), radius=6)], **kwargs))
        return trackers[-1]

    widget.use_tracker_factory(factory)
    run_and_wait(widget, lambda: click(points, (1, 24, 26)))
    run_and_wait(widget, lambda: widget.propagate("both"))
    output = widget._output_layer()
    assert all(1 in output.data[z] for z in range(3))


@pytest.fixture
def built_models(monkeypatch) -> list:
    """The models the widget builds trackers with; the trackers answer with scripted masks
    instead of running a 1024 px network on the CPU."""
    models = []

    def make(model, frames, contrast_limits=None, fill_hole_area=0, **kwargs):
        models.append(model)
        objects = [ScriptedObject(1, (24, 25), radius=6)]
        return ScriptedTracker(
            frames, objects, contrast_limits=contrast_limits, fill_hole_area=fill_hole_area
        )

    monkeypatch.setattr("napari_sam2.tracking.tracker.Tracker", make)
    return models


def test_unregistered_fine_tune_file_runs_at_the_chosen_image_size(
    add_widget, run_and_wait, qtbot, tiny_file, tmp_path, built_models
):
    unknown = _link_or_copy(tiny_file, tmp_path / "my_medsam.pt")
    viewer, widget = add_widget(ct_stack())
    widget.device_combo.setCurrentText("cpu")
    sizes = widget.model_view.panel.image_size_combo
    assert [sizes.itemText(i) for i in range(sizes.count())][:1] == ["auto"]
    widget.checkpoint_edit.setText(str(unknown))
    widget.checkpoint_edit.editingFinished.emit()
    assert widget.model_combo.currentText() == "sam2.1_hiera_tiny"
    sizes.setCurrentText("512")
    assert widget.model_status.text() == "file: recognised as sam2.1_hiera_tiny at 512 px"
    points, _, _ = widget.new_prompt_layers()
    run_and_wait(widget, lambda: click(points, (1, 24, 25)))
    assert built_models[-1].config.image_size == 512
    assert built_models[-1].config.name == "sam2.1_hiera_tiny@512"
    assert 1 in widget._output_layer().data[1]
    assert widget.model_status.text().endswith("cpu · float32 · 512 px")
