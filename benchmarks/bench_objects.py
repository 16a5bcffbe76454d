"""Seconds per tracked frame for 1, 4 and 16 objects, batched vs one object at a time.

sam2.1_hiera_tiny with random weights (built from `SAM2Config.from_name`, nothing downloaded),
a generated uint8 stack of bright discs drifting over a textured background, at the model's
resolution (1024 px by default). All objects are clicked on frame 0 and tracked forward over
frames 1-6 (not timed) so that the timed frame has a full memory bank: the conditioning frame
and the six previous frames as spatial memories, seven object pointers. Then the same frame is
tracked again and again, batched and one object at a time (``Tracker`` with its
``_object_batch_size`` or 1), each time without cached image features, so every timed run
includes the image encoder. "batched" is the tracker's default batch size (4 objects on a CPU,
16 on a GPU; ``--batch`` sets it). Each object count has a tracker of its own (the first n
discs), and every repeat times every count and mode once, in alternating order, so that a
machine whose speed drifts during the run affects the ratios as little as possible.

    python benchmarks/bench_objects.py                       # --size 1024 --objects 1 4 16
    python benchmarks/bench_objects.py --size 512 --precision bfloat16 --repeats 3

The table gives the median wall seconds per tracked frame, the spread (min-max) over the
repeats, the image encoder's share, the time relative to one object (batched), the same for
the process's CPU time (all threads), which other jobs on a shared machine disturb less, and
(Linux) how far the frame's peak resident size rose above the resident size before it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
from bench_memory import reset_peak, status_mb  # benchmarks/ is the script's folder

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking import Tracker

WARM_FRAMES = 6  # tracked before timing: fills the spatial memory (num_maskmem - 1 frames)


def generated_stack(frames: int, size: int, objects: int, seed: int = 0) -> np.ndarray:
    """(frames, size, size) uint8: `objects` discs on a grid drifting right, smooth texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    side = int(np.ceil(np.sqrt(objects)))
    centres = [((i // side + 0.5) / side, (i % side + 0.5) / side) for i in range(objects)]
    radius = 0.25 / side
    out = np.empty((frames, size, size), np.uint8)
    for t in range(frames):
        img = 60 + 30 * np.sin(11 * x + 0.2 * t) * np.cos(7 * y)
        for cy, cx in centres:
            cx = cx + 0.01 * t
            img += 140 * (((y - cy) ** 2 + (x - cx) ** 2) < radius**2)
        img += rng.normal(0, 4, img.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def clicks(objects: int, size: int) -> list[tuple[float, float]]:
    side = int(np.ceil(np.sqrt(objects)))
    return [
        ((i // side + 0.5) / side * size, (i % side + 0.5) / side * size) for i in range(objects)
    ]


def timed_frame(
    tracker: Tracker, frame: int, batch: int, encoder: list[float]
) -> tuple[float, float, float, float]:
    """Wall seconds to track every object on `frame` (image features recomputed), the image
    encoder's share of them, the process's CPU seconds (all threads), and the MB the peak
    resident size rose above the resident size before the frame (NaN where unknown)."""
    tracker._object_batch_size = batch
    tracker.features.clear()
    before = sum(encoder)
    resettable = reset_peak()  # the peak is now the resident size
    rss = status_mb("VmRSS") if resettable else math.nan
    t0, c0 = time.perf_counter(), time.process_time()
    results = list(tracker.propagate(start_frame=frame, max_frames=0))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = status_mb("VmHWM") - rss if resettable else math.nan
    assert len(results) == 1
    return seconds, sum(encoder) - before, cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024, help="model input size (px)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="float32, or autocast to bfloat16 / float16 with float32 parameters",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="objects per batch (default: the tracker's)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = SAM2Config.from_name(args.model, image_size=args.size)
    model = build_sam2(config, device=args.device)
    encoder: list[float] = []
    original = model.encode_image

    def encode_image(*a, **k):
        t0 = time.perf_counter()
        out = original(*a, **k)
        if out.vision.device.type == "cuda":
            torch.cuda.synchronize()
        encoder.append(time.perf_counter() - t0)
        return out

    model.encode_image = encode_image

    counts = sorted(set(args.objects), reverse=True)
    most = counts[0]
    frames = generated_stack(WARM_FRAMES + 2, args.size, most)
    dtype = None if args.precision == "float32" else getattr(torch, args.precision)
    trackers = {}
    for n in counts:  # a tracker per object count: the first n discs clicked, then warmed up
        tracker = Tracker(model, frames, dtype=dtype)
        for oid, yx in enumerate(clicks(most, args.size)[:n], start=1):
            tracker.add_points(0, oid, [yx], [1])
        t0 = time.perf_counter()
        for _ in tracker.propagate(max_frames=WARM_FRAMES):
            pass
        print(f"warm-up ({n} objects, frames 0-{WARM_FRAMES}): {time.perf_counter() - t0:.1f} s")
        trackers[n] = tracker
    batched = args.batch or trackers[most]._object_batch_size
    frame = WARM_FRAMES + 1

    # Every repeat times every count and mode once, in an order reversed from one repeat to the
    # next: a shared machine that speeds up or slows down during the run (by 10-20 % over
    # minutes here) then affects every count alike, not only the counts timed in its slow phase.
    rows = {n: {"batched": [], "one at a time": []} for n in counts}
    plan = [(n, mode) for n in counts for mode in ("batched", "one at a time")]
    for rep in range(args.repeats):
        for n, mode in plan if rep % 2 == 0 else plan[::-1]:
            batch = batched if mode == "batched" else 1
            rows[n][mode].append(timed_frame(trackers[n], frame, batch, encoder))
            wall, _, cpu, _ = rows[n][mode][-1]
            print(f"{n:>3} objects, {mode:<14} {wall:.3f} s (CPU {cpu:.3f} s)", flush=True)

    first = rows[min(counts)]["batched"] if 1 in rows else None
    one = statistics.median(r[0] for r in first) if first else None
    one_cpu = statistics.median(r[2] for r in first) if first else None
    print()
    print(
        f"{args.model} at {args.size} px, {args.precision}, {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"batches of {batched}"
    )
    print(
        "| objects | mode | wall s / frame (median) | min-max | image encoder (s) "
        "| vs 1 object | CPU s / frame (median) | min-max | CPU vs 1 object "
        "| frame peak above RSS (MB, median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sorted(rows):
        for mode, runs in rows[n].items():
            secs = [r[0] for r in runs]
            cpus = [r[2] for r in runs]
            enc = statistics.median(r[1] for r in runs)
            med, med_cpu = statistics.median(secs), statistics.median(cpus)
            ratio = f"{med / one:.2f}x" if one else "-"
            ratio_cpu = f"{med_cpu / one_cpu:.2f}x" if one_cpu else "-"
            peak = statistics.median(r[3] for r in runs)
            print(
                f"| {n} | {mode} | {med:.3f} | {min(secs):.3f}-{max(secs):.3f} | {enc:.3f} "
                f"| {ratio} | {med_cpu:.3f} | {min(cpus):.3f}-{max(cpus):.3f} | {ratio_cpu} "
                f"| {peak:.0f} |"
            )


if __name__ == "__main__":
    main()
