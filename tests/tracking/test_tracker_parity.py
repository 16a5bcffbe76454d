"""Scenario parity of the Tracker against the reference fixtures (shared/reference/mini).

The 9-step scenario of ``mini/scenario.json`` runs once per precision. Steps 0-3 are compared
with ``video.npz`` (float32) / ``video_f64.npz`` (float64); steps 4-8 with
``video_variant_correct_as_cond.npz`` (project decision D1; float32 arrays, so float32
tolerances in both precisions). Besides the arrays, every decoder decision and the memory bank
(frames, temporal rows, pointer distances) of every computed output is checked against the
records in ``scenario.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cuda_testing import ieee_float32
from napari_sam2.model import build_sam2
from napari_sam2.tracking import FrameResult, Tracker

F32 = {"logits": 1e-3, "score": 5e-4, "ptr": 1e-4, "memory": 0.07}
F64 = {"logits": 1e-6, "score": 1e-6, "ptr": 1e-6, "memory": 1e-6}
LAST_DEFAULT_STEP = 3  # steps after this are compared with the correct-as-cond variant


@dataclass
class Snapshot:
    result: FrameResult
    stored: dict[int, dict[str, np.ndarray] | None]


@dataclass
class StepRun:
    results: list[Snapshot] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)


def _snapshot(tracker: Tracker, result: FrameResult) -> Snapshot:
    stored = {}
    for oid in result.object_ids:
        out = tracker.stored_output(oid, result.frame_index)
        stored[oid] = (
            None
            if out is None
            else {
                "low_res": out.low_res[0, 0].double().cpu().numpy().copy(),
                "obj_ptr": out.obj_ptr[0].double().cpu().numpy().copy(),
                "memory": None
                if out.memory is None
                else out.memory[0].double().cpu().numpy().copy(),
            }
        )
    return Snapshot(result, stored)


def _run_scenario(
    mini_dir, mini_config, dtype: torch.dtype, device: str = "cpu"
) -> tuple[list[StepRun], dict]:
    scenario = json.loads((mini_dir / "scenario.json").read_text())
    video = np.load(mini_dir / "video.npz")
    frames = np.load(mini_dir / "frames.npy")
    model = build_sam2(mini_config, checkpoint=mini_dir / "weights.pt").to(dtype)
    tracker = Tracker(model, frames, contrast_limits=(0, 1), device=device)
    tracker.debug_trace = []
    runs = []
    for step in scenario["steps"]:
        call = step["call"]
        start = len(tracker.debug_trace)
        op = call["op"]
        if op == "add_points":
            r = tracker.add_points(
                call["frame_index"], call["object_id"], call["points"], call["labels"]
            )
            results = [r]
        elif op == "add_box":
            results = [tracker.add_box(call["frame_index"], call["object_id"], call["box"])]
        elif op == "add_mask":
            mask = video["input_step6_mask"]
            results = [tracker.add_mask(call["frame_index"], call["object_id"], mask)]
        else:
            results = tracker.propagate(call["start_frame"], call["reverse"], call["max_frames"])
        run = StepRun()
        for r in results:
            run.results.append(_snapshot(tracker, r))
        run.trace = tracker.debug_trace[start:]
        runs.append(run)
    return runs, scenario


CUDA = pytest.param(
    "cuda-float32",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)


@pytest.fixture(scope="module", params=["float32", "float64", CUDA])
def scenario_run(request, mini_dir, mini_config):
    device, _, precision = request.param.rpartition("-")
    with ieee_float32():
        runs, scenario = _run_scenario(
            mini_dir, mini_config, getattr(torch, precision), device or "cpu"
        )
    return precision, runs, scenario


def _expected(mini_dir, precision: str, step: int) -> tuple[Any, dict[str, float]]:
    if step > LAST_DEFAULT_STEP:
        return np.load(mini_dir / "video_variant_correct_as_cond.npz"), F32
    if precision == "float64":
        return np.load(mini_dir / "video_f64.npz"), F64
    return np.load(mini_dir / "video.npz"), F32


def _step_records(scenario: dict, step: int) -> dict:
    if step > LAST_DEFAULT_STEP:
        variant = scenario["variants"]["correct_as_cond"]["steps"]
        return next(s for s in variant if s["index"] == step)
    return scenario["steps"][step]


def _upsample(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(low.astype(np.float64))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def test_scenario_arrays(scenario_run, mini_dir):
    """Every step's results and stored outputs match the reference arrays (the steps run in
    order on one tracker, so they are checked in order; messages name the step)."""
    for step in range(len(scenario_run[1])):
        _check_step_arrays(scenario_run, mini_dir, step)


def _check_step_arrays(scenario_run, mini_dir, step: int) -> None:
    precision, runs, scenario = scenario_run
    expected, tol = _expected(mini_dir, precision, step)
    records = _step_records(scenario, step)["results"]
    got = runs[step].results
    assert [s.result.frame_index for s in got] == [r["frame_index"] for r in records]
    for snap, record in zip(got, records, strict=True):
        res = snap.result
        prefix = f"s{step}_f{res.frame_index}_"
        where = f"step {step} frame {res.frame_index}"
        assert res.object_ids == tuple(record["object_ids"]), where
        n = len(res.object_ids)
        assert res.mask_logits.dtype == np.float32 and res.mask_logits.shape == (n, 256, 256)
        assert res.object_score_logits.dtype == np.float32

        placeholder = np.array([o["placeholder"] for o in record["objects"]])
        present = np.array([o["present"] for o in record["objects"]])
        np.testing.assert_array_equal(res.present, present, err_msg=where)
        np.testing.assert_array_equal(res.has_output, ~placeholder, err_msg=where)
        assert np.all(res.mask_logits[placeholder] == -1024.0), where

        exp_scores = expected[prefix + "object_score_logits"]
        np.testing.assert_allclose(
            res.object_score_logits, exp_scores, rtol=0, atol=tol["score"], err_msg=where
        )

        exp_low = expected[prefix + "lowres_logits"]
        low = np.stack(
            [
                np.full((64, 64), -1024.0) if snap.stored[o] is None else snap.stored[o]["low_res"]
                for o in res.object_ids
            ]
        )
        np.testing.assert_allclose(low, exp_low, rtol=0, atol=tol["logits"], err_msg=where)

        name = prefix + "mask_logits"
        exp_frame = expected[name] if name in expected else _upsample(exp_low, (256, 256))
        np.testing.assert_allclose(
            res.mask_logits, exp_frame, rtol=0, atol=tol["logits"], err_msg=where
        )
        decided = np.abs(exp_frame) > 1e-3
        np.testing.assert_array_equal(
            (res.mask_logits > 0)[decided], (exp_frame > 0)[decided], err_msg=where
        )

        if prefix + "obj_ptr" in expected:
            for i, o in enumerate(res.object_ids):
                if placeholder[i]:
                    continue
                np.testing.assert_allclose(
                    snap.stored[o]["obj_ptr"],
                    expected[prefix + "obj_ptr"][i],
                    rtol=0,
                    atol=tol["ptr"],
                    err_msg=f"{where} object {o} pointer",
                )
        if prefix + "maskmem_features" in expected:
            for i, o in enumerate(res.object_ids):
                if not record["objects"][i]["maskmem_row_valid"]:
                    continue
                mem = snap.stored[o]["memory"]
                assert mem is not None, f"{where} object {o} has no memory"
                np.testing.assert_allclose(
                    mem,
                    expected[prefix + "maskmem_features"][i],
                    rtol=0,
                    atol=tol["memory"],
                    err_msg=f"{where} object {o} memory",
                )


def test_scenario_decisions_and_memory_bank(scenario_run):
    """Decoder decisions and memory-bank contents equal the reference records exactly, at
    every step of the scenario."""
    for step in range(len(scenario_run[1])):
        _check_step_decisions(scenario_run, step)


def _check_step_decisions(scenario_run, step: int) -> None:
    _, runs, scenario = scenario_run
    records = _step_records(scenario, step)["results"]
    trace = [t for t in runs[step].trace if t["kind"] in ("prompt", "track")]
    checked = 0
    for record in records:
        for obj in record["objects"]:
            decoder = obj["decoder"]
            where = f"step {step} frame {record['frame_index']} object {obj['object_id']}"
            matches = [
                t
                for t in trace
                if t["frame"] == record["frame_index"] and t["object_id"] == obj["object_id"]
            ]
            if decoder is None:
                assert not matches, f"{where}: reused in the reference but recomputed here"
                continue
            assert len(matches) == 1, where
            entry = matches[0]
            decision = entry["decision"]
            assert decision["multimask"] == decoder["multimask_output"], where
            assert decision["selected_token"] == [decoder["selected_token"]], where
            assert entry["mask_prompt"] == decoder["mask_prompt_given"], where
            memory = obj["memory"]
            if memory is None or "spatial_memories" not in memory:
                assert entry["spatial"] is None, f"{where}: expected no memory attention"
            else:
                spatial = [
                    (m["frame"], m["maskmem_tpos_enc_index"]) for m in memory["spatial_memories"]
                ]
                assert entry["spatial"] == spatial, where
                # The reference identifies pointers by value: identical pointers (no_obj_ptr of
                # absent frames) list every candidate frame.
                expected = memory["object_pointers"]
                got = entry["pointers"]
                assert [d for _, d in got] == [p["signed_distance"] for p in expected], where
                for (frame, _), p in zip(got, expected, strict=True):
                    assert frame in p["frame"], where
            checked += 1
    assert checked == len(trace), f"step {step}: computed outputs the reference did not compute"
