"""The command line: outputs, interruption, bad input, and generated stacks with the character of
real data (16-bit and 8-bit time-lapses, a signed MR volume, a CT volume with millimetre
voxels, an RGB video) through the real tracker and the small random-weight model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from scripted_tracker import ScriptedObject, ScriptedTracker


@pytest.fixture
def small_stack(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(100, 3000, (6, 40, 50), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX"})
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            [
                {"frame": 0, "object_id": 1, "points": [[10, 10]]},
                {"frame": 0, "object_id": 2, "box": [20, 20, 35, 45]},
            ]
        )
    )
    return path, prompts


def scripted(monkeypatch, interrupt_after: int | None = None) -> list:
    made = []

    class Interrupting(ScriptedTracker):
        def propagate(self, *args, **kwargs):
            for i, r in enumerate(super().propagate(*args, **kwargs)):
                if interrupt_after is not None and i == interrupt_after:
                    raise KeyboardInterrupt
                yield r

    def factory(model, frames, fill_hole_area, autocast):
        t = Interrupting(
            frames,
            objects=[
                ScriptedObject(1, (10, 10), (0, 4), 4, absent={2}),
                ScriptedObject(2, (27, 32)),
            ],
            fill_hole_area=fill_hole_area,
        )
        made.append(t)
        return t

    monkeypatch.setattr(cli, "_make_tracker", factory)
    return made


def test_outputs_with_gaps_and_fill_holes_passed(tmp_path, small_stack, model_args, monkeypatch):
    stack, prompts = small_stack
    made = scripted(monkeypatch)
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + model_args + ["--format", "tiff", "ctc", "csv"]) == 0
    assert made[0].fill_hole_area == 8  # decision D4
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (6, 40, 50) and labels.dtype == np.uint16
    assert [bool((labels[t] == 1).any()) for t in range(6)] == [True, True, False, True, True, True]
    assert (labels == 2).any(axis=(1, 2)).all()
    assert (out / "ctc" / "res_track.txt").read_text().splitlines() == [
        "1 0 1 0",
        "2 0 5 0",
        "3 3 5 1",
    ]
    lines = (out / "presence.csv").read_text().splitlines()
    assert len(lines) == 1 + 12
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.series[0].axes == "TYX"
    assert not list(tmp_path.glob(".napari-sam2-*"))  # scratch removed


def test_ctrl_c_leaves_valid_partial_output(tmp_path, small_stack, model_args, monkeypatch, capsys):
    stack, prompts = small_stack
    scripted(monkeypatch, interrupt_after=3)
    out = tmp_path / "partial.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + model_args + ["--direction", "forward"]) == 130
    assert "interrupted: 3 of 6 frames" in capsys.readouterr().err
    labels = tifffile.imread(out)
    assert labels.shape == (6, 40, 50)
    assert (labels[:3] == 2).any(axis=(1, 2)).all() and not labels[3:].any()
    assert (tmp_path / "partial.csv").read_text().count("\n") == 1 + 6


def test_range_and_reverse_from_the_command_line(tmp_path, small_stack, model_args, monkeypatch):
    stack, prompts = small_stack
    made = scripted(monkeypatch)
    out = tmp_path / "r.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--format", "tiff"]
    extra = ["--direction", "reverse", "--start", "4", "--max-frames", "2"]
    assert cli.main(argv + model_args + extra) == 0
    assert made[0].calls[-1] == ("propagate", (4, True, 2))
    labels = tifffile.imread(out)
    assert [bool(labels[t].any()) for t in range(6)] == [False, False, True, True, True, False]
    assert not (tmp_path / "r.csv").exists()


BAD = {
    "unknown model": (["--model", "sam9_huge"], "unknown model"),
    "device not there": (["--device", "cuda:7"], "not available"),
    "channel axis not chosen": ("rgba", "choose one channel"),
    "wrong number of axes": ("5d", "fixed index"),
    "point outside": ({"frame": 0, "object_id": 1, "points": [[100, 10]]}, "outside"),
    "frame beyond": ({"frame": 9, "object_id": 1, "points": [[1, 1]]}, "beyond the stack"),
    "zero-area box": ({"frame": 0, "object_id": 1, "box": [5, 5, 5, 9]}, "zero area"),
    "empty mask": ({"frame": 0, "object_id": 1, "mask": "empty.tif"}, "mask is empty"),
    "empty prompt file": ("", "empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_error_and_output_untouched(tmp_path, small_config_file, case, capsys):
    what, message = BAD[case]
    stack = np.zeros((4, 30, 30), np.uint8)
    if what == "rgba":
        stack = np.zeros((4, 30, 30, 4), np.uint8)
    if what == "5d":
        stack = np.zeros((2, 3, 4, 30, 30), np.uint8)
    np.save(tmp_path / "s.npy", stack)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((30, 30), np.uint8))
    prompts = tmp_path / "p.json"
    item = what if isinstance(what, dict) else {"frame": 0, "object_id": 1, "points": [[5, 5]]}
    prompts.write_text(json.dumps([item]))
    if what == "":
        prompts = tmp_path / "p.csv"
        prompts.write_text("")
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")
    argv = ["track", str(tmp_path / "s.npy"), "--prompts", str(prompts), "--out", str(out)]
    argv += ["--device", "cpu", "--quiet"] + (what if isinstance(what, list) else [])
    if not (isinstance(what, list) and "--model" in what):
        argv += ["--config", str(small_config_file), "--random-weights"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "napari-sam2: error:" in err and message in err
    assert out.read_bytes() == b"previous result"
    assert {p.name for p in tmp_path.iterdir()} == {"s.npy", "empty.tif", "out.tif", "p.json"} | {
        prompts.name
    }


# --- generated stacks through the real tracker and the small model ------------------------


def cells(
    shape: tuple[int, int, int],
    dtype,
    background: float,
    signal: float,
    noise: float,
    seed: int = 0,
    count: int = 3,
    channels: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels): ``count`` discs drifting through a (T or Z, Y, X) stack on a noisy
    background, with ``channels`` colour channels last if given (each disc its own colour)."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    centres = rng.uniform([0.3 * h, 0.3 * w], [0.7 * h, 0.7 * w], (count, 2))
    velocity = rng.uniform(-1.5, 1.5, (count, 2))
    radii = rng.uniform(0.08, 0.12, count) * min(h, w)
    colours = rng.uniform(0.3, 1.0, (count, max(channels, 1)))
    labels = np.zeros(shape, np.uint16)
    image = np.full(shape + ((channels,) if channels else ()), float(background))
    for f in range(t):
        for k in range(count):
            cy, cx = centres[k] + f * velocity[k]
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radii[k] ** 2
            labels[f][disc] = k + 1
            image[f][disc] += signal * (colours[k] if channels else colours[k, 0])
    image += rng.normal(0, noise, image.shape)
    info = np.iinfo(dtype)
    return np.clip(np.rint(image), info.min, info.max).astype(dtype), labels


def centroid_prompts(labels_tyx: np.ndarray, frame: int, count: int, path) -> list[int]:
    ids = [int(k) for k in np.unique(labels_tyx[frame]) if k][:count]
    rows = ["index,axis-0,axis-1,axis-2,object_id,positive"]
    for i, k in enumerate(ids):
        ys, xs = np.nonzero(labels_tyx[frame] == k)
        j = len(ys) // 2
        rows.append(f"{i},{frame},{ys[j]},{xs[j]},{i + 1},1")
    path.write_text("\n".join(rows) + "\n")
    return ids


# name: (stack shape, dtype, background, signal, noise, colour channels, axes, TIFF metadata)
STACKS = {
    # fluorescence nuclei, 16-bit with values ~60..520 (Cell Tracking Challenge style)
    "uint16_nuclei": ((6, 70, 64), np.uint16, 80, 400, 20, 0, "TYX", {}),
    # 16-bit nuclei over the whole range, saturated where bright
    "uint16_full_range": ((5, 64, 64), np.uint16, 300, 70000, 2000, 0, "TYX", {}),
    # phase contrast, 8-bit: cells darker than the background
    "uint8_phase": ((6, 60, 60), np.uint8, 160, -90, 12, 0, "TYX", {}),
    # MR volume, signed 16-bit with negative values, 3 mm voxels
    "int16_signed_mr": (
        (7, 46, 58),
        np.int16,
        -40,
        700,
        30,
        0,
        "ZYX",
        {"spacing_xyz_mm": [3.0] * 3},
    ),
    # natural video: RGB, 8-bit, colour last
    "rgb_video": ((5, 48, 64), np.uint8, 40, 180, 10, 3, "TYXS", {}),
}


@pytest.mark.parametrize("name", list(STACKS))
def test_generated_stacks_through_the_cli(name, model_args, tmp_path):
    shape, dtype, background, signal, noise, channels, axes, extra = STACKS[name]
    image, gt = cells(shape, dtype, background, signal, noise, channels=channels)
    if dtype == np.int16:
        assert image.min() < 0  # really signed values
    path = tmp_path / "stack.tif"
    photometric = "rgb" if channels else "minisblack"
    tifffile.imwrite(path, image, photometric=photometric, metadata={"axes": axes, **extra})
    frame = gt.shape[0] // 2
    assert len(centroid_prompts(gt, frame, 2, tmp_path / "p.csv")) == 2
    out = tmp_path / "out"
    argv = ["track", str(path), "--prompts", str(tmp_path / "p.csv"), "--out", str(out)]
    assert cli.main(argv + model_args + ["--format", "tiff", "csv"]) == 0
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.series[0].axes == axes[:3]  # the colour axis is gone
        labels = tif.asarray()
        spacing = (tif.imagej_metadata or {}).get("spacing")
    assert labels.shape == gt.shape and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 1, 2}
    if extra:
        assert spacing == pytest.approx(3.0)
    rows = [r.split(",") for r in (out / "presence.csv").read_text().splitlines()[1:]]
    assert {int(r[1]) for r in rows} == set(range(gt.shape[0]))  # both directions
    assert {int(r[0]) for r in rows} == {1, 2}
    assert all(np.isfinite(float(r[2])) for r in rows)  # a score logit for every frame


def test_ct_volume_keeps_anisotropic_spacing(model_args, tmp_path):
    """A windowed CT sub-volume (8-bit, 5 mm slices, 0.314 mm pixels, the spacing in the TIFF
    description as the CT data sets write it) with a lesion that enters and leaves along z."""
    rng = np.random.default_rng(3)
    z, h, w = 12, 96, 112
    zz, yy, xx = np.mgrid[:z, :h, :w]
    lesion = ((zz - 5.5) / 3.5) ** 2 + ((yy - 50) / 14) ** 2 + ((xx - 60) / 18) ** 2 < 1
    volume = 90 + 70 * lesion + rng.normal(0, 15, lesion.shape)
    image = tmp_path / "image_zyx.tif"
    spacing_mm = [0.31445300579071045, 0.31445300579071045, 5.0]
    tifffile.imwrite(
        image,
        np.clip(volume, 0, 255).astype(np.uint8),
        metadata={"axes": "ZYX", "spacing_xyz_mm": spacing_mm},
    )
    assert not lesion[0].any() and not lesion[-1].any()  # enters and leaves
    z = int(np.argmax(lesion.sum(axis=(1, 2))))
    ys, xs = np.nonzero(lesion[z])
    prompts = tmp_path / "p.json"
    box = [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]
    prompts.write_text(json.dumps([{"frame": z, "object_id": 1, "box": box}]))
    out = tmp_path / "lesion.tif"
    argv = ["track", str(image), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + model_args + ["--format", "tiff", "ctc"]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == lesion.shape
        assert tif.imagej_metadata["unit"] in ("mm", "millimeter")
        spacing = tif.imagej_metadata["spacing"]
        xres = tif.pages[0].tags["XResolution"].value
    assert spacing == pytest.approx(5.0, rel=1e-3)
    assert xres[1] / xres[0] == pytest.approx(0.3144530, rel=1e-3)
    # the CTC export holds the same segmentation, one mask file per slice
    masks = sorted((tmp_path / "lesion_ctc").glob("mask*.tif"))
    assert len(masks) == lesion.shape[0]
    labelled = [bool(tifffile.imread(m).any()) for m in masks]
    assert labelled == [bool((plane == 1).any()) for plane in tifffile.imread(out)]


def test_dask_and_zarr_stacks_match_numpy(small_config_file, small_checkpoint, tmp_path):
    import dask.array as da
    import zarr

    from napari_sam2.api import track
    from napari_sam2.tracking.prompts_io import PromptRecord

    stack, gt = cells((3, 80, 72), np.uint16, 300, 2500, 60, seed=4)  # 3 frames: fast lane
    ys, xs = np.nonzero(gt[0] == 1)
    prompts = [PromptRecord(0, 1, "points", (np.array([[ys[0], xs[0]]], float), np.array([1])))]
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, dtype=stack.dtype)
    z[:] = stack
    kwargs = dict(model=small_config_file, checkpoint=small_checkpoint, device="cpu")
    ref = track(stack, prompts, **kwargs)
    assert ref.labels.shape == stack.shape
    assert [r.frame for r in ref.table.rows] == list(range(3))
    assert ref.labels.any()  # the labels compared below are not all background
    for other in (da.from_array(stack, chunks=(1, 40, 36)), z):
        got = track(other, prompts, **kwargs)
        assert np.array_equal(got.labels, ref.labels)
        assert [r.score_logit for r in got.table.rows] == [r.score_logit for r in ref.table.rows]


@pytest.mark.parametrize(("precision", "mapped"), [("float32", True), ("bfloat16", False)])
def test_float32_runs_map_large_tensors_bfloat16_runs_leave_the_allocator(
    tmp_path, small_stack, model_args, monkeypatch, precision, mapped
):
    # float32 keeps its peak flat with glibc's fixed mmap threshold; bfloat16 frames would be
    # 1.6x slower with it and stay flat with their tracker's trimming (memory_trim.HeapTrimmer)
    stack, prompts = small_stack
    made = scripted(monkeypatch)
    calls: list[int] = []
    monkeypatch.setattr(cli, "_map_large_tensors", lambda: calls.append(1))
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o.tif")]
    argv += ["--precision", precision]
    assert cli.main(argv + model_args) == 0
    assert len(made) == 1
    assert calls == ([1] if mapped else [])


def test_run_track_as_a_library_leaves_the_allocator_alone(
    tmp_path, small_stack, model_args, monkeypatch
):
    # batch workers call run_track inside the user's process: only main(), which owns its
    # process, may fix glibc's mmap threshold
    stack, prompts = small_stack
    scripted(monkeypatch)
    calls: list[int] = []
    monkeypatch.setattr(cli, "_map_large_tensors", lambda: calls.append(1))
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o.tif")]
    args = cli.build_parser().parse_args(argv + model_args + ["--precision", "float32"])
    assert cli.run_track(args) == 0
    assert calls == []
