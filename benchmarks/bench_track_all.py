"""What automatic tracking costs on CPU: a discovery frame, and each tracked object.

sam2.1_hiera_tiny with random weights (no download) on a generated uint8 stack. Measured on
one tracker, so the image features are shared as in a Track all run:

- ``encode``: the image encoder on a new frame (paid once per frame, tracked or not);
- ``discovery``: ``tracker.segment_everything`` on a frame whose features are cached (the
  decoder on the point grid, filtering and NMS), at ``--points-per-side``;
- ``per object``: one more tracked object on a frame (memory attention, mask decoder, memory
  encoder), from propagating 1 and ``--objects`` objects over the same frames.

    python benchmarks/bench_track_all.py [--size 1024] [--frames 4] [--objects 4]
        [--points-per-side 32] [--precision bfloat16|float32] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking import Tracker


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stack(frames: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    out = [np.clip(60 + 40 * np.sin(12 * x + t) * np.cos(9 * y), 0, 255) for t in range(frames)]
    return np.stack(out).astype(np.uint8)


def seconds_per_frame(model, frames, objects: int, dtype) -> float:
    """Mean seconds of a tracked frame with ``objects`` objects (features not cached)."""
    size = frames.shape[1]
    with Tracker(model, frames, contrast_limits=(0, 255), dtype=dtype) as tracker:
        for k in range(objects):
            y = size * (k + 1) // (objects + 1)
            tracker.add_points(0, k + 1, [[y, size // 2]], [1])
        run = tracker.propagate()
        next(run)  # frame 0: the prompts
        t0 = time.perf_counter()
        count = sum(1 for _ in run)
        return (time.perf_counter() - t0) / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--precision", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_sam2(SAM2Config.from_name(args.model)).eval()
    dtype = torch.bfloat16 if args.precision == "bfloat16" else None
    frames = stack(args.frames + 1, args.size)

    with Tracker(model, frames, contrast_limits=(0, 255), dtype=dtype) as tracker:
        t0 = time.perf_counter()
        tracker.segment_everything(0, points_per_side=2)  # encodes frame 0, cheap grid
        encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        records = tracker.segment_everything(0, points_per_side=args.points_per_side)
        discovery = time.perf_counter() - t0

    one = seconds_per_frame(model, frames, 1, dtype)
    many = seconds_per_frame(model, frames, args.objects, dtype)
    per_object = (many - one) / (args.objects - 1)
    print(f"CPU: {cpu_name()}, {args.threads} threads")
    print(f"{args.model} at {args.size} px, {args.precision}, random weights")
    print("| step | seconds |\n|---|---|")
    print(f"| image encoder + 2x2 grid, one frame | {encode:.2f} |")
    print(
        f"| discovery: {args.points_per_side}x{args.points_per_side} grid on cached features "
        f"({len(records)} masks kept) | {discovery:.2f} |"
    )
    print(f"| tracked frame, 1 object | {one:.2f} |")
    print(f"| tracked frame, {args.objects} objects | {many:.2f} |")
    print(f"| each object beyond the first | {per_object:.2f} |")


if __name__ == "__main__":
    main()
