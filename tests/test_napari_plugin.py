"""napari finds and uses the plugin's reader, writer and samples (real viewer, under Xvfb)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_sam2._sample_data import (
    BLOB_VOXEL_SIZE,
    DIVIDING_CELLS_SHAPE,
    blob_volume,
    dividing_cells,
    make_blob_volume,
    make_dividing_cells,
)


def test_npe2_validate_passes():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-sam2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_python_names_of_io_and_samples_import():
    import npe2
    from npe2.manifest.utils import import_python_name

    manifest = npe2.PluginManifest.from_distribution("napari-sam2")
    io_commands = [c for c in manifest.contributions.commands if "widget" not in c.id]
    assert len(io_commands) == 5  # reader, two writers, two samples
    for command in io_commands:
        assert callable(import_python_name(command.python_name))


def test_dividing_cells_are_deterministic_and_divide():
    images, labels = make_dividing_cells()
    again, _ = make_dividing_cells()
    np.testing.assert_array_equal(images, again)
    assert images.shape == labels.shape == DIVIDING_CELLS_SHAPE and images.dtype == np.uint16
    ids_first = set(np.unique(labels[0])) - {0}
    ids_last = set(np.unique(labels[-1])) - {0}
    assert 1 in ids_first and 1 not in ids_last  # the mother is gone ...
    assert len(ids_last) > len(ids_first)  # ... replaced by daughters; a cell entered
    # Nuclei are brighter than the background, so the sample is a fair tracking problem.
    assert images[labels > 0].mean() > 2 * images[labels == 0].mean()


def test_blob_volume_blobs_appear_and_vanish_along_z():
    volume, labels = make_blob_volume()
    assert volume.shape == labels.shape and volume.dtype == np.uint16
    present = [set(np.unique(plane)) - {0} for plane in labels]
    assert not present[0] and not present[-1]
    first_slices = {k: min(z for z, ids in enumerate(present) if k in ids) for k in (1, 2, 3, 4)}
    last_slices = {k: max(z for z, ids in enumerate(present) if k in ids) for k in (1, 2, 3, 4)}
    assert all(last_slices[k] - first_slices[k] < 14 for k in first_slices)  # few slices each
    assert last_slices[1] < first_slices[3]


def test_sample_functions_return_napari_layer_data():
    (cells,) = dividing_cells()
    assert cells[2] == "image" and cells[1]["axis_labels"] == ("t", "y", "x")
    (volume,) = blob_volume()
    assert volume[1]["scale"] == BLOB_VOXEL_SIZE


def test_viewer_opens_samples_from_the_plugin(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam2", "dividing_cells")
    viewer.open_sample("napari-sam2", "blob_volume")
    cells, volume = viewer.layers
    assert cells.data.shape == DIVIDING_CELLS_SHAPE
    assert tuple(cells.axis_labels) == ("t", "y", "x")
    np.testing.assert_allclose(volume.scale, BLOB_VOXEL_SIZE)


def test_viewer_opens_a_tiff_with_the_plugin_reader(make_napari_viewer, tmp_path):
    path = tmp_path / "volume.tif"
    stack = np.arange(4 * 8 * 9, dtype=np.uint16).reshape(4, 8, 9)
    tifffile.imwrite(
        path, stack, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 3.0}
    )
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-sam2")
    assert len(layers) == 1
    np.testing.assert_array_equal(layers[0].data, stack)
    np.testing.assert_allclose(layers[0].scale, (3.0, 0.5, 0.5))


def test_viewer_saves_labels_with_the_plugin_writer(make_napari_viewer, tmp_path):
    _, truth = make_dividing_cells()
    viewer = make_napari_viewer()
    viewer.add_labels(truth, name="tracked", scale=(1.0, 0.4, 0.4), axis_labels=("t", "y", "x"))
    path = tmp_path / "tracked.tif"
    saved = viewer.layers.save(str(path), plugin="napari-sam2")
    assert saved == [str(path)]
    (reopened,) = viewer.open(str(path), plugin="napari-sam2")
    assert reopened.__class__.__name__ == "Labels"
    np.testing.assert_array_equal(reopened.data, truth)
    np.testing.assert_allclose(reopened.scale, (1.0, 0.4, 0.4))


@pytest.mark.parametrize("name", ["dividing_cells", "blob_volume"])
def test_sample_is_listed_in_the_plugin_menu(name):
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    keys = {sample.key for sample in manager.get_manifest("napari-sam2").contributions.sample_data}
    assert name in keys
