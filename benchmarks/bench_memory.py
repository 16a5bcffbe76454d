"""Peak resident memory of a command-line run over stacks of growing length.

Makes a (N, 512, 512) uint16 stack of drifting blobs for each N, prompts one object (a click;
``--objects 2`` adds a box around a second blob) on frame 0
and runs ``napari-sam2 track`` (sam2.1_hiera_tiny with random weights: nothing to download)
in a subprocess, reading that process's peak resident set size (``ru_maxrss`` from
``os.wait4``). A tracker whose memory is bounded grows by well under 0.3 MB per frame.

    python benchmarks/bench_memory.py --frames 20 60 200 [--model sam2.1_hiera_tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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


def run(frames: int, model: str, objects: int, workdir: Path) -> dict:
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
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return {"frames": frames, "peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 60, 200])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--objects", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            rows.append(run(n, args.model, args.objects, Path(tmp)))
            r = rows[-1]
            print(
                f"{r['frames']:5d} frames  peak RSS {r['peak_rss_mb']:8.1f} MB  "
                f"{r['seconds']:7.1f} s ({r['seconds'] / r['frames']:.2f} s/frame)",
                flush=True,
            )
    for a, b in zip(rows, rows[1:], strict=False):
        growth = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["frames"] - a["frames"])
        print(
            f"growth {a['frames']} -> {b['frames']} frames: {growth:.3f} MB/frame "
            f"({'ok' if growth <= 0.3 else 'ABOVE'} the 0.3 MB/frame bound)"
        )


if __name__ == "__main__":
    main()
