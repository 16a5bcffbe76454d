"""bfloat16 autocast against float32 on the CPU: mask agreement and seconds per tracked frame.

Each case tracks the same prompts twice, once in float32 (``Tracker(..., dtype=None)``) and
once under bfloat16 autocast (``dtype=torch.bfloat16``), and compares per frame and object:
the IoU of the masks (logit > 0; two empty masks count as 1) and whether both runs agree that
the object is present (object score logit > 0). The mean signed change of mask area and of the
object score says whether differences are systematic (one direction) or rounding noise.

Cases (a case whose files are missing is skipped):

- ``small``: the tests' small random-weight network (tests/small_model.py), generated stack
- ``mini``: ../shared/reference/mini frames and weights
- ``t512``: ../shared/reference/t512 frames, sam2.1_hiera_tiny at 512 px with the weights of
  its ``make_weights.make_state_dict()``
- ``ct``: a CT stack of ../shared/data/ct_lesion (mask prompt from its lesion label on the
  slice with the largest lesion, tracked both ways) with the t512 weights
- ``tiny1024``: sam2.1_hiera_tiny at 1024 px with random weights on synthetic frames; also
  timed (seconds per propagated frame, the prompted frame excluded)

    python benchmarks/bench_precision.py [--threads 2] [--speed-frames 5] [--cases small,mini]

Random weights amplify rounding (no trained margin keeps logits away from 0), so a low
minimum IoU on them alone is not a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking import Tracker
from napari_sam2.tracking.device import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
CT_CASE = SHARED / "data" / "ct_lesion" / "CT_Lesion_000001_02_01_008-023"

# one tracked result: (frame, object id) -> (mask, present)
Outputs = dict[tuple[int, int], tuple[np.ndarray, bool, float]]
Prompt = Callable[[Tracker], list[tuple[int, bool]]]  # gives (start frame, reverse) passes


def _import_path(name: str, path: Path) -> Any:
    """A module from a file path (the reference folders and tests/ are no packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def track(
    model: Any, frames: Any, limits: Any, prompt: Prompt, dtype: Any
) -> tuple[Outputs, list[float]]:
    """The results of one run and the seconds each propagated (not prompted) frame took."""
    out: Outputs = {}
    seconds: list[float] = []
    with torch.inference_mode():
        tracker = Tracker(model, frames, contrast_limits=limits, dtype=dtype, feature_cache_bytes=0)
        passes = prompt(tracker)
        for start, reverse in passes:
            results: Iterator[Any] = tracker.propagate(start_frame=start, reverse=reverse)
            tic = time.perf_counter()
            for i, result in enumerate(results):
                toc = time.perf_counter()
                if i > 0:  # the start frame only encodes the prompts' memory
                    seconds.append(toc - tic)
                for j, oid in enumerate(result.object_ids):
                    score = float(result.object_score_logits[j])
                    out[result.frame_index, oid] = (result.mask_logits[j] > 0, score > 0, score)
                tic = time.perf_counter()
    return out, seconds


def compare(reference: Outputs, other: Outputs) -> dict[str, Any]:
    """IoU and presence agreement per (frame, object), and the mean signed changes."""
    ious, agree, area, score = [], [], [], []
    for key, (mask, present, logit) in reference.items():
        mask2, present2, logit2 = other[key]
        union = np.logical_or(mask, mask2).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(mask, mask2).sum() / union))
        agree.append(present == present2)
        area.append((int(mask2.sum()) - int(mask.sum())) / max(int(mask.sum()), 1))
        score.append(logit2 - logit)
    return {
        "results": len(ious),
        "iou_min": float(np.min(ious)),
        "iou_median": float(np.median(ious)),
        "presence_agree": float(np.mean(agree)),
        "presence_disagree_n": int(len(agree) - np.sum(agree)),
        "area_change_mean": float(np.mean(area)),
        "score_change_mean": float(np.mean(score)),
        "score_change_abs_mean": float(np.mean(np.abs(score))),
    }


def case_small() -> tuple[Any, Any, Any, Prompt]:
    sm = _import_path("small_model", ROOT / "tests" / "small_model.py")
    config = sm.small_config()
    model = build_sam2(config, checkpoint=sm.random_state_dict(config))
    stack = sm.moving_blob_stack(frames=12, size=96)

    def prompt(tr: Tracker) -> list[tuple[int, bool]]:
        tr.add_points(0, 1, np.array([[48.0, 24.0]]), np.array([1]))
        tr.add_box(0, 2, np.array([5.0, 55.0, 40.0, 90.0]))
        return [(0, False)]

    return model, stack, None, prompt


def case_mini() -> tuple[Any, Any, Any, Prompt] | None:
    folder = REFERENCE / "mini"
    if not (folder / "weights.pt").is_file():
        return None
    config = SAM2Config.from_dict(json.loads((folder / "config.json").read_text())["values"])
    model = build_sam2(config, checkpoint=folder / "weights.pt")
    frames = (np.load(folder / "frames.npy").astype(np.float64) / 255.0).astype(np.float32)

    def prompt(tr: Tracker) -> list[tuple[int, bool]]:
        tr.add_points(0, 1, np.array([[165.0, 102.0], [75.0, 210.0]]), np.array([1, 0]))
        tr.add_box(0, 2, np.array([30.0, 125.0, 180.0, 165.0]))
        return [(0, False)]

    return model, frames, (0.0, 1.0), prompt


def _t512_model() -> Any | None:
    folder = REFERENCE / "t512"
    if not (folder / "make_weights.py").is_file():
        return None
    make_weights = _import_path("t512_make_weights", folder / "make_weights.py")
    config = SAM2Config.from_name("sam2.1_hiera_tiny", image_size=512)
    return build_sam2(config, checkpoint=make_weights.make_state_dict(), device="cpu")


def case_t512() -> tuple[Any, Any, Any, Prompt] | None:
    model = _t512_model()
    if model is None:
        return None
    raw = np.load(REFERENCE / "t512" / "frames.npy")
    frames = (raw.astype(np.float64) / 255.0).astype(np.float32)

    def prompt(tr: Tracker) -> list[tuple[int, bool]]:
        # the reference scenario's prompts (t512/README.md)
        tr.add_points(0, 1, np.array([[330.0, 205.5], [150.0, 420.0]]), np.array([1, 0]))
        tr.add_box(1, 2, np.array([60.0, 250.0, 360.0, 330.0]))
        return [(0, False)]

    return model, frames, (0.0, 1.0), prompt


def case_ct() -> tuple[Any, Any, Any, Prompt] | None:
    import tifffile

    if not (CT_CASE / "image_zyx.tif").is_file():
        return None
    model = _t512_model()
    if model is None:
        return None
    image = tifffile.imread(CT_CASE / "image_zyx.tif")
    lesion = tifffile.imread(CT_CASE / "lesion_zyx.tif") > 0
    middle = int(np.argmax(lesion.sum(axis=(1, 2))))

    def prompt(tr: Tracker) -> list[tuple[int, bool]]:
        tr.add_mask(middle, 1, lesion[middle])
        return [(middle, False), (middle, True)]

    return model, image, (0.0, 255.0), prompt


def case_tiny1024(frames: int) -> tuple[Any, Any, Any, Prompt]:
    bench = _import_path("bench_tracker_speed", Path(__file__).with_name("bench_tracker_speed.py"))
    torch.manual_seed(0)
    model = build_sam2(SAM2Config.from_name("sam2.1_hiera_tiny"), device="cpu")
    stack = bench.synthetic_frames(frames, 1024)

    def prompt(tr: Tracker) -> list[tuple[int, bool]]:
        tr.add_points(0, 1, np.array([[0.4 * 1024, 0.35 * 1024]]), np.array([1]))
        return [(0, False)]

    return model, stack, (0.0, 255.0), prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--speed-frames", type=int, default=5, help="frames of tiny1024")
    parser.add_argument("--cases", default="small,mini,t512,ct,tiny1024")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"auto picks bf16 (measured): {cpu_has_fast_bf16()}"
    )
    makers = {
        "small": case_small,
        "mini": case_mini,
        "t512": case_t512,
        "ct": case_ct,
        "tiny1024": lambda: case_tiny1024(args.speed_frames),
    }
    header = (
        "| case | results | IoU min | IoU median | presence agree | mean area change "
        "| mean score change (abs) | s/frame f32 | s/frame bf16 |"
    )
    if not args.json:
        print(header)
        print("|" + "---|" * 9)
    for name in args.cases.split(","):
        made = makers[name]()
        if made is None:
            print(f"# {name}: skipped (files not found)")
            continue
        model, frames, limits, prompt = made
        f32, t32 = track(model, frames, limits, prompt, None)
        b16, t16 = track(model, frames, limits, prompt, torch.bfloat16)
        row = {"case": name, **compare(f32, b16)}
        row["s_per_frame_f32"] = float(np.mean(t32)) if t32 else float("nan")
        row["s_per_frame_bf16"] = float(np.mean(t16)) if t16 else float("nan")
        if args.json:
            print(json.dumps(row))
            continue
        print(
            f"| {name} | {row['results']} | {row['iou_min']:.3f} | {row['iou_median']:.3f} "
            f"| {row['presence_agree']:.1%} ({row['presence_disagree_n']} differ) "
            f"| {row['area_change_mean']:+.2%} "
            f"| {row['score_change_mean']:+.3f} ({row['score_change_abs_mean']:.3f}) "
            f"| {row['s_per_frame_f32']:.3f} | {row['s_per_frame_bf16']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
