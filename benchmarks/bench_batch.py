"""Stacks per hour of ``napari-sam2 batch`` on a local cluster of 1 and 2 worker processes.

    python benchmarks/bench_batch.py                       # the tests' small network
    python benchmarks/bench_batch.py --network tiny --stacks 3 --frames 5 --size 256

Generated time-lapses (a bright disc moving on noise, one click on frame 0), CPU. The cluster
is started and its workers import torch before the clock starts (start-up is printed apart);
the time counted is that of ``run_batch``: planning, every stack (the model loads once per
worker), the summary.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from napari_sam2.batch import run_batch  # noqa: E402
from small_model import moving_blob_stack, write_checkpoint, write_config  # noqa: E402


def _warm() -> None:
    """Import torch and the tracking code in a worker (seconds, once per process)."""
    import napari_sam2.api  # noqa: F401
    import napari_sam2.cli  # noqa: F401


def make_manifest(folder: Path, stacks: int, frames: int, size: int) -> Path:
    """``stacks`` generated stacks with one click each, and their manifest."""
    rows = [["stack", "prompts"]]
    for i in range(stacks):
        stack = moving_blob_stack(frames=frames, size=size, seed=i)
        tifffile.imwrite(folder / f"s{i}.tif", stack, photometric="minisblack")
        (folder / f"s{i}.csv").write_text(f"frame,y,x\n0,{size // 2},{size // 4}\n")
        rows.append([f"s{i}.tif", f"s{i}.csv"])
    with open(folder / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return folder / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("small", "tiny"), default="small")
    parser.add_argument("--stacks", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--torch-threads", type=int, help="torch threads per worker (default: cores / workers)"
    )
    args = parser.parse_args()

    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_manifest(root, args.stacks, args.frames, args.size)
        if args.network == "small":
            model = {
                "config": write_config(root / "small.json"),
                "checkpoint": write_checkpoint(root / "small.pt"),
            }
        else:
            model = {"model": "sam2.1_hiera_tiny", "random_weights": True}
        print(
            f"{args.stacks} stacks of {args.frames} x {args.size} x {args.size}, "
            f"network {args.network}, {os.cpu_count()} cores"
        )
        print("| workers | cluster start (s) | batch (s) | stacks / hour | s / stack |")
        print("|---|---|---|---|---|")
        for count in args.workers:
            started = time.perf_counter()
            with (
                distributed.LocalCluster(
                    n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                client.run(_warm)  # imports are start-up, not work per stack
                startup = time.perf_counter() - started
                started = time.perf_counter()
                summary = run_batch(
                    manifest,
                    root / f"out{count}",
                    client=client,
                    device="cpu",
                    quiet=True,
                    torch_threads=args.torch_threads or max(1, (os.cpu_count() or 1) // count),
                    **model,
                )
                seconds = time.perf_counter() - started
            assert summary.exit_status == 0, summary.failed
            print(
                f"| {count} | {startup:.1f} | {seconds:.1f} | "
                f"{args.stacks / seconds * 3600:.0f} | {seconds / args.stacks:.2f} |"
            )


if __name__ == "__main__":
    main()
