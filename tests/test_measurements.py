"""Measurements of labelled objects against values worked out by hand (and, where the real CT
lesions are present, against a brute-force computation written independently here)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_sam2.outputs.measurements import (
    FrameMeasurement,
    VolumeMeasurement,
    longest_diameter,
    measure,
)


def ellipsoid(shape, center, radii, spacing):
    """A label-1 ellipsoid with semi-axes ``radii`` in physical units on a grid of pixel size
    ``spacing`` (z, y, x)."""
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    inside = sum(
        ((g - c * s) / r) ** 2 for g, c, s, r in zip(grids, center, spacing, radii, strict=True)
    )
    return (inside <= 1).astype(np.uint8)


def test_rectangle_diameter_is_its_diagonal_between_pixel_centres():
    labels = np.zeros((3, 40, 50), np.uint16)
    labels[1, 5:15, 10:40] = 2  # 10 rows x 30 columns
    table = measure(labels, scale=(2.5, 0.5, 0.25), units="mm", axis="z")
    (row,) = table.rows
    assert isinstance(row, VolumeMeasurement)
    assert row.object_id == 2 and row.voxels == 300
    assert row.volume == pytest.approx(300 * 2.5 * 0.5 * 0.25 / 1000)  # mm^3 -> mL
    assert row.volume_unit == "mL" and row.length_unit == "mm"
    assert (row.first_slice, row.last_slice, row.slices, row.diameter_slice) == (1, 1, 1, 1)
    assert row.longest_diameter == pytest.approx(math.hypot(9 * 0.5, 29 * 0.25))
    ends = {(row.diameter_y0, row.diameter_x0), (row.diameter_y1, row.diameter_x1)}
    assert ends in ({(5, 10), (14, 39)}, {(14, 10), (5, 39)})


def test_anisotropic_ellipsoid_volume_slices_and_diameter():
    spacing = (5.0, 0.8, 0.6)  # z, y, x in mm: a CT with thick slices
    radii = (12.0, 20.0, 9.0)  # mm
    labels = ellipsoid((9, 64, 64), (4, 32, 32), radii, spacing)
    (row,) = measure(labels, scale=spacing, units=("mm", "mm", "mm")).rows
    assert row.voxels == int(labels.sum())
    assert row.volume == pytest.approx(labels.sum() * 5.0 * 0.8 * 0.6 / 1000)
    analytic = 4 / 3 * math.pi * 12 * 20 * 9 / 1000  # mL
    assert row.volume == pytest.approx(analytic, rel=0.12)  # 5 mm slices: coarse in z
    # the ellipsoid spans |dz| <= 12 mm: slices 4 +- 2 (10 mm), not 4 +- 3 (15 mm)
    assert (row.first_slice, row.last_slice, row.slices) == (2, 6, 5)
    # the largest cross-section is the central slice; its long axis is along y (2 x 20 mm)
    assert row.diameter_slice == 4
    assert row.longest_diameter == pytest.approx(40.0, abs=2 * 0.8)
    assert row.diameter_x0 == row.diameter_x1 == 32


def test_diameter_equals_brute_force_on_random_blobs():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((25, 30)) < 0.15
        size = (rng.uniform(0.2, 2.0), rng.uniform(0.2, 2.0))
        ys, xs = np.nonzero(mask)
        pts = np.stack([ys * size[0], xs * size[1]], axis=1)
        expected = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()
        d, (y0, x0, y1, x1) = longest_diameter(mask, size)
        assert d == pytest.approx(expected)
        assert mask[y0, x0] and mask[y1, x1]
        assert math.hypot((y1 - y0) * size[0], (x1 - x0) * size[1]) == pytest.approx(d)


def test_degenerate_masks():
    assert longest_diameter(np.zeros((4, 4), bool))[0] == 0.0
    one = np.zeros((4, 4), bool)
    one[2, 1] = True
    assert longest_diameter(one) == (0.0, (2, 1, 2, 1))
    line = np.zeros((4, 9), bool)
    line[1, 2:8] = True  # collinear pixels only
    assert longest_diameter(line, (1.0, 0.5))[0] == pytest.approx(2.5)


def test_units_micrometres_and_pixels():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[:, 2:4, 2:7] = 1
    (um,) = measure(labels, scale=(2.0, 0.5, 0.5), units="micrometer").rows
    assert (um.volume_unit, um.length_unit) == ("um^3", "um")
    assert um.volume == pytest.approx(20 * 2.0 * 0.25)
    # nanometres are converted to micrometres, centimetres to millimetres
    (nm,) = measure(labels, scale=(2000.0, 500.0, 500.0), units="nm").rows
    assert nm.volume == pytest.approx(um.volume) and nm.length_unit == "um"
    (cm,) = measure(labels, scale=(0.5, 0.1, 0.1), units="cm").rows
    assert cm.volume == pytest.approx(20 * 5 * 1 * 1 / 1000) and cm.volume_unit == "mL"
    (px,) = measure(labels).rows
    assert (px.volume, px.volume_unit, px.length_unit) == (20, "voxels", "px")
    assert px.longest_diameter == pytest.approx(math.hypot(1, 4))


def test_time_lapse_area_centroid_intensity_and_gaps():
    labels = np.zeros((4, 20, 20), np.uint16)
    image = np.zeros((4, 20, 20), np.float32)
    labels[0, 2:6, 3:5] = 1  # 8 pixels, centroid (3.5, 3.5)
    labels[2, 10:13, 10:13] = 1  # absent on frame 1 and 3
    labels[:, 15:17, 15:20] = 4
    image[0, 2:6, 3:5] = 7.0
    image[2, 10:13, 10] = 3.0
    table = measure(
        labels, scale=(30.0, 0.5, 0.25), units=("second", "um", "um"), image=image, axis="t"
    )
    assert all(isinstance(r, FrameMeasurement) for r in table)
    assert [(r.object_id, r.frame) for r in table] == [(1, 0), (1, 2)] + [(4, t) for t in range(4)]
    first, second = table.rows[:2]
    assert (first.pixels, first.area, first.area_unit) == (8, pytest.approx(1.0), "um^2")
    assert (first.centroid_y, first.centroid_x, first.mean_intensity) == (3.5, 3.5, 7.0)
    assert second.mean_intensity == pytest.approx(1.0) and second.centroid_x == 11.0
    assert math.isnan(measure(labels, axis="t").rows[0].mean_intensity)


def test_object_ids_lazy_labels_and_bad_input():
    labels = np.zeros((3, 8, 8), np.int32)
    labels[0, :2, :2] = 1
    labels[1, 4:, 4:] = 2

    class Lazy:  # only shape, dtype and plane indexing, like the CLI's scratch file
        shape, dtype, ndim = labels.shape, labels.dtype, 3

        def __getitem__(self, index):
            return labels[index].copy()

    assert [r.object_id for r in measure(Lazy(), object_ids=[2]).rows] == [2]
    with pytest.raises(ValueError, match="axis"):
        measure(labels, axis="y")
    with pytest.raises(ValueError, match="scale"):
        measure(labels, scale=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="image"):
        measure(labels, image=np.zeros((3, 8, 9)))
    with pytest.raises(TypeError, match="integer"):
        measure(labels.astype(np.float32))


def test_csv_written_atomically_with_a_header(tmp_path):
    labels = np.zeros((2, 6, 6), np.uint8)
    labels[1, 1:3, 1:4] = 5
    path = measure(labels, scale=(5.0, 1.0, 1.0), units="mm").to_csv(tmp_path / "m.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["object_id"] == "5" and rows[0]["volume"] == "0.03"
    assert rows[0]["mean_intensity"] == ""  # no image
    assert not [p for p in tmp_path.iterdir() if p.name != "m.csv"]  # no temporary left
    empty = measure(np.zeros((2, 3, 3), np.uint8), axis="t")
    assert empty.csv_text().splitlines() == [",".join(empty.columns)]


# --- the real CT lesions (../shared/data/ct_lesion) ---------------------------------------------


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    inner = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return mask & ~inner


def test_real_ct_lesions_volume_and_recist_diameter(data_dir):
    import tifffile

    from napari_sam2._reader import read_tiff

    cases = sorted((data_dir / "ct_lesion").glob("*/lesion_zyx.tif"))
    if not cases:
        pytest.skip(f"no CT lesions under {data_dir / 'ct_lesion'}")
    for lesion_path in cases:
        lesion = tifffile.imread(lesion_path) > 0
        ((image, kwargs, _),) = read_tiff(str(lesion_path.parent / "image_zyx.tif"))
        with tifffile.TiffFile(lesion_path.parent / "image_zyx.tif") as tif:
            x, y, z = tif.shaped_metadata[0]["spacing_xyz_mm"]
        assert tuple(kwargs["scale"]) == (z, y, x) and z == 5.0
        assert kwargs["units"][0] == "millimeter"
        expected_ml = lesion.sum() * x * y * z / 1000
        best, best_slice = 0.0, -1
        for k in range(lesion.shape[0]):
            ys, xs = np.nonzero(_boundary(lesion[k]))
            if ys.size:
                pts = np.stack([ys * y, xs * x], axis=1)
                d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()
                if d > best:
                    best, best_slice = d, k
        (row,) = measure(
            lesion.astype(np.uint8), scale=kwargs["scale"], units=kwargs["units"], image=image
        ).rows
        print(f"{lesion_path.parent.name}: {row.volume:.3f} mL, {row.longest_diameter:.2f} mm")
        assert row.volume == pytest.approx(expected_ml, rel=1e-9)
        assert row.longest_diameter == pytest.approx(best, rel=1e-9)
        assert row.diameter_slice == best_slice
        zs = np.flatnonzero(lesion.any(axis=(1, 2)))
        assert (row.first_slice, row.last_slice) == (zs[0], zs[-1])
        assert row.mean_intensity == pytest.approx(image[lesion].mean())
