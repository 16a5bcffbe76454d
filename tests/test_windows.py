"""Intensity windows: CT presets and width/level, the MR percentile rule, and the way they reach
the network (FrameSource), the command line (--window, --measure) and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_sam2 import cli
from napari_sam2.api import prepare_frames
from napari_sam2.tracking.frames import IMAGENET_MEAN, IMAGENET_STD
from napari_sam2.tracking.intensity import (
    CT_WINDOWS,
    mr_limits,
    parse_window,
    resolve_window,
    robust_contrast_limits,
    window_limits,
)
from scripted_tracker import ScriptedObject, ScriptedTracker


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("soft tissue", (-160.0, 240.0)),
        ("abdomen", (-160.0, 240.0)),
        ("lung", (-1350.0, 150.0)),
        ("brain", (0.0, 80.0)),
        ("mediastinum", (-125.0, 225.0)),
        ("bone", (-500.0, 1300.0)),
    ],
)
def test_ct_presets_are_level_minus_and_plus_half_the_width(name, limits):
    assert window_limits(name) == limits
    width, level = CT_WINDOWS[name]
    assert window_limits((width, level)) == limits


def test_window_spellings_and_custom_width_level():
    assert parse_window("Soft-Tissue") == parse_window("soft_tissue") == "soft tissue"
    assert parse_window("MR") == "mr"
    assert window_limits("400,40") == (-160.0, 240.0)
    assert window_limits(" 1500 , -600 ") == (-1350.0, 150.0)
    assert window_limits([2000, 0]) == (-1000.0, 1000.0)
    with pytest.raises(ValueError, match="unknown window 'liver'.*lung"):
        parse_window("liver")
    with pytest.raises(ValueError, match="width must be > 0"):
        window_limits("0,40")
    with pytest.raises(ValueError, match="two numbers"):
        window_limits("400,40,3")
    with pytest.raises(ValueError, match="mr_limits"):
        window_limits("mr")


def test_mr_limits_are_percentiles_of_the_non_zero_voxels():
    rng = np.random.default_rng(0)
    volume = np.zeros((10, 64, 64), np.int16)  # the air around the body is 0
    volume[:, 16:48, 16:48] = rng.integers(200, 1200, (10, 32, 32))
    lo, hi = mr_limits(volume)
    inside = volume[volume != 0].astype(np.float64)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(inside, [0.5, 99.5])))
    assert lo > 190  # the zeros would have pulled it to 0
    assert robust_contrast_limits(volume)[0] == 0.0  # what the microscopy rule gives
    assert resolve_window(volume, "mr") == (lo, hi)
    assert mr_limits(np.zeros((3, 8, 8))) == (0.0, 1.0)


def test_mr_limits_read_a_sample_of_a_large_stack():
    reads = []

    class Counting:
        shape, dtype = (200, 1024, 1024), np.dtype(np.uint16)

        def __getitem__(self, index):
            reads.append(index)
            t, ys, xs = index
            return np.full((1024, 1024), t + 1, np.uint16)[ys, xs]

    lo, hi = mr_limits(Counting())
    assert len(reads) <= 16  # a few slices, each at a stride
    assert all(isinstance(r, tuple) and r[1].step > 1 for r in reads)
    assert 1 <= lo < hi <= 200


def test_windowed_frames_reach_the_model_as_expected():
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 2000, (3, 32, 32)).astype(np.int16)
    frames = prepare_frames(hu, 32, window="lung")
    assert frames.contrast_limits == (-1350.0, 150.0)
    x = frames.model_input(1)  # normalised RGB, (3, S, S)
    unit = np.clip((hu[1].astype(np.float64) + 1350.0) / 1500.0, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    back = (x * std + mean).numpy()
    np.testing.assert_allclose(back, np.broadcast_to(unit, back.shape), atol=1e-4)
    frames.close()
    with pytest.raises(ValueError, match="not both"):
        prepare_frames(hu, 32, window="lung", contrast_limits=(0, 1))


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def ct_volume(tmp_path):
    """A signed CT volume in HU (5 mm slices, 0.5 mm pixels) and a box prompt on slice 3."""
    rng = np.random.default_rng(2)
    volume = rng.integers(-1000, 1500, (6, 40, 48)).astype(np.int16)
    path = tmp_path / "ct.tif"
    tifffile.imwrite(path, volume, metadata={"axes": "ZYX", "spacing_xyz_mm": [0.5, 0.5, 5.0]})
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 3, "object_id": 1, "box": [10, 10, 20, 24]}]))
    return path, prompts


def scripted(monkeypatch) -> list:
    made = []

    def factory(model, frames, fill_hole_area, autocast):
        made.append(ScriptedTracker(frames, [ScriptedObject(1, (15, 17), radius=4, absent={0})]))
        return made[-1]

    monkeypatch.setattr(cli, "_make_tracker", factory)
    return made


@pytest.mark.parametrize(
    ("option", "limits"),
    [(["--window", "lung"], (-1350.0, 150.0)), (["--window", "400,40"], (-160.0, 240.0))],
)
def test_cli_window_sets_the_frames_limits(
    ct_volume, model_args, monkeypatch, tmp_path, option, limits
):
    stack, prompts = ct_volume
    made = scripted(monkeypatch)
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), *option]
    assert cli.main(argv + model_args) == 0
    assert made[0].frames.contrast_limits == limits
    record = json.loads((out / "run.json").read_text())
    assert record["contrast_limits"] == list(limits)
    assert record["options"]["window"] == option[1]


def test_cli_window_mr_and_exclusive_with_contrast_limits(
    ct_volume, model_args, monkeypatch, tmp_path, capsys
):
    stack, prompts = ct_volume
    made = scripted(monkeypatch)
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert cli.main(argv + model_args + ["--window", "MR"]) == 0
    assert made[0].frames.contrast_limits == mr_limits(tifffile.imread(stack))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + model_args + ["--window", "lung", "--contrast-limits", "0", "1"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    out = tmp_path / "bad"
    bad = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(bad + model_args + ["--window", "liver"]) == cli.EXIT_ERROR
    assert "--window liver: unknown window" in capsys.readouterr().err
    assert not out.exists()


def test_cli_window_with_the_small_model_and_measurements(ct_volume, model_args, tmp_path):
    """The real tracker and network end to end: --window lung and --measure."""
    stack, prompts = ct_volume
    out = tmp_path / "run"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + model_args + ["--window", "lung", "--measure"]) == 0
    labels = tifffile.imread(out / "labels.tif")
    header, *rows = (out / "measurements.csv").read_text().splitlines()
    assert header.startswith("object_id,voxels,volume,volume_unit")
    record = json.loads((out / "run.json").read_text())
    assert record["contrast_limits"] == [-1350.0, 150.0]
    assert record["outputs"]["measurements"]["path"] == "measurements.csv"
    if (labels == 1).any():
        (row,) = [r.split(",") for r in rows]
        assert int(row[1]) == int((labels == 1).sum())
        assert float(row[2]) == pytest.approx((labels == 1).sum() * 5 * 0.25 / 1000, rel=1e-5)
        assert row[3] == "mL"


def test_cli_measure_volume_and_time_lapse(ct_volume, model_args, monkeypatch, tmp_path):
    stack, prompts = ct_volume
    scripted(monkeypatch)
    out = tmp_path / "lesion.tif"  # NAME.tif: NAME.measurements.csv beside it
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--measure"]
    assert cli.main(argv + model_args) == 0
    text = (tmp_path / "lesion.measurements.csv").read_text().splitlines()
    (row,) = [dict(zip(text[0].split(","), r.split(","), strict=True)) for r in text[1:]]
    disk = (
        ScriptedTracker((6, 40, 48), [ScriptedObject(1, (15, 17), radius=4)]).mask_logits(3, 1) > 0
    )
    assert int(row["voxels"]) == 5 * int(disk.sum())  # absent on slice 0
    assert (row["first_slice"], row["last_slice"], row["length_unit"]) == ("1", "5", "mm")
    assert float(row["longest_diameter"]) == pytest.approx(8 * 0.5, abs=0.5)
    record = json.loads((tmp_path / "lesion.run.json").read_text())
    assert "measurements" in record["outputs"]
    # the same stack measured as a time-lapse: one row per frame where the object is
    out2 = tmp_path / "t"
    argv2 = ["track", str(stack), "--prompts", str(prompts), "--out", str(out2)]
    assert cli.main(argv2 + model_args + ["--measure", "t"]) == 0
    lines = (out2 / "measurements.csv").read_text().splitlines()
    assert lines[0].startswith("object_id,frame,pixels,area,area_unit")
    assert [line.split(",")[1] for line in lines[1:]] == ["1", "2", "3", "4", "5"]
    # measurements.csv is an output like the others: a second run needs --overwrite
    assert cli.main(argv2 + model_args + ["--measure"]) == cli.EXIT_ERROR


def test_cli_measurements_csv_may_not_replace_an_input(ct_volume, model_args, tmp_path, capsys):
    stack, prompts = ct_volume
    out = tmp_path / "x.tif"
    clash = tmp_path / "x.measurements.csv"
    clash.write_text("frame,object_id,y,x\n3,1,15,17\n")
    argv = ["track", str(stack), "--prompts", str(clash), "--out", str(out), "--measure"]
    assert cli.main(argv + model_args) == cli.EXIT_ERROR
    assert "would overwrite the prompt file" in capsys.readouterr().err


def test_api_track_window(ct_volume, small_model, monkeypatch):
    from napari_sam2 import api

    seen = []

    class Spy(api.FrameSource):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(api, "FrameSource", Spy)
    stack, prompts = ct_volume
    result = api.track(stack, prompts, small_model, device="cpu", window="bone")
    assert seen and all(f.contrast_limits == (-500.0, 1300.0) for f in seen)
    assert result.labels.shape == (6, 40, 48)
    table = api.measure(result.labels, scale=(5.0, 0.5, 0.5), units="mm")
    assert all(r.volume_unit == "mL" for r in table)
