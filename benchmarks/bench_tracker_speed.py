"""Seconds per frame of the tracker on CPU, split into image encoder, memory attention and rest.

sam2.1_hiera_tiny with random weights (no download), 20 smooth synthetic 512 x 512 uint8 frames,
one object prompted by a click on frame 0, then one forward propagation over all frames.

    python benchmarks/bench_tracker_speed.py [--frames 20] [--threads 2]
    python benchmarks/bench_tracker_speed.py --device cuda --autocast bfloat16 --size 1024
    python benchmarks/bench_tracker_speed.py --size 1024 --frames 24 --compare bfloat16

The timings of the model steps are taken by wrapping the model's methods; "rest" is the
propagation time not spent in them (memory-bank assembly, result resizing, bookkeeping).

``--compare-trim`` times the tracker's heap trimming (``memory_trim.HeapTrimmer``: every 8
frames under autocast, every frame in float32) against a trim after every frame, in blocks of
4 frames alternating in one tracker; the first frame of each block, which inherits the other
block's heap, is not counted.

``--compare DTYPE`` tracks the same frames twice in one process, in float32 and under DTYPE
autocast (two models with the same random weights), alternating frame by frame, and prints
both times per tracked frame and their ratio: a machine whose speed drifts (shared cores)
slows both alike, which separate runs cannot promise. ``--profile-frames K`` then runs its
last K frames of each precision under torch.profiler and splits their time by kind of
operation (the categories of bench_profile.py), to show which work each precision speeds up.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from bench_profile import categorize

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking import Tracker, memory_trim

STEPS = {
    "encode_image": "image encoder",
    "attend_to_memory": "memory attention",
    "predict_masks": "mask decoder",
    "encode_memory": "memory encoder",
}


def synthetic_frames(n: int, size: int) -> np.ndarray:
    """A bright blob drifting over a smooth textured background, uint8 (n, size, size)."""
    y, x = np.mgrid[0:size, 0:size] / size
    frames = []
    for t in range(n):
        cy, cx = 0.4 + 0.01 * t, 0.35 + 0.012 * t
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.01)
        texture = 0.25 * np.sin(12 * x + t * 0.1) * np.cos(9 * y)
        frames.append(np.clip(60 + 150 * blob + 40 * texture, 0, 255))
    return np.stack(frames).astype(np.uint8)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def instrument(model: torch.nn.Module, totals: dict[str, float], cpu: dict[str, float]) -> None:
    """Accumulate wall and process CPU time of the model's per-step methods (on a GPU, each
    step waits for its kernels, which costs a little overlap)."""
    device = next(model.parameters()).device
    for name in STEPS:
        original = getattr(model, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            _synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            out = _original(*args, **kwargs)
            _synchronize(device)
            totals[_name] += time.perf_counter() - t0
            cpu[_name] += time.process_time() - c0
            return out

        setattr(model, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    parser.add_argument(
        "--autocast",
        default=None,
        choices=["bfloat16", "float16"],
        help="autocast dtype on a GPU (default: float32 throughout)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        choices=["bfloat16", "float16"],
        help="alternate float32 and this autocast dtype frame by frame in one process",
    )
    parser.add_argument(
        "--profile-frames",
        type=int,
        default=0,
        help="with --compare: profile the last K frames of each precision by kind of operation",
    )
    parser.add_argument(
        "--compare-trim",
        action="store_true",
        help="the tracker's heap trimming against a trim after every frame, alternating",
    )
    args = parser.parse_args()
    if args.compare and not 0 <= args.profile_frames < args.frames - 1:
        parser.error(
            f"--profile-frames must leave tracked frames to time: 0 to {args.frames - 2} "
            f"with --frames {args.frames}"
        )

    if args.compare_trim and args.frames < 17:
        parser.error("--compare-trim needs --frames 17 or more (blocks of 4 after frame 8)")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args)
        return
    if args.compare_trim:
        compare_trim(args)
        return
    model = build_sam2(SAM2Config.from_name(args.model), device=args.device).eval()
    frames = synthetic_frames(args.frames, args.size)
    tracker = Tracker(model, frames, dtype=args.autocast)
    totals: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    instrument(model, totals, cpu)

    c = args.size / 2
    t0 = time.perf_counter()
    tracker.add_points(0, 1, [(c, c)], [1])
    prompt_s = time.perf_counter() - t0
    prompt_parts = {k: round(v, 2) for k, v in totals.items()}
    totals.clear()
    cpu.clear()
    load_before = os.getloadavg()[0]

    per_frame = []
    t0, c0 = time.perf_counter(), time.process_time()
    last = t0
    for _ in tracker.propagate():
        now = time.perf_counter()
        per_frame.append(now - last)
        last = now
    total = time.perf_counter() - t0
    total_cpu = time.process_time() - c0
    tracked = args.frames - 1  # frame 0 is the prompted (conditioning) frame, reused

    print(
        f"# {args.model}, {args.frames} frames of {args.size}x{args.size}, "
        f"torch {torch.__version__}, device {args.device}, autocast {args.autocast}, "
        f"{args.threads} threads, "
        f"load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"
    )
    print(f"prompt on frame 0 (encoder + decoder): {prompt_s:.2f} s {prompt_parts}")
    print()
    print("| step | wall s / tracked frame | share | process CPU s / tracked frame |")
    print("|---|---|---|---|")
    accounted = accounted_cpu = 0.0
    for name, label in STEPS.items():
        accounted += totals[name]
        accounted_cpu += cpu[name]
        print(
            f"| {label} | {totals[name] / tracked:.3f} | {totals[name] / total:.0%} "
            f"| {cpu[name] / tracked:.3f} |"
        )
    rest, rest_cpu = total - accounted, total_cpu - accounted_cpu
    print(
        f"| rest (memory bank, bookkeeping, resizing) | {rest / tracked:.3f} | "
        f"{rest / total:.0%} | {rest_cpu / tracked:.3f} |"
    )
    print(f"| **total** | **{total / tracked:.3f}** | 100% | {total_cpu / tracked:.3f} |")
    print(f"\n{tracked / total:.2f} tracked frames per second")
    steady = per_frame[8:]
    if steady:
        print(f"\nsteady state (frames 8+, full memory bank): {np.mean(steady):.3f} s / frame")


def compare(args: argparse.Namespace) -> None:
    """float32 against args.compare autocast, frames alternating between the two trackers."""
    frames = synthetic_frames(args.frames, args.size)
    dtypes = {"float32": None, args.compare: args.compare}
    runs = {}
    for name, dtype in dtypes.items():
        torch.manual_seed(0)  # the same random weights for both
        model = build_sam2(SAM2Config.from_name(args.model), device=args.device).eval()
        tracker = Tracker(model, frames, dtype=dtype)
        c = args.size / 2
        tracker.add_points(0, 1, [(c, c)], [1])
        runs[name] = tracker.propagate()
    times: dict[str, list[float]] = {name: [] for name in runs}
    kinds: dict[str, dict[str, float]] = {name: defaultdict(float) for name in runs}
    profiled = args.frames - args.profile_frames
    load_before = os.getloadavg()[0]
    for frame in range(args.frames):
        for name, frames_left in runs.items():
            if frame >= profiled:  # not timed: the profiler slows them
                profile_kinds(lambda frames_left=frames_left: next(frames_left), kinds[name])
                continue
            t0 = time.perf_counter()
            next(frames_left)
            times[name].append(time.perf_counter() - t0)
    reference, fast = (np.array(times[name][1:]) for name in dtypes)  # frame 0: the prompt's
    print(
        f"# {args.model}, {args.frames} frames of {args.size}x{args.size}, "
        f"torch {torch.__version__}, device {args.device}, {args.threads} threads, "
        f"frames alternating; load average before/after: {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"\n| frames | float32 s / frame | {args.compare} s / frame | ratio |")
    print("|---|---|---|---|")
    for label, part in (("all tracked", slice(None)), ("steady state (8+)", slice(7, None))):
        if not len(reference[part]):
            continue
        f32, low = reference[part].mean(), fast[part].mean()
        print(f"| {label} ({len(reference[part])}) | {f32:.3f} | {low:.3f} | {low / f32:.3f}x |")
    print(f"\nper-frame ratios: median {np.median(fast / reference):.3f}x")
    if args.profile_frames:
        print_kinds(kinds, args.profile_frames)


def compare_trim(args: argparse.Namespace) -> None:
    """The tracker's trim policy against a trim after every frame, blocks of 4 alternating."""
    model = build_sam2(SAM2Config.from_name(args.model), device=args.device).eval()
    tracker = Tracker(model, synthetic_frames(args.frames, args.size), dtype=args.autocast)
    c = args.size / 2
    tracker.add_points(0, 1, [(c, c)], [1])
    trimmer = tracker._heap_trimmer
    own = trimmer.after_frame
    every_frame = [False]
    trimmer.after_frame = lambda: memory_trim.release_freed_memory() if every_frame[0] else own()
    policies = (f"every {trimmer.every_frames} frames (the tracker's)", "after every frame")
    times: dict[str, list[float]] = {name: [] for name in policies}
    frames_left = tracker.propagate()
    next(frames_left)  # the prompted frame
    for frame in range(1, args.frames):
        every_frame[0] = (frame // 4) % 2 == 1
        t0 = time.perf_counter()
        next(frames_left)
        seconds = time.perf_counter() - t0
        if frame >= 8 and frame % 4:  # full memory bank; not a block's first frame
            times[policies[every_frame[0]]].append(seconds)
    print(
        f"# {args.model}, {args.frames} frames of {args.size}x{args.size}, "
        f"torch {torch.__version__}, device {args.device}, autocast {args.autocast}, "
        f"{args.threads} threads, blocks of 4 frames alternating"
    )
    print("\n| heap trim | frames | mean s / frame | median s / frame |")
    print("|---|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {len(seconds)} | {np.mean(seconds):.4f} | {np.median(seconds):.4f} |")


def profile_kinds(step: Callable[[], object], seconds: dict[str, float]) -> None:
    """Run step under torch.profiler and add its operators' own time to seconds by kind (on the
    calling thread: an operator's parallel work is inside its time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    for event in prof.key_averages():
        seconds[categorize(event.key)] += event.self_cpu_time_total / 1e6
        seconds["all operators"] += event.self_cpu_time_total / 1e6


def print_kinds(kinds: dict[str, dict[str, float]], frames: int) -> None:
    """Operators' own time per frame by kind for each precision."""
    reference, fast = kinds
    print(f"\noperators' own time per profiled frame ({frames} frames of each precision):\n")
    print(f"| kind | {reference} s | {fast} s | ratio |")
    print("|---|---|---|---|")
    order = sorted(kinds[reference], key=lambda k: -kinds[reference][k])
    for kind in order:
        a, b = kinds[reference][kind] / frames, kinds[fast][kind] / frames
        print(f"| {kind} | {a:.3f} | {b:.3f} | {b / a if a else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
