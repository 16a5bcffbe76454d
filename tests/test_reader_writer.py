"""TIFF reader and labels writer: axes, voxel size and labels survive a round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.layers import Layer

from napari_sam2._reader import napari_get_reader, read_tiff
from napari_sam2._writer import write_labels


def read_one(path):
    reader = napari_get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


def labels_meta(**overrides):
    meta = {"name": "tracked", "scale": (1.0, 1.0, 1.0), "axis_labels": ("-3", "-2", "-1")}
    meta.update(overrides)
    return meta


def test_reader_only_claims_single_tiff_paths(tmp_path):
    assert napari_get_reader(str(tmp_path / "a.png")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    assert napari_get_reader(str(tmp_path / "A.TIFF")) is read_tiff
    assert napari_get_reader([str(tmp_path / "a.tif")]) is read_tiff


def test_time_lapse_uint16_imagej(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (5, 24, 32), dtype=np.uint16)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"axes": "TYX", "unit": "um", "finterval": 300.0},
    )
    data, kwargs, kind = read_one(path)
    assert kind == "image"
    assert data.shape == (5, 24, 32) and data.dtype == np.uint16
    np.testing.assert_array_equal(data, stack)
    assert kwargs["axis_labels"] == ("t", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.0, 0.65, 0.65))
    assert kwargs["metadata"]["frame_interval"] == 300.0
    assert kwargs["units"] == ("pixel", "micrometer", "micrometer")
    assert Layer.create(data, kwargs, kind).ndim == 3  # napari accepts what we return


def test_anisotropic_volume_imagej_spacing(tmp_path):
    volume = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    path = tmp_path / "volume.tif"
    tifffile.imwrite(
        path,
        volume,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"},
    )
    data, kwargs, kind = read_one(path)
    assert (kind, data.shape, data.dtype) == ("image", (6, 10, 12), np.uint16)
    assert kwargs["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.25, 0.5))
    assert kwargs["units"] == ("micrometer",) * 3


def test_anisotropic_volume_ome_physical_size(tmp_path):
    volume = np.zeros((4, 8, 9), np.float32)
    path = tmp_path / "scan.ome.tif"
    tifffile.imwrite(
        path,
        volume,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeZ": 3.0, "PhysicalSizeY": 0.8, "PhysicalSizeX": 0.7},
    )
    data, kwargs, kind = read_one(path)
    assert (kind, data.shape, data.dtype) == ("image", (4, 8, 9), np.float32)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.8, 0.7))


def test_ct_volume_gets_its_voxel_size_from_the_description(tmp_path):
    # as the CT data sets are written: tifffile's JSON description with x, y, z spacing in mm
    volume = np.random.default_rng(2).integers(0, 255, (16, 64, 80), dtype=np.uint8)
    path = tmp_path / "image_zyx.tif"
    spacing = [0.31445300579071045, 0.31445300579071045, 5.0]
    tifffile.imwrite(path, volume, metadata={"axes": "ZYX", "spacing_xyz_mm": spacing})
    data, kwargs, kind = read_one(path)
    assert kind == "image" and data.shape == (16, 64, 80)
    np.testing.assert_array_equal(data, volume)
    assert kwargs["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (5.0, 0.314453, 0.314453), rtol=1e-5)
    assert kwargs["units"] == ("millimeter",) * 3


def test_signed_volume_keeps_its_values_and_isotropic_spacing(tmp_path):
    # an MR volume as the TotalSegmentator samples are written: int16 with negative values
    volume = np.random.default_rng(3).integers(-50, 800, (5, 12, 14), dtype=np.int16)
    path = tmp_path / "mr_image_zyx.tif"
    tifffile.imwrite(path, volume, metadata={"axes": "ZYX", "spacing_xyz_mm": [3.0] * 3})
    data, kwargs, kind = read_one(path)
    assert kind == "image" and data.dtype == np.int16 and int(data.min()) < 0
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 3.0, 3.0))
    assert kwargs["units"] == ("millimeter",) * 3


def test_plain_multipage_tiff_has_a_generic_stack_axis(tmp_path):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.ones((5, 8, 9), np.uint8), metadata=None)
    data, kwargs, kind = read_one(path)
    assert kind == "image" and data.shape == (5, 8, 9)
    assert kwargs["scale"] == (1.0, 1.0, 1.0)
    assert kwargs["axis_labels"][1:] == ("y", "x")


@pytest.mark.parametrize(
    ("name", "dtype", "kind"),
    [
        ("cells_labels.tif", np.uint16, "labels"),
        ("nuclei-mask.tiff", np.uint8, "labels"),
        ("cells.tif", np.uint16, "image"),
        ("float_mask.tif", np.float32, "image"),  # intensities, whatever the name says
        ("segmentation_masks.tif", np.int32, "labels"),
    ],
)
def test_labels_are_recognised_by_name_and_dtype(tmp_path, name, dtype, kind):
    path = tmp_path / name
    tifffile.imwrite(path, np.zeros((5, 8, 9), dtype))
    assert read_one(path)[2] == kind


def test_channels_open_as_separate_layers(tmp_path):
    stack = np.stack([np.full((3, 8, 9), c, np.uint16) for c in range(2)], axis=1)  # (Z,C,Y,X)
    path = tmp_path / "two_channels.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZCYX", "spacing": 4.0})
    layers = read_tiff(str(path))
    assert [layer[0].shape for layer in layers] == [(3, 8, 9), (3, 8, 9)]
    assert [int(layer[0].max()) for layer in layers] == [0, 1]
    assert all(layer[1]["axis_labels"] == ("z", "y", "x") for layer in layers)
    assert all(layer[1]["scale"][0] == 4.0 for layer in layers)


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_rgb_tiff_opens_as_rgb(tmp_path, planarconfig):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 1] = 200
    path = tmp_path / "photo.tif"
    stored = rgb if planarconfig == "contig" else np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(path, stored, photometric="rgb", planarconfig=planarconfig)
    data, kwargs, kind = read_one(path)
    assert kind == "image" and kwargs["rgb"]
    np.testing.assert_array_equal(data, rgb)
    assert kwargs["axis_labels"] == ("y", "x")


def test_labels_round_trip_imagej(tmp_path):
    labels = np.zeros((4, 16, 20), np.int32)
    labels[1:3, 2:6, 3:9] = 7
    labels[3, 10:14, 10:18] = 65535
    meta = labels_meta(scale=(1.0, 0.5, 0.25), axis_labels=("t", "y", "x"))
    path = tmp_path / "tracked.tif"  # no "labels" in the name: the file itself says so
    assert write_labels(str(path), labels, meta) == [str(path)]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
    data, kwargs, kind = read_one(path)
    assert kind == "labels"
    np.testing.assert_array_equal(data, labels)
    assert kwargs["axis_labels"] == ("t", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.0, 0.5, 0.25))


def test_labels_round_trip_volume_with_units(tmp_path):
    labels = np.zeros((5, 8, 9), np.uint8)
    labels[2, 3:5, 3:6] = 1
    meta = labels_meta(
        scale=(5.0, 0.7, 0.7), axis_labels=("z", "y", "x"), units=("millimeter",) * 3
    )
    path = tmp_path / "lesion.tif"
    write_labels(str(path), labels, meta)
    data, kwargs, kind = read_one(path)
    assert kind == "labels"
    np.testing.assert_array_equal(data, labels)
    np.testing.assert_allclose(kwargs["scale"], (5.0, 0.7, 0.7))
    assert kwargs["units"] == ("millimeter",) * 3


@pytest.mark.parametrize("high, low", [(70_000, 0), (12, -3)])
def test_labels_beyond_16_bits_round_trip_as_ome(tmp_path, high, low):
    labels = np.zeros((3, 8, 9), np.int64)
    labels[0, :2, :2] = high
    labels[2, 5:, 5:] = low
    path = tmp_path / "many.tif"
    write_labels(str(path), labels, labels_meta(scale=(2.0, 1.0, 1.0)))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
    data, kwargs, kind = read_one(path)
    assert kind == "labels"
    np.testing.assert_array_equal(data, labels)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 1.0, 1.0))


def test_labels_in_non_imagej_axis_order_round_trip(tmp_path):
    labels = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    meta = labels_meta(scale=(3.0, 1.0, 0.5, 0.5), axis_labels=("z", "t", "y", "x"))
    path = tmp_path / "zt.tif"
    write_labels(str(path), labels, meta)
    data, kwargs, kind = read_one(path)
    np.testing.assert_array_equal(data, labels)
    assert kwargs["axis_labels"] == ("z", "t", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (3.0, 1.0, 0.5, 0.5))


def test_writer_rejects_what_tiff_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="integer ids"):
        write_labels(str(tmp_path / "f.tif"), np.zeros((4, 4), np.float32), {})
    with pytest.raises(ValueError, match="2 to 5 axes"):
        write_labels(str(tmp_path / "g.tif"), np.zeros((1,) * 6, np.uint8), {})
    with pytest.raises(ValueError, match="do not fit in 32 bits"):
        write_labels(str(tmp_path / "h.tif"), np.array([[0, 2**40]], np.int64), {})


def test_large_images_open_lazily_page_by_page(tmp_path, monkeypatch):
    import dask.array as da

    from napari_sam2 import _reader

    stack = np.random.default_rng(1).integers(0, 4000, (6, 3, 20, 24), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TCYX"})
    labels = tmp_path / "big_labels.tif"
    tifffile.imwrite(labels, stack[:, 0], imagej=True, metadata={"axes": "TYX"})
    monkeypatch.setattr(_reader, "LAZY_BYTES", 1000)

    layers = read_tiff(str(path))
    assert len(layers) == 3  # one lazy layer per channel
    for channel, (data, kwargs, kind) in enumerate(layers):
        assert isinstance(data, da.Array) and kind == "image"
        assert data.shape == (6, 20, 24) and kwargs["axis_labels"] == ("t", "y", "x")
        np.testing.assert_array_equal(np.asarray(data[4]), stack[4, channel])
    assert Layer.create(*layers[1]).ndim == 3

    data, _, kind = read_one(labels)  # labels stay in memory: napari paints into them
    assert kind == "labels" and isinstance(data, np.ndarray)
    np.testing.assert_array_equal(data, stack[:, 0])
