"""Label TIFF exports keep their geometry (axes, pixel sizes, frame interval, units, origin).

Every export path is read back twice: with ``tifffile`` (what Fiji and other tools see) and
with this plugin's reader (what napari gets back).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from napari_sam2._reader import read_tiff
from napari_sam2._writer import write_labels
from napari_sam2.outputs import export_labels_tiff
from small_model import moving_blob_stack


def read_back(path: Path) -> tuple[np.ndarray, dict, str]:
    layers = read_tiff(str(path))
    assert len(layers) == 1
    return layers[0]


def imagej(path: Path) -> tuple[str, dict, float | None]:
    """(series axes, ImageJ metadata, x pixel size from the resolution tag)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        tag = tif.pages[0].tags.get("XResolution")
        size = tag.value[1] / tag.value[0] if tag is not None else None
        return tif.series[0].axes, dict(tif.imagej_metadata), size


def blobs(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    labels[..., 2:5, 3:7] = 3
    return labels


# --- export_labels_tiff (the command line and the widget) ----------------------------------


def test_volume_zyx_keeps_spacing_resolution_and_unit(tmp_path):
    labels = blobs((4, 10, 12))
    path = export_labels_tiff(
        labels, tmp_path / "v.tif", axes="ZYX", scale=(2.5, 0.5, 0.5), units=("micrometer",) * 3
    )
    axes, meta, xsize = imagej(path)
    assert axes == "ZYX" and meta["spacing"] == 2.5 and meta["unit"] == "micron"
    assert xsize == pytest.approx(0.5)
    data, kwargs, kind = read_back(path)
    assert kind == "labels" and np.array_equal(data, labels)
    assert kwargs["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (2.5, 0.5, 0.5))
    assert kwargs["units"] == ("micrometer",) * 3


def test_time_lapse_tyx_keeps_frame_interval(tmp_path):
    labels = blobs((5, 10, 12))
    path = export_labels_tiff(
        labels,
        tmp_path / "t.tif",
        axes="TYX",
        scale=(0.5, 0.65, 0.65),
        units=("minute", "micrometer", "micrometer"),
    )
    axes, meta, xsize = imagej(path)
    assert axes == "TYX" and meta["finterval"] == pytest.approx(30.0)  # ImageJ: seconds
    assert meta["unit"] == "micron" and xsize == pytest.approx(0.65)
    data, kwargs, _ = read_back(path)
    assert np.array_equal(data, labels)
    assert kwargs["axis_labels"] == ("t", "y", "x")
    # the reader keeps t in frames and the interval in the metadata
    np.testing.assert_allclose(kwargs["scale"], (1.0, 0.65, 0.65))
    assert kwargs["metadata"]["frame_interval"] == pytest.approx(30.0)
    assert kwargs["units"] == ("pixel", "micrometer", "micrometer")


def test_tzyx_converts_z_to_the_unit_of_x(tmp_path):
    labels = blobs((2, 3, 10, 12))
    path = export_labels_tiff(
        labels,
        tmp_path / "tz.tif",
        axes="TZYX",
        scale=(4.0, 0.002, 0.25, 0.25),
        units=("second", "millimeter", "micrometer", "micrometer"),
    )
    axes, meta, xsize = imagej(path)
    assert axes == "TZYX" and meta["spacing"] == pytest.approx(2.0)
    assert meta["finterval"] == 4.0 and meta["unit"] == "micron"
    data, kwargs, _ = read_back(path)
    assert np.array_equal(data, labels)
    assert kwargs["axis_labels"] == ("t", "z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.0, 2.0, 0.25, 0.25))
    assert kwargs["units"] == ("pixel", "micrometer", "micrometer", "micrometer")


def test_frame_counting_t_scale_writes_no_interval_and_legacy_unit_still_works(tmp_path):
    path = export_labels_tiff(
        blobs((3, 8, 8)), tmp_path / "l.tif", axes="TYX", scale=(1.0, 2.0, 2.0), unit="um"
    )
    _, meta, xsize = imagej(path)
    assert "finterval" not in meta and meta["unit"] == "micron" and xsize == pytest.approx(2.0)
    _, kwargs, _ = read_back(path)
    assert "frame_interval" not in kwargs["metadata"]
    assert kwargs["units"] == ("pixel", "micrometer", "micrometer")


def test_translate_becomes_the_imagej_origin(tmp_path):
    path = export_labels_tiff(
        blobs((3, 8, 8)),
        tmp_path / "o.tif",
        axes="ZYX",
        scale=(2.0, 0.5, 0.5),
        unit="micrometer",
        translate=(10.0, -1.0, 3.0),
    )
    _, meta, _ = imagej(path)
    assert (meta["zorigin"], meta["yorigin"], meta["xorigin"]) == (-5.0, 2.0, -6.0)
    _, kwargs, _ = read_back(path)
    np.testing.assert_allclose(kwargs["translate"], (10.0, -1.0, 3.0))


def test_export_is_atomic_under_a_unique_temporary_name(tmp_path):
    # a file of the user's that happens to have the old fixed temporary name is left alone
    bystander = tmp_path / "l.tif.partial"
    bystander.write_bytes(b"mine")
    target = tmp_path / "l.tif"
    target.write_bytes(b"previous result")

    class Failing:
        shape, dtype, ndim = (3, 8, 8), np.dtype(np.uint16), 3

        def __getitem__(self, key):
            if key == (2,):
                raise OSError("disk gone")
            return np.zeros((8, 8), np.uint16)

    with pytest.raises(OSError, match="disk gone"):
        export_labels_tiff(Failing(), target, axes="TYX")
    assert target.read_bytes() == b"previous result"
    assert bystander.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif", "l.tif.partial"]

    export_labels_tiff(blobs((3, 8, 8)), target, axes="TYX")
    assert np.array_equal(tifffile.imread(target), blobs((3, 8, 8)))
    assert bystander.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif", "l.tif.partial"]


# --- napari's writer ------------------------------------------------------------------------


def napari_state(data: np.ndarray, **kwargs) -> dict:
    """The layer state napari hands a writer (``Layer.as_layer_data_tuple``)."""
    from napari.layers import Labels

    _, meta, kind = Labels(data, **kwargs).as_layer_data_tuple()
    assert kind == "labels"
    return meta


def test_napari_writer_keeps_scale_units_axis_labels_and_translate(tmp_path):
    from napari.layers import Layer

    labels = blobs((4, 10, 12))
    meta = napari_state(
        labels,
        scale=(3.0, 0.5, 0.5),
        units=("micrometer",) * 3,
        axis_labels=("z", "y", "x"),
        translate=(6.0, 1.0, -2.0),
    )
    path = tmp_path / "seg.tif"
    assert write_labels(str(path), labels, meta) == [str(path)]
    axes, ij, xsize = imagej(path)
    assert axes == "ZYX" and ij["spacing"] == 3.0 and ij["unit"] == "micron"
    assert xsize == pytest.approx(0.5)
    data, kwargs, kind = read_back(path)
    assert kind == "labels" and np.array_equal(data, labels)
    layer = Layer.create(data, kwargs, kind)
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    np.testing.assert_allclose(layer.scale, (3.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (6.0, 1.0, -2.0))
    assert [str(u) for u in layer.units] == ["micrometer"] * 3


def test_napari_writer_time_lapse_round_trips_the_frame_interval(tmp_path):
    stack = moving_blob_stack(frames=4, size=16)
    source = tmp_path / "movie.tif"
    tifffile.imwrite(
        source,
        stack,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"axes": "TYX", "unit": "um", "finterval": 120.0},
    )
    _, image_kwargs, _ = read_back(source)
    labels = (stack > 100).astype(np.uint16)
    meta = napari_state(
        labels,
        scale=image_kwargs["scale"],
        units=image_kwargs["units"],
        axis_labels=image_kwargs["axis_labels"],
        metadata=image_kwargs["metadata"],
    )
    path = tmp_path / "movie_tracked.tif"
    write_labels(str(path), labels, meta)
    _, ij, _ = imagej(path)
    assert ij["finterval"] == 120.0
    _, kwargs, kind = read_back(path)
    assert kind == "labels" and kwargs["axis_labels"] == ("t", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], image_kwargs["scale"])
    assert kwargs["units"] == image_kwargs["units"]
    assert kwargs["metadata"]["frame_interval"] == 120.0


def test_napari_writer_ome_for_large_ids_keeps_units(tmp_path):
    labels = np.zeros((3, 8, 9), np.int64)
    labels[1, :2, :2] = 70_000
    meta = napari_state(
        labels, scale=(2.0, 0.5, 0.5), units=("millimeter",) * 3, axis_labels=("z", "y", "x")
    )
    path = tmp_path / "many.tif"
    write_labels(str(path), labels, meta)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
    data, kwargs, kind = read_back(path)
    assert kind == "labels" and np.array_equal(data, labels)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.5, 0.5))
    assert kwargs["units"] == ("millimeter",) * 3


# --- the command line's labels.tif ----------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "metadata", "expected"),
    [
        ("ZYX", {"spacing": 2.5, "unit": "micron"}, {"spacing": 2.5}),
        ("TYX", {"finterval": 60.0, "unit": "micron"}, {"finterval": 60.0}),
    ],
)
def test_cli_labels_keep_the_stack_geometry(
    tmp_path, small_config_file, small_checkpoint, axes, metadata, expected
):
    stack = moving_blob_stack(frames=4, size=32)
    source = tmp_path / "stack.tif"
    tifffile.imwrite(
        source, stack, imagej=True, resolution=(2.0, 2.0), metadata={"axes": axes, **metadata}
    )
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 1, "object_id": 1, "points": [[16, 10]]}]))
    out = tmp_path / "out"
    argv = ["track", str(source), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    argv += [
        "--config",
        str(small_config_file),
        "--checkpoint",
        str(small_checkpoint),
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    file_axes, ij, xsize = imagej(out / "labels.tif")
    assert file_axes == axes and ij["unit"] == "micron" and xsize == pytest.approx(0.5)
    for key, value in expected.items():
        assert ij[key] == value
    _, kwargs, kind = read_back(out / "labels.tif")
    assert kind == "labels"
    assert kwargs["axis_labels"] == tuple(axes.lower())
    z = expected.get("spacing", 1.0)
    np.testing.assert_allclose(kwargs["scale"], (z, 0.5, 0.5))
    assert kwargs["units"][1:] == ("micrometer", "micrometer")
    if "finterval" in expected:
        assert kwargs["metadata"]["frame_interval"] == expected["finterval"]
    assert not [p for p in os.listdir(out) if p.endswith(".partial")]
