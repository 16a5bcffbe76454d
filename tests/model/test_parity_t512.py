"""Scenario parity at 512 px: sam2.1_hiera_tiny at image_size 512 (the MedSAM2 configuration)
against the reference fixture ``shared/reference/t512`` (see its README.md).

The weights come from the maintainers' recipe ``t512/make_weights.py`` (imported from there by
path, not copied); the 5-step scenario of ``scenario.json`` runs once through the Tracker in
float32, as the reference did, and every result is compared with ``expected.npz`` at the
tolerances ``scenario.json`` states. One test: the steps are one sequence on one tracker; the
checks of all steps are collected and reported together, each naming its step and frame.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking import FrameResult, Tracker

SIZE = 512
LOW = SIZE // 4
DECIDED = 1e-3  # a pixel's mask bit must match where the expected logit is at least this far from 0


def _load_recipe(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("t512_make_weights", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(t512: Path, scenario: dict[str, Any]) -> list[list[tuple[FrameResult, np.ndarray]]]:
    """Run the scenario's steps; per step its results, each with the stored low-res logits
    (N, S/4, S/4) of its objects, copied at once (later steps replace stored outputs)."""
    recipe = _load_recipe(t512 / "make_weights.py")
    config = SAM2Config.from_name(scenario["model"]["name"], image_size=SIZE)
    model = build_sam2(config, checkpoint=recipe.make_state_dict(), device="cpu")
    frames = (np.load(t512 / "frames.npy").astype(np.float64) / 255.0).astype(np.float32)
    runs = []
    with torch.no_grad(), Tracker(model, frames, contrast_limits=(0.0, 1.0), device="cpu") as tr:
        for step in scenario["steps"]:
            op = step["op"]
            if op == "add_points":
                results = [
                    tr.add_points(
                        step["frame_index"],
                        step["object_id"],
                        np.array(step["points"]),
                        np.array(step["labels"]),
                    )
                ]
            elif op == "add_box":
                results = [
                    tr.add_box(step["frame_index"], step["object_id"], np.array(step["box"]))
                ]
            else:
                results = tr.propagate(
                    start_frame=step.get("start_frame"), reverse=step.get("reverse", False)
                )
            run = []
            for r in results:
                low = []
                for oid in r.object_ids:
                    out = tr.stored_output(oid, r.frame_index)
                    low.append(
                        np.full((LOW, LOW), np.nan, np.float32)
                        if out is None
                        else out.low_res[0, 0].float().cpu().numpy().copy()
                    )
                run.append((r, np.stack(low) if low else np.zeros((0, LOW, LOW), np.float32)))
            runs.append(run)
    return runs


def _upsample(low: np.ndarray) -> np.ndarray:
    """The frame-resolution logits the reference derives from its low-res logits."""
    t = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0].numpy()


@pytest.mark.slow
def test_t512_scenario(reference_dir: Path) -> None:
    """Every result of the t512 scenario matches the official outputs within the fixture's
    tolerances: frame order, object ids, score logits and presence, low-res logits, mask bits
    (where the expected logit is not near 0) and IoU, and the sampled frame-resolution logits."""
    t512 = reference_dir / "t512"
    if not (t512 / "expected.npz").is_file():
        pytest.skip(f"{t512} lacks the t512 fixture")
    scenario = json.loads((t512 / "scenario.json").read_text())
    tol = scenario["tolerances"]
    expected = np.load(t512 / "expected.npz")

    started = time.perf_counter()
    runs = _run(t512, scenario)
    seconds = time.perf_counter() - started

    problems: list[str] = []
    worst = {"score": 0.0, "lowres": 0.0, "frame_logits": 0.0, "sample": 0.0, "bits": 0}
    min_iou = 1.0
    records = scenario["results"]
    for step in range(len(scenario["steps"])):
        want_frames = [r["frame_index"] for r in records if r["step"] == step]
        got = runs[step]
        got_frames = [r.frame_index for r, _ in got]
        if got_frames != want_frames:
            problems.append(f"step {step}: frames {got_frames}, expected {want_frames}")
            continue
        for result, low in got:
            where = f"step {step} frame {result.frame_index}"
            prefix = f"s{step}_f{result.frame_index}_"
            ids = tuple(int(i) for i in expected[prefix + "object_ids"])
            # A prompt's result shows every object on its frame, the fixture stores only the
            # prompted one; a propagation's result must have exactly the fixture's objects.
            prompt = scenario["steps"][step]["op"] != "propagate"
            if not (set(ids) <= set(result.object_ids) if prompt else result.object_ids == ids):
                problems.append(f"{where}: object ids {result.object_ids}, expected {ids}")
                continue
            rows = [result.object_ids.index(i) for i in ids]
            logits = result.mask_logits[rows]
            scores = result.object_score_logits[rows]
            low = low[rows]
            if logits.shape != (len(ids), SIZE, SIZE) or logits.dtype != np.float32:
                problems.append(f"{where}: mask_logits {logits.dtype} {logits.shape}")
                continue

            exp_score = expected[prefix + "object_score_logits"]
            d_score = float(np.abs(scores - exp_score).max())
            worst["score"] = max(worst["score"], d_score)
            if d_score > tol["object_score_abs"]:
                problems.append(f"{where}: score logits off by {d_score:.2e}")
            if not np.array_equal(scores > 0, exp_score > 0):
                problems.append(f"{where}: presence {scores} vs {exp_score}")

            exp_low = expected[prefix + "lowres_logits"]
            d_low = float(np.abs(low - exp_low).max())  # NaN (no stored output) fails below
            worst["lowres"] = max(worst["lowres"], d_low)
            if not d_low <= tol["sampled_logit_abs"]:
                problems.append(f"{where}: low-res logits off by {d_low:.2e}")

            exp_frame = _upsample(exp_low)
            d_frame = float(np.abs(logits - exp_frame).max())
            worst["frame_logits"] = max(worst["frame_logits"], d_frame)
            if d_frame > tol["sampled_logit_abs"]:
                problems.append(f"{where}: frame-resolution logits off by {d_frame:.2e}")

            yx = expected[prefix + "sample_yx"].astype(np.intp)
            sampled = logits[:, yx[:, 0], yx[:, 1]]
            d_sample = float(np.abs(sampled - expected[prefix + "sample_logits"]).max())
            worst["sample"] = max(worst["sample"], d_sample)
            if d_sample > tol["sampled_logit_abs"]:
                problems.append(f"{where}: sampled logits off by {d_sample:.2e}")

            bits = np.unpackbits(expected[prefix + "mask_bits"], axis=1)[:, : SIZE * SIZE]
            exp_mask = bits.reshape(len(ids), SIZE, SIZE).astype(bool)
            mask = logits > 0
            decided = np.abs(exp_frame) > DECIDED
            flips = int((mask != exp_mask)[decided].sum())
            worst["bits"] = max(worst["bits"], flips)
            if flips:
                problems.append(f"{where}: {flips} mask pixels differ where |logit| > {DECIDED}")
            for i, oid in enumerate(ids):
                if exp_mask[i].sum() <= tol["mask_iou_where_expected_px_gt"]:
                    continue
                iou = (mask[i] & exp_mask[i]).sum() / (mask[i] | exp_mask[i]).sum()
                min_iou = min(min_iou, float(iou))
                if iou < tol["mask_iou_min"]:
                    problems.append(f"{where} object {oid}: mask IoU {iou:.5f}")

    summary = ", ".join(f"max |d {k}| {v:.2e}" for k, v in worst.items() if k != "bits")
    summary += f", min IoU {min_iou:.6f}, worst bit flips {worst['bits']}, run {seconds:.0f} s"
    print(f"t512 parity: {summary}")
    assert not problems, "t512 parity failures:\n" + "\n".join(problems) + f"\n({summary})"
