"""Time `SAM2Model.encode_image` on one (1, 3, S, S) frame with random weights.

Usage: python benchmarks/bench_image_encoder.py [--model sam2.1_hiera_tiny] [--threads 2]

Prints wall time and process CPU time / threads per call; on a busy machine the second is the
better estimate of the unloaded wall time.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from napari_sam2.model import SAM2Config, build_sam2


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_sam2(SAM2Config.from_name(args.model))
    s = model.image_size
    x = torch.randn(1, 3, s, s)
    with torch.inference_mode():
        model.encode_image(x)  # warm-up
        for _ in range(args.repeats):
            c, t = _cpu_seconds(), time.perf_counter()
            model.encode_image(x)
            wall, cpu = time.perf_counter() - t, (_cpu_seconds() - c) / args.threads
            print(
                f"{args.model} S={s} threads={args.threads}: "
                f"wall {wall:.2f} s, cpu/threads {cpu:.2f} s"
            )


if __name__ == "__main__":
    main()
