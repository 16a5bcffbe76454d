"""benchmarks/gpu_checks.py: its CPU dry run (``--device cpu --quick``) keeps working, and
without a CUDA device it stops at once with a message instead of failing later."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_checks.py"


@pytest.fixture(scope="module")
def gpu_checks():
    spec = importlib.util.spec_from_file_location("gpu_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_checks"] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_on_cpu_writes_the_summary(gpu_checks, tmp_path):
    # parity runs pytest in a subprocess (a collection of its own): left out here for time
    code = gpu_checks.main(
        [
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--quick",
            "--checks",
            "bf16,speed,memory,profile,compile",
        ]
    )
    summary = json.loads((tmp_path / "gpu_checks.json").read_text())
    checks = summary["checks"]
    assert code == 0, {k: (v["status"], v.get("reason")) for k, v in checks.items()}
    assert checks["parity"]["status"] == "skipped"
    for name in ("bf16", "speed", "memory", "profile", "compile"):
        assert checks[name]["status"] == "ok", (name, checks[name])
    modes = {(r["mode"], r["objects"]) for r in checks["speed"]["runs"] + checks["compile"]["runs"]}
    assert {("eager", 1), ("eager", 2), ("compile-encoder", 1)} <= modes
    assert all(r["fps"] > 0 for r in checks["speed"]["runs"])
    (compiled,) = checks["compile"]["runs"]
    assert compiled["graphs"] >= 1 and compiled["graph_breaks"] == 0  # the encoder, whole
    assert set(checks["memory"]["peak_mb_after_frames"]) >= {"2", "4"}
    assert checks["bf16"]["cases"]["small4"]["presence_agree"] >= 0.9
    assert checks["profile"]["wall_ms_per_frame"] > 0
    assert "aten::" in (tmp_path / "profile.txt").read_text()  # the operations' table
    md = (tmp_path / "gpu_checks.md").read_text()
    assert "| speed | ok |" in md and "91 FPS" in md


def test_a_check_that_does_not_fit_the_budget_is_skipped(gpu_checks, tmp_path):
    code = gpu_checks.main(
        ["--out", str(tmp_path), "--device", "cpu", "--quick", "--budget-s", "0"]
    )
    checks = json.loads((tmp_path / "gpu_checks.json").read_text())["checks"]
    assert code == 0
    assert {c["status"] for c in checks.values()} == {"skipped"}
    assert all("budget" in c["reason"] for c in checks.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_it_says_so_and_exits_2(gpu_checks, tmp_path, capsys):
    assert gpu_checks.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu_checks.json").exists()


def test_preloaded_inputs_are_those_of_the_frame_source(gpu_checks):
    from napari_sam2.tracking import FrameSource

    stack = gpu_checks.moving_disc_stack(3, 32)
    pre = gpu_checks.preloaded_source(stack, 64, torch.device("cpu"))
    plain = FrameSource(stack, 64, contrast_limits=(0, 255), prefetch=0)
    for i in range(3):
        assert torch.equal(pre.model_input(i), plain.model_input(i))
        # the tracker names the device it prepares frames on (its own, on a GPU)
        assert torch.equal(pre.model_input(i, device="cpu"), plain.model_input(i, device="cpu"))


def test_unknown_check_names_are_refused(gpu_checks, tmp_path):
    with pytest.raises(SystemExit):
        gpu_checks.main(["--out", str(tmp_path), "--checks", "speed,nonsense"])
