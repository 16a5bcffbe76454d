"""The precision the front ends choose: bfloat16 autocast on CPUs with native bfloat16, float32
elsewhere, and the user's forced choice (CLI ``--precision``, ``track(precision=)``, widget)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_sam2.tracking import device as dev
from napari_sam2.tracking.tracker import Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from small_model import moving_blob_stack  # noqa: E402

FAST_FLAGS = {"amx_bf16", "avx512_bf16"}
# the detector itself, taken before any fixture (a conftest may pin it for other tests)
DETECTOR = dev.cpu_has_fast_bf16


@pytest.fixture
def detector_cache():
    """Clear the detector's cache around a test that changes what it reads."""
    DETECTOR.cache_clear()
    yield
    DETECTOR.cache_clear()


def test_cpuinfo_flags_are_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n"
    )
    assert dev.cpuinfo_flags(info) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert dev.cpuinfo_flags(tmp_path / "missing") is None


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/cpuinfo").is_file(),
    reason="needs /proc/cpuinfo",
)
def test_detection_agrees_with_proc_cpuinfo(monkeypatch, detector_cache):
    flags = dev.cpuinfo_flags()
    assert flags is not None
    monkeypatch.setattr(dev, "bf16_matmul_time_ratio", lambda: 0.2)  # as AMX measures
    expected = bool(flags & FAST_FLAGS) and torch.backends.mkldnn.is_available()
    assert DETECTOR() is expected


def test_cpuinfo_is_the_fallback_without_torch_probes(monkeypatch, detector_cache):
    monkeypatch.setattr(dev, "_torch_cpu_probe", lambda name: None)
    monkeypatch.setattr(dev.sys, "platform", "linux")
    monkeypatch.setattr(dev, "bf16_matmul_time_ratio", lambda: 0.2)
    monkeypatch.setattr(dev, "cpuinfo_flags", lambda path="/proc/cpuinfo": frozenset({"amx_bf16"}))
    assert DETECTOR() is torch.backends.mkldnn.is_available()
    DETECTOR.cache_clear()
    monkeypatch.setattr(dev, "cpuinfo_flags", lambda path="/proc/cpuinfo": frozenset({"avx2"}))
    assert DETECTOR() is False
    DETECTOR.cache_clear()
    monkeypatch.setattr(dev, "cpuinfo_flags", lambda path="/proc/cpuinfo": None)
    assert DETECTOR() is False


@pytest.mark.parametrize(
    ("ratio", "fast"), [(0.17, True), (0.75, True), (0.8, False), (1.8, False)]
)
def test_instructions_count_only_where_bfloat16_measures_faster(
    monkeypatch, detector_cache, ratio, fast
):
    # AVX512-BF16 without AMX measured 1.8 (a frame 1.48x slower), AMX 0.17 (a frame 0.33x)
    monkeypatch.setattr(dev, "_cpu_has_bf16_instructions", lambda: True)
    monkeypatch.setattr(dev, "bf16_matmul_time_ratio", lambda: ratio)
    assert DETECTOR() is fast
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", DETECTOR)  # undo the conftest's pin
    assert dev.autocast_dtype("cpu") == (torch.bfloat16 if fast else None)


def test_no_measurement_without_bfloat16_instructions(monkeypatch, detector_cache):
    def must_not_measure():
        raise AssertionError("measured bfloat16 on a CPU without bfloat16 instructions")

    monkeypatch.setattr(dev, "_cpu_has_bf16_instructions", lambda: False)
    monkeypatch.setattr(dev, "bf16_matmul_time_ratio", must_not_measure)
    assert DETECTOR() is False


def test_matmul_ratio_is_measured():
    ratio = dev.bf16_matmul_time_ratio(repeats=1)
    assert np.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize("fast", [True, False])
def test_auto_picks_bfloat16_exactly_on_fast_cpus(monkeypatch, fast):
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: fast)
    assert dev.autocast_dtype("cpu") == (torch.bfloat16 if fast else None)
    assert dev.autocast_dtype("cpu", "auto") == (torch.bfloat16 if fast else None)
    # a forced choice holds whatever the CPU
    assert dev.autocast_dtype("cpu", "float32") is None
    assert dev.autocast_dtype("cpu", "bfloat16") == torch.bfloat16
    assert dev.autocast_dtype("cpu", " BFloat16 ") == torch.bfloat16


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        dev.autocast_dtype("cpu", "half")
    assert dev.precision_label(None) == "float32"
    assert dev.precision_label(torch.bfloat16) == "bfloat16 autocast"


def test_tracker_default_stays_float32(small_model):
    tracker = Tracker(small_model, moving_blob_stack(frames=2, size=64))
    assert tracker.dtype == torch.float32 and tracker._autocast_dtype is None


def _presence(model, stack, dtype):
    with torch.inference_mode():
        tracker = Tracker(model, stack, dtype=dtype, feature_cache_bytes=0)
        tracker.add_points(0, 1, np.array([[48.0, 24.0]]), np.array([1]))
        tracker.add_box(0, 2, np.array([5.0, 55.0, 40.0, 90.0]))
        return {
            (r.frame_index, oid): (bool(r.object_score_logits[j] > 0), r.mask_logits[j] > 0)
            for r in tracker.propagate()
            for j, oid in enumerate(r.object_ids)
        }


def test_bfloat16_autocast_agrees_with_float32_on_presence(small_model):
    stack = moving_blob_stack(frames=8, size=96)
    f32 = _presence(small_model, stack, None)
    b16 = _presence(small_model, stack, torch.bfloat16)
    assert f32.keys() == b16.keys()
    agree = [f32[k][0] == b16[k][0] for k in f32]
    # random weights amplify rounding: most, not all, results must agree
    assert np.mean(agree) >= 0.8
    ious = []
    for k in f32:
        union = np.logical_or(f32[k][1], b16[k][1]).sum()
        ious.append(1.0 if union == 0 else np.logical_and(f32[k][1], b16[k][1]).sum() / union)
    assert np.median(ious) >= 0.9


def _cli_prompts(tmp_path: Path) -> tuple[Path, Path]:
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, moving_blob_stack(frames=5, size=96))
    prompts = tmp_path / "points.csv"
    prompts.write_text("index,axis-0,axis-1,axis-2\n0,0,48,24\n")
    return stack, prompts


def test_cli_float32_gives_the_tracker_default_labels(tmp_path, model_args, monkeypatch):
    from napari_sam2 import cli

    stack, prompts = _cli_prompts(tmp_path)
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)  # auto would be bfloat16
    seen = []
    original = cli._make_tracker

    def recording(model, frames, fill_hole_area, autocast):
        seen.append(autocast)
        return original(model, frames, fill_hole_area, autocast)

    def tracker_default(model, frames, fill_hole_area, autocast):
        # the Tracker's own default: no dtype argument at all
        return Tracker(model, frames, fill_hole_area=fill_hole_area, feature_cache_bytes=0)

    def run(out: Path, extra: list[str]) -> np.ndarray:
        argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
        assert cli.main(argv + model_args + extra) == 0
        return tifffile.imread(out / "labels.tif")

    monkeypatch.setattr(cli, "_make_tracker", recording)
    forced = run(tmp_path / "f32", ["--precision", "float32"])
    auto = run(tmp_path / "auto", [])
    assert seen == [None, torch.bfloat16]
    monkeypatch.setattr(cli, "_make_tracker", tracker_default)
    default = run(tmp_path / "default", [])
    assert np.array_equal(forced, default)
    assert forced.any() and auto.shape == forced.shape


def test_cli_refuses_an_unknown_precision(tmp_path, model_args, capsys):
    from napari_sam2 import cli

    stack, prompts = _cli_prompts(tmp_path)
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + model_args + ["--precision", "half"])
    assert exit_info.value.code == 2
    assert "--precision" in capsys.readouterr().err


def test_api_track_takes_the_precision(monkeypatch, small_model):
    from napari_sam2.api import track
    from napari_sam2.tracking.prompts_io import PromptRecord

    made = []
    original = Tracker.__init__

    def recording(self, *args, **kwargs):
        made.append(kwargs.get("dtype"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "__init__", recording)
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)
    stack = moving_blob_stack(frames=3, size=64)
    prompts = [PromptRecord(0, 1, "points", (np.array([[32.0, 16.0]]), np.array([1])))]
    with pytest.raises(ValueError, match="unknown precision"):
        track(stack, prompts, small_model, device="cpu", precision="half")
    assert made == []  # refused before any tracker is made
    for precision in ("float32", "auto", "bfloat16"):
        track(stack, prompts, small_model, device="cpu", precision=precision, max_frames=1)
    assert made == [None, torch.bfloat16, torch.bfloat16]


def test_widget_state_line_names_the_precision(monkeypatch, small_model):
    from napari_sam2.widget.model_controller import ModelController

    controller = ModelController(names=["sam2.1_hiera_tiny"])
    controller.use_model(small_model, "small")
    controller.set_device("cpu")
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)
    controller.record_loaded(controller.request(), small_model)
    assert controller.status().endswith(" · cpu · float32 · bfloat16 autocast")
    parameter = next(small_model.parameters())
    assert controller.compute_dtype(parameter) == torch.bfloat16

    controller.set_precision("float32")
    assert controller.status().endswith(" · cpu · float32")
    assert controller.compute_dtype(parameter) is None
    key = controller.key()
    assert controller.precision_of_key(key) == "float32"
    assert controller.request_for_key(key) == controller.request()  # same model, kept loaded

    controller.set_precision("auto")
    assert controller.precision_of_key(controller.key()) == "auto"
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: False)
    assert controller.status().endswith(" · cpu · float32")  # float32 on other CPUs

    controller.set_precision("bfloat16")
    assert controller.status().endswith(" · bfloat16 autocast")
    with pytest.raises(ValueError, match="unknown precision"):
        controller.set_precision("half")
