"""Peak resident memory of a tracking run over stacks of growing length.

Makes a (N, 512, 512) uint16 stack of drifting blobs for each N, prompts one object (a click;
``--objects 2`` adds a box around a second blob) on frame 0 and tracks it forward with
sam2.1_hiera_tiny with random weights (nothing to download), in a subprocess whose peak
resident set size (``ru_maxrss``) is read. A tracker whose memory is bounded grows by well
under 0.3 MB per frame.

``--path cli`` (default) runs ``napari-sam2 track`` once per N and reads ``ru_maxrss`` from
``os.wait4``. ``--path tracker`` goes through the Python API as the widget does: the stack in
memory, ``Tracker(model, stack)`` with the default feature cache, ``add_points`` and
``propagate``, in one subprocess for the largest N that reports its own ``ru_maxrss`` after
each frame (the peak after frame N is the peak of an N-frame run: frames are tracked in order
and nothing depends on later ones except the pointers' time scale). Where Linux allows it, the
peak is reset after each frame (``/proc/self/clear_refs``) so that each frame's own peak is
known too: the median of those over the 8 frames before each N tells a trend from the scatter
of single frames, and so does the largest peak of those 8 frames (the cumulative peak
is the largest over all frames so far: over more frames it picks a larger extreme of the same
scatter). After each frame the resident size is read too (after the tracker's trim: what the
frame leaves behind, without its temporaries); its growth tells a tracker that keeps more and
more from one that keeps the same and only peaks differently. ``--repeats N`` runs N
independent processes and reports every run's growth and their median, since a single run's
growth is the difference of two maxima over noisy frame peaks. ``--no-trim`` turns off
the per-frame ``malloc_trim`` of the tracker (napari_sam2.tracking.memory_trim) to measure
without it.

The tracker path also splits each frame's peak by step (image encoder, memory attention, mask
decoder, memory encoder): the resident size when the step starts and how far its own peak rises
above that, over the frames after the feature cache is full (frame 20 on). ``--threads`` sets
torch's threads. ``--in-thread`` tracks on a worker thread, as the widget does (napari's
``thread_worker``): glibc then serves the tracker from an arena of that thread's own.

    python benchmarks/bench_memory.py --frames 20 60 200 [--model sam2.1_hiera_tiny]
    python benchmarks/bench_memory.py --frames 24 64 --dtype float32  # track --precision float32
    python benchmarks/bench_memory.py --path tracker --frames 24 64 [--no-trim] [--dtype bfloat16]
    python benchmarks/bench_memory.py --path tracker --frames 24 64 --dtype bfloat16 --repeats 5
    python benchmarks/bench_memory.py --path tracker --frames 24 64 --threads 1
    python benchmarks/bench_memory.py --path tracker --frames 24 64 --dtype bfloat16 --in-thread
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile


def make_stack(path: Path, frames: int, size: int = 512) -> None:
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(0)

    def planes():
        for t in range(frames):
            cy, cx = 150 + 0.5 * t % 200, 200 + 0.3 * t % 200
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 30.0**2))
            blob2 = np.exp(-((yy - 380) ** 2 + (xx - 300 - 0.2 * t % 100) ** 2) / (2 * 20.0**2))
            noise = rng.normal(0, 0.05, (size, size))
            yield ((blob + blob2 + noise + 0.1) * 3000).clip(0, 65535).astype(np.uint16)

    tifffile.imwrite(
        path,
        planes(),
        shape=(frames, size, size),
        dtype=np.uint16,
        imagej=True,
        metadata={"axes": "TYX"},
    )


def run(frames: int, model: str, objects: int, workdir: Path, precision: str | None = None) -> dict:
    stack = workdir / f"stack_{frames}.tif"
    make_stack(stack, frames)
    prompts = workdir / "prompts.json"
    both = [
        {"frame": 0, "object_id": 1, "points": [[150, 200]]},
        {"frame": 0, "object_id": 2, "box": [350, 270, 410, 330]},
    ]
    prompts.write_text(json.dumps(both[:objects]))
    cmd = [
        sys.executable,
        "-m",
        "napari_sam2.cli",
        "track",
        str(stack),
        "--prompts",
        str(prompts),
        "--out",
        str(workdir / f"out_{frames}"),
        "--model",
        model,
        "--random-weights",
        "--device",
        "cpu",
        "--direction",
        "forward",
        "--quiet",
        "--format",
        "tiff",
        "csv",
    ]
    cmd += ["--precision", precision] if precision else []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return {"frames": frames, "peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}


STEPS = ("encode_image", "attend_to_memory", "predict_masks", "encode_memory")


def tracker_child(
    stack_path: str,
    objects: int,
    model_name: str,
    trim: bool,
    dtype: str | None,
    threads: int | None,
    in_thread: bool = False,
) -> None:
    """Run in the subprocess: track through the Python API, print per-frame peaks as JSON."""
    import resource

    import torch

    from napari_sam2.model import SAM2Config, build_sam2
    from napari_sam2.tracking import Tracker, memory_trim

    trim_seconds = [0.0]
    release = memory_trim.release_freed_memory

    def timed_release() -> bool:
        t0 = time.perf_counter()
        released = release()
        trim_seconds[0] += time.perf_counter() - t0
        return released

    memory_trim.release_freed_memory = timed_release if trim else (lambda: False)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    stack = tifffile.imread(stack_path)  # in memory, like a napari layer's data
    model = build_sam2(SAM2Config.from_name(model_name), device="cpu").eval()
    resettable = reset_peak()
    steps: dict[str, list[tuple[float, float]]] = {name: [] for name in STEPS}
    frame_peak = [0.0]  # the largest step peak of the current frame (steps reset the peak)
    if resettable:
        for name in STEPS:
            setattr(model, name, _step_peak(getattr(model, name), steps[name], frame_peak))
    if dtype == "float32":
        dtype = None  # the Tracker's own default
    tracker = Tracker(model, stack, dtype=dtype)  # default feature cache, as the widget
    tracker.add_points(0, 1, [(150, 200)], [1])
    if objects == 2:
        tracker.add_box(0, 2, [350, 270, 410, 330])
    for record in steps.values():
        record.clear()  # the prompt's steps are not a tracked frame's
    peaks, frame_peaks, levels = [], [], []

    def track() -> None:
        if threads:  # torch's thread count is per calling thread
            torch.set_num_threads(threads)
        for _ in tracker.propagate():
            if resettable:  # the peak of this frame alone, then start the next frame's afresh
                levels.append(status_mb("VmRSS"))  # what stays between frames (after the trim)
                frame_peaks.append(max(status_mb("VmHWM"), frame_peak[0]))
                frame_peak[0] = 0.0
                reset_peak()
                peaks.append(max(frame_peaks[-1], peaks[-1] if peaks else 0.0))
            else:
                peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    reset_peak()
    start = time.perf_counter()
    if in_thread:  # result() re-raises the worker's exception here
        with ThreadPoolExecutor(max_workers=1) as worker:
            worker.submit(track).result()
    else:
        track()
    seconds = time.perf_counter() - start
    out = {"peaks": peaks, "frame_peaks": frame_peaks, "levels": levels, "seconds": seconds}
    out["steps"] = steps
    print(json.dumps({**out, "trim_seconds": trim_seconds[0]}))


def _step_peak(fn, record: list, frame_peak: list):
    """fn, recording the resident size when it starts and its own peak (in MB)."""

    def step(*args, **kwargs):
        frame_peak[0] = max(frame_peak[0], status_mb("VmHWM"))  # the frame's peak so far
        reset_peak()
        before = status_mb("VmRSS")
        out = fn(*args, **kwargs)
        peak = status_mb("VmHWM")
        frame_peak[0] = max(frame_peak[0], peak)
        record.append((before, peak))
        return out

    return step


def status_mb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak() -> bool:
    """Reset the process's peak resident size (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``,
    which resets ``ru_maxrss`` too); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_tracker(frames: list[int], args: argparse.Namespace, workdir: Path) -> list:
    """Peak RSS after each of ``frames`` tracked frames, from one API run over the largest."""
    stack = workdir / f"stack_{max(frames)}.tif"
    make_stack(stack, max(frames))
    cmd = [sys.executable, __file__, "--child", str(stack), "--objects", str(args.objects)]
    cmd += ["--model", args.model]
    cmd += ["--no-trim"] if args.no_trim else []
    cmd += ["--dtype", args.dtype] if args.dtype else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--in-thread"] if args.in_thread else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    n = len(data["peaks"])
    print(
        f"tracked {n} frames in {data['seconds']:.1f} s ({data['seconds'] / n:.2f} s/frame), "
        f"malloc_trim {1000 * data['trim_seconds'] / n:.2f} ms/frame"
    )
    rows = [
        {"frames": f, "peak_rss_mb": data["peaks"][f - 1], "seconds": float("nan")} for f in frames
    ]
    # The cumulative peak is the largest of noisy per-frame peaks (a frame's temporaries land a
    # little differently each time); the median per-frame peak of the last 8 frames before each
    # size says whether the level itself moves.
    per_frame = data.get("frame_peaks") or []
    print_steps(data.get("steps") or {})
    for row in rows:
        window = per_frame[max(0, row["frames"] - 8) : row["frames"]]
        if window:
            row["median_frame_peak_mb"] = float(np.median(window))
            row["window_peak_mb"] = float(max(window))
        if data["levels"]:
            row["level_mb"] = data["levels"][row["frames"] - 1]
    return rows


def print_steps(steps: dict, first: int = 20) -> None:
    """Median resident size at the start of each step and its peak above that (median and
    standard deviation), over tracked frames ``first`` on."""
    if not any(len(v) > first for v in steps.values()):
        return
    print("| step | MB at start (median) | peak above start: median | std | max |")
    print("|---|---|---|---|---|")
    for name, records in steps.items():
        if len(records) <= first:
            continue
        before, peak = np.array(records[first:]).T
        rise = peak - before
        print(
            f"| {name} | {np.median(before):.1f} | {np.median(rise):.1f} | "
            f"{np.std(rise):.1f} | {np.max(rise):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 60, 200])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--objects", type=int, choices=(1, 2), default=1)
    parser.add_argument("--path", choices=("cli", "tracker"), default="cli")
    parser.add_argument("--no-trim", action="store_true", help="tracker path without malloc_trim")
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        help="tracker path: Tracker(dtype=...), bfloat16 the widget's default on CPUs where "
        "it measures faster (AMX) (default: float32, the Tracker's own default); cli path: "
        "--precision (default: auto)",
    )
    parser.add_argument("--threads", type=int, help="tracker path: torch threads")
    parser.add_argument(
        "--in-thread",
        action="store_true",
        help="tracker path: track on a worker thread, as the widget does",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="tracker path: independent runs (fresh processes), each reported, then all growths "
        "with their median: a run's growth is a difference of maxima over noisy frame peaks",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the tracker path's subprocess
    args = parser.parse_args()
    if args.child:
        tracker_child(
            args.child,
            args.objects,
            args.model,
            not args.no_trim,
            args.dtype,
            args.threads,
            args.in_thread,
        )
        return
    if args.repeats > 1 and args.path != "tracker":
        parser.error("--repeats is for --path tracker")
    growths: list[list[float]] = []
    for repeat in range(args.repeats):
        if args.repeats > 1:
            print(f"\n## run {repeat + 1} of {args.repeats}", flush=True)
        growths.append(report_growth(measure(args)))
    if args.repeats > 1:
        sizes = args.frames
        print(f"\n## {args.repeats} runs")
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            values = [g[i] for g in growths]
            within = sum(v <= 0.3 for v in values)
            print(
                f"growth {a} -> {b} frames: {', '.join(f'{v:.3f}' for v in values)} MB/frame; "
                f"median {np.median(values):.3f}; {within} of {len(values)} within 0.3"
            )


def measure(args: argparse.Namespace) -> list[dict]:
    """One run of each size (CLI) or one run over the largest (tracker path)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.path == "tracker":
            rows = run_tracker(args.frames, args, Path(tmp))
            for r in rows:
                median = r.get("median_frame_peak_mb")
                first = max(1, r["frames"] - 7)
                extra = "" if median is None else f"  (median frame peak, frames {first}-"
                extra += "" if median is None else f"{r['frames']}: {median:.1f} MB)"
                if "level_mb" in r:
                    extra += f"; resident after the frame {r['level_mb']:.1f} MB"
                print(f"{r['frames']:5d} frames  peak RSS {r['peak_rss_mb']:8.1f} MB{extra}")
        for n in args.frames if args.path == "cli" else []:
            rows.append(run(n, args.model, args.objects, Path(tmp), args.dtype))
            r = rows[-1]
            print(
                f"{r['frames']:5d} frames  peak RSS {r['peak_rss_mb']:8.1f} MB  "
                f"{r['seconds']:7.1f} s ({r['seconds'] / r['frames']:.2f} s/frame)",
                flush=True,
            )
    return rows


def report_growth(rows: list[dict]) -> list[float]:
    """Print the growth of the peak between consecutive sizes; returns it (MB per frame)."""
    growths = []
    for a, b in zip(rows, rows[1:], strict=False):
        frames = b["frames"] - a["frames"]
        growth = (b["peak_rss_mb"] - a["peak_rss_mb"]) / frames
        growths.append(growth)
        print(
            f"growth {a['frames']} -> {b['frames']} frames: {growth:.3f} MB/frame "
            f"({'ok' if growth <= 0.3 else 'ABOVE'} the 0.3 MB/frame bound)"
        )
        if "median_frame_peak_mb" in a and "median_frame_peak_mb" in b:
            level = (b["median_frame_peak_mb"] - a["median_frame_peak_mb"]) / frames
            print(f"  median per-frame peak: {level:+.3f} MB/frame")
            # the largest of the same number of frames at both sizes: a frame's scatter
            # without the bias of taking the maximum over more frames at the larger size
            top = (b["window_peak_mb"] - a["window_peak_mb"]) / frames
            print(f"  largest per-frame peak of the 8 frames before each size: {top:+.3f} MB/frame")
        if "level_mb" in a and "level_mb" in b:
            kept = (b["level_mb"] - a["level_mb"]) / frames
            print(f"  resident size between frames (what a frame leaves): {kept:+.3f} MB/frame")
    return growths


if __name__ == "__main__":
    main()
