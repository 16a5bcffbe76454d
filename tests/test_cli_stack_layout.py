"""`napari-sam2 track` writes its label file and measurements in the stack's own layout and
units: a 3-D volume propagated along axis 1 or 2 (labels.tif and measurements.csv back in ZYX
with the stack's voxel size), one channel picked from a multi-channel stack (its mean
intensity), and a stack of non-numeric values refused as bad input. Runs the real tracker with
the small random-weight network on stacks generated here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from napari_sam2.stack_files import open_stack

Z_MM, XY_MM = 2.0, 0.5  # anisotropic voxels, as CT slices: a wrong axis shows in the volume


def ellipsoid_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy uint8 (Z, Y, X) volume with a bright ellipsoid, and the ellipsoid's mask."""
    rng = np.random.default_rng(1)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    mask = ((zz - 3) / 2.6) ** 2 + ((yy - 20) / 9) ** 2 + ((xx - 24) / 12) ** 2 < 1
    volume = 60 + 120 * mask + rng.normal(0, 10, shape)
    return np.clip(volume, 0, 255).astype(np.uint8), mask


def mask_prompt(tmp_path: Path, mask: np.ndarray, axis: int, frame: int) -> Path:
    """A JSON prompt with the mask's plane ``frame`` along ``axis`` (in the frame's (H, W):
    the other two axes in their order)."""
    tifffile.imwrite(tmp_path / "plane.tif", np.take(mask, frame, axis=axis).astype(np.uint8))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": frame, "object_id": 1, "mask": "plane.tif"}]))
    return prompts


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("axis", [1, 2])
def test_volume_along_axis_1_or_2_is_written_in_the_stack_layout(axis, model_args, tmp_path):
    volume, mask = ellipsoid_volume((7, 40, 48))
    stack = tmp_path / "image_zyx.tif"
    # ImageJ metadata, as Fiji writes it: X / Y pixel size in the resolution tags, Z spacing
    tifffile.imwrite(
        stack,
        volume,
        imagej=True,
        resolution=(1 / XY_MM, 1 / XY_MM),
        metadata={"axes": "ZYX", "spacing": Z_MM, "unit": "mm"},
    )
    frame = {1: 20, 2: 24}[axis]  # through the ellipsoid's centre
    prompts = mask_prompt(tmp_path, mask, axis, frame)
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--axis", str(axis)]
    options = ["--max-frames", "1", "--measure", "z", "--format", "tiff", "csv", "ctc"]
    assert cli.main(argv + options + model_args) == 0

    # labels.tif: the stack's shape, axes and voxel size, so it overlays the image
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.series[0].axes == "ZYX"
        labels = tif.asarray()
        assert tif.imagej_metadata["spacing"] == pytest.approx(Z_MM)
        assert tif.imagej_metadata["unit"] in ("mm", "millimeter")
    assert labels.shape == volume.shape
    reread = open_stack(out / "labels.tif")
    assert reread.axes == "ZYX"
    assert reread.sizes == pytest.approx({"Z": Z_MM, "Y": XY_MM, "X": XY_MM})
    # the prompted plane lies where the prompt was drawn (a mask prompt is kept as given)
    plane = np.take(labels, frame, axis=axis) == 1
    prompt = np.take(mask, frame, axis=axis)
    assert (plane & prompt).sum() / (plane | prompt).sum() > 0.9

    # measurements.csv: the volume with the stack's voxel size, the mean of its intensities
    voxels = labels == 1
    (row,) = read_csv(out / "measurements.csv")
    assert int(row["voxels"]) == int(voxels.sum())
    assert row["volume_unit"] == "mL" and row["length_unit"] == "mm"
    expected = voxels.sum() * Z_MM * XY_MM * XY_MM / 1000  # mm^3 -> mL
    assert float(row["volume"]) == pytest.approx(expected, rel=1e-5)
    assert (int(row["first_slice"]), int(row["last_slice"])) == (
        int(np.flatnonzero(voxels.any(axis=(1, 2)))[0]),
        int(np.flatnonzero(voxels.any(axis=(1, 2)))[-1]),
    )
    assert float(row["mean_intensity"]) == pytest.approx(volume[voxels].mean(), rel=1e-5)

    # presence.csv and ctc/ stay per propagated frame (the index along --axis)
    frames = {int(r["frame"]) for r in read_csv(out / "presence.csv")}
    assert frame in frames and frames <= set(range(volume.shape[axis]))
    masks = sorted((out / "ctc").glob("mask*.tif"))
    assert len(masks) == volume.shape[axis]
    assert tifffile.imread(masks[frame]).shape == np.take(volume, 0, axis=axis).shape


def test_npy_volume_without_axis_letters_along_axis_2(model_args, tmp_path):
    """A .npy file has no axis letters or sizes: the stack's default letters, no scale."""
    volume, mask = ellipsoid_volume((7, 40, 48))
    stack = tmp_path / "volume.npy"
    np.save(stack, volume)
    prompts = mask_prompt(tmp_path, mask, 2, 24)
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--axis", "2"]
    assert cli.main(argv + ["--max-frames", "1", "--measure", "z"] + model_args) == 0
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.series[0].axes == "TYX"  # what open_stack names a 3-D .npy
        labels = tif.asarray()
        assert "spacing" not in tif.imagej_metadata
    assert labels.shape == volume.shape
    voxels = labels == 1
    (row,) = read_csv(out / "measurements.csv")
    assert int(row["voxels"]) == int(voxels.sum()) > 0
    assert float(row["volume"]) == int(voxels.sum())
    assert row["volume_unit"] == "voxels"
    assert float(row["mean_intensity"]) == pytest.approx(volume[voxels].mean(), rel=1e-5)


@pytest.mark.parametrize("layout", ["TCYX tiff", "TYXC npy"])
def test_one_channel_of_a_multichannel_stack_has_its_mean_intensity(layout, model_args, tmp_path):
    rng = np.random.default_rng(2)
    t, h, w = 3, 40, 48
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 20) ** 2 + (xx - 22) ** 2 < 8**2
    image = rng.integers(100, 400, (t, 2, h, w), dtype=np.uint16)
    image[:, 1] += (2000 * disc).astype(np.uint16)  # channel 1 shows the object
    if layout == "TCYX tiff":  # channels named by the file: a view of the stack's axes
        stack = tmp_path / "tcyx.tif"
        tifffile.imwrite(stack, image, imagej=True, metadata={"axes": "TCYX"})
    else:  # channels last without axis letters: the (T, H, W, C) array as it is
        stack = tmp_path / "tyxc.npy"
        np.save(stack, np.moveaxis(image, 1, -1))
    tifffile.imwrite(tmp_path / "disc.tif", disc.astype(np.uint8))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "mask": "disc.tif"}]))
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + ["--channel", "1", "--measure"] + model_args) == 0
    labels = tifffile.imread(out / "labels.tif")
    rows = read_csv(out / "measurements.csv")
    assert rows and {int(r["frame"]) for r in rows} <= set(range(t))
    for row in rows:
        k, f = int(row["object_id"]), int(row["frame"])
        inside = labels[f] == k
        assert int(row["pixels"]) == int(inside.sum())
        # the raw intensities of the channel picked, as for a grey stack
        assert row["mean_intensity"] != ""
        assert float(row["mean_intensity"]) == pytest.approx(image[f, 1][inside].mean(), rel=1e-5)


NON_NUMERIC = {
    "complex64": lambda a: a.astype(np.complex64),
    "datetime64": lambda a: a.astype("datetime64[s]"),
    "str": lambda a: a.astype("U3"),
    "structured": lambda a: np.rec.fromarrays([a, a], names="a,b").view(np.ndarray),
}


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_stack_of_non_numeric_values_is_refused(kind, model_args, tmp_path, capsys):
    data = NON_NUMERIC[kind](np.random.default_rng(0).integers(0, 200, (4, 40, 40)))
    stack = tmp_path / "stack.npy"
    np.save(stack, data)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[10, 10]]}]))
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "new" / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + model_args) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2: error: ") and err.count("\n") == 1, err
    assert str(np.load(stack, mmap_mode="r").dtype) in err and "integers or floats" in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no folder left behind
