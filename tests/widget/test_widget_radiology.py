"""A CT volume opened from NIfTI: the widget's labels save back onto the scan's own geometry."""

from __future__ import annotations

import numpy as np
import pytest

from scripted_tracker import ScriptedObject, ScriptedTracker

nib = pytest.importorskip("nibabel")


def test_labels_of_a_nifti_scan_save_with_its_affine_and_header(
    make_napari_viewer, run_and_wait, tmp_path
):
    from napari_sam2._reader import read_radiology
    from napari_sam2._writer import write_labels_nifti

    # a sagittally stored scan (voxel axes A, S, R): the reader shows it axial-first
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, (40, 12, 48)).astype(np.int16)
    affine = np.array([[0, 0, 3.0, -20], [0.7, 0, 0, 5], [0, 0.7, 0, 40], [0, 0, 0, 1]])
    source = nib.Nifti1Image(volume, affine)
    source.header.set_qform(affine, code=1)
    source.header.set_sform(affine, code=4)
    scan = tmp_path / "scan.nii.gz"
    nib.save(source, str(scan))

    viewer = make_napari_viewer()
    ((data, kwargs, _),) = read_radiology(str(scan))
    viewer.add_image(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 tracking")
    disc = [ScriptedObject(1, center=(20.0, 20.0), radius=6.0)]
    widget.use_tracker_factory(lambda frames, **kw: ScriptedTracker(frames, disc, **kw))
    points, _, _ = widget.new_prompt_layers()
    points.feature_defaults = {"object_id": 1, "positive": True}
    run_and_wait(widget, lambda: points.add([(data.shape[0] // 2, 20.0, 20.0)]))
    run_and_wait(widget, lambda: widget.propagate("both"))
    output = widget._output_layer()
    assert output.data.any()

    path = tmp_path / "labels.nii.gz"
    _, meta, _ = output.as_layer_data_tuple()
    assert write_labels_nifti(str(path), output.data, meta) == [str(path)]
    written = nib.load(str(path))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.header.get_sform(coded=True)[1] == 4
    # reopened as the scan is shown (axial first), the labels are the widget's, voxel for voxel
    ((again, _, kind),) = read_radiology(str(path))
    assert kind == "labels"
    np.testing.assert_array_equal(again, output.data)
