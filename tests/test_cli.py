"""The command line: outputs, interruption, bad input, real stacks with the mini model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam2 import cli
from scripted_tracker import ScriptedObject, ScriptedTracker


@pytest.fixture
def mini_args(mini_dir) -> list[str]:
    return [
        "--config",
        str(mini_dir / "config.json"),
        "--checkpoint",
        str(mini_dir / "weights.pt"),
        "--device",
        "cpu",
        "--quiet",
    ]


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


def test_outputs_with_gaps_and_fill_holes_passed(tmp_path, small_stack, mini_args, monkeypatch):
    stack, prompts = small_stack
    made = scripted(monkeypatch)
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + mini_args + ["--format", "tiff", "ctc", "csv"]) == 0
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


def test_ctrl_c_leaves_valid_partial_output(tmp_path, small_stack, mini_args, monkeypatch, capsys):
    stack, prompts = small_stack
    scripted(monkeypatch, interrupt_after=3)
    out = tmp_path / "partial.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + mini_args + ["--direction", "forward"]) == 130
    assert "interrupted: 3 of 6 frames" in capsys.readouterr().err
    labels = tifffile.imread(out)
    assert labels.shape == (6, 40, 50)
    assert (labels[:3] == 2).any(axis=(1, 2)).all() and not labels[3:].any()
    assert (tmp_path / "partial.csv").read_text().count("\n") == 1 + 6


def test_range_and_reverse_from_the_command_line(tmp_path, small_stack, mini_args, monkeypatch):
    stack, prompts = small_stack
    made = scripted(monkeypatch)
    out = tmp_path / "r.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--format", "tiff"]
    extra = ["--direction", "reverse", "--start", "4", "--max-frames", "2"]
    assert cli.main(argv + mini_args + extra) == 0
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
def test_bad_input_is_a_clear_error_and_output_untouched(tmp_path, mini_dir, case, capsys):
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
        argv += ["--config", str(mini_dir / "config.json"), "--random-weights"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "napari-sam2: error:" in err and message in err
    assert out.read_bytes() == b"previous result"
    assert {p.name for p in tmp_path.iterdir()} == {"s.npy", "empty.tif", "out.tif", "p.json"} | {
        prompts.name
    }


# --- real stacks through the real tracker and the mini model ------------------------------


def centroid_prompts(labels_tyx: np.ndarray, frame: int, count: int, path) -> list[int]:
    ids = [int(k) for k in np.unique(labels_tyx[frame]) if k][:count]
    rows = ["index,axis-0,axis-1,axis-2,object_id,positive"]
    for i, k in enumerate(ids):
        ys, xs = np.nonzero(labels_tyx[frame] == k)
        j = len(ys) // 2
        rows.append(f"{i},{frame},{ys[j]},{xs[j]},{i + 1},1")
    path.write_text("\n".join(rows) + "\n")
    return ids


REAL = {
    "ctc_sim_nuclei": ("ctc_sim_nuclei/images_tyx.tif", "ctc_sim_nuclei/labels_tyx.tif", "TYX"),
    "laptrack_nuclei": ("laptrack_nuclei/images_tyx.tif", "laptrack_nuclei/labels_tyx.tif", "TYX"),
    "c2c12_phase": ("c2c12_phase/images_tyx.tif", "c2c12_phase/labels_tyx.tif", "TYX"),
    "mr_signed": ("totalseg/mr_image_zyx.tif", "totalseg/mr_labels_zyx.tif", "ZYX"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL))
def test_real_stacks_through_the_cli(name, data_dir, mini_args, tmp_path):
    image, truth, axes = data_dir / REAL[name][0], data_dir / REAL[name][1], REAL[name][2]
    if not image.exists():
        pytest.skip(f"{image} is absent")
    gt = tifffile.imread(truth)
    frame = gt.shape[0] // 2
    centroid_prompts(gt, frame, 2, tmp_path / "p.csv")
    out = tmp_path / "out"
    argv = ["track", str(image), "--prompts", str(tmp_path / "p.csv"), "--out", str(out)]
    assert cli.main(argv + mini_args + ["--format", "tiff", "csv"]) == 0
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.series[0].axes == axes
        labels = tif.asarray()
    assert labels.shape == gt.shape and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 1, 2}
    rows = (out / "presence.csv").read_text().splitlines()[1:]
    assert {int(r.split(",")[1]) for r in rows} == set(range(gt.shape[0]))  # both directions


@pytest.mark.slow
def test_ct_volume_keeps_anisotropic_spacing(data_dir, mini_args, tmp_path):
    cases = sorted((data_dir / "ct_lesion").glob("*/image_zyx.tif"))
    if not cases:
        pytest.skip("ct_lesion data is absent")
    image = cases[0]
    lesion = tifffile.imread(image.parent / "lesion_zyx.tif")
    z = int(np.argmax(lesion.sum(axis=(1, 2))))
    ys, xs = np.nonzero(lesion[z])
    prompts = tmp_path / "p.json"
    box = [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]
    prompts.write_text(json.dumps([{"frame": z, "object_id": 1, "box": box}]))
    out = tmp_path / "lesion.tif"
    argv = ["track", str(image), "--prompts", str(prompts), "--out", str(out)]
    assert cli.main(argv + mini_args + ["--format", "tiff", "ctc"]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == lesion.shape
        spacing = tif.imagej_metadata["spacing"]
        xres = tif.pages[0].tags["XResolution"].value
    assert spacing == pytest.approx(5.0, rel=1e-3)
    assert xres[1] / xres[0] == pytest.approx(0.3144530, rel=1e-3)
    assert (tmp_path / "lesion_ctc" / "res_track.txt").exists()


@pytest.mark.slow
def test_dask_and_zarr_stacks_match_numpy(data_dir, mini_dir, tmp_path):
    import dask.array as da
    import zarr

    from napari_sam2.api import track
    from napari_sam2.tracking.prompts_io import PromptRecord

    path = data_dir / "laptrack_nuclei" / "images_tyx.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    stack = tifffile.imread(path)
    gt = tifffile.imread(data_dir / "laptrack_nuclei" / "labels_tyx.tif")
    ys, xs = np.nonzero(gt[0] == np.unique(gt[0])[1])
    prompts = [PromptRecord(0, 1, "points", (np.array([[ys[0], xs[0]]], float), np.array([1])))]
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, dtype=stack.dtype)
    z[:] = stack
    kwargs = dict(model=mini_dir / "config.json", checkpoint=mini_dir / "weights.pt", device="cpu")
    ref = track(stack, prompts, **kwargs)
    for other in (da.from_array(stack, chunks=(1, 100, 100)), z):
        got = track(other, prompts, **kwargs)
        assert np.array_equal(got.labels, ref.labels)
        assert [r.score_logit for r in got.table.rows] == [r.score_logit for r in ref.table.rows]
