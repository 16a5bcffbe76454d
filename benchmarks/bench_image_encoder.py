"""Time `SAM2Model.encode_image` on one (1, 3, S, S) frame with random weights.

Usage: python benchmarks/bench_image_encoder.py [--model sam2.1_hiera_tiny] [--threads 2]
[--memory]

Prints wall time and process CPU time / threads per call; on a busy machine the second is the
better estimate of the unloaded wall time. With --memory (Linux), each call starts on a trimmed
heap, as the tracker's float32 frames do, and what its modules (patch embedding, each Hiera
block, the neck) add to the resident size is printed: where each starts and the peak it reaches
(the process's peak is reset before each), in MB above the call's start.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from bench_memory import reset_peak, status_mb  # benchmarks/ is the script's folder

from napari_sam2.model import SAM2Config, build_sam2
from napari_sam2.tracking.memory_trim import release_freed_memory


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def watch_modules(model: torch.nn.Module, record: list) -> None:
    """Append (name, resident MB at its start, peak MB during it) for every module of the
    image encoder that runs (hooks; the peak is reset as each starts)."""
    encoder = model.image_encoder
    modules = [("patch_embed", encoder.trunk.patch_embed)]
    modules += [(f"block{i}", block) for i, block in enumerate(encoder.trunk.blocks)]
    modules.append(("neck", encoder.neck))

    def started(name: str):
        def hook(module, inputs):
            reset_peak()
            record.append([name, status_mb("VmRSS")])

        return hook

    def ended(module, inputs, output):
        record[-1].append(status_mb("VmHWM"))

    for name, module in modules:
        module.register_forward_pre_hook(started(name))
        module.register_forward_hook(ended)


def report_memory(record: list, start: float) -> None:
    peak = max(p for _, _, p in record) - start
    where = max(record, key=lambda r: r[2])[0]
    steps = " ".join(f"{n} {a - start:.0f}/{p - start:.0f}" for n, a, p in record)
    print(f"  rise {peak:.1f} MB (peak in {where}); per module start/peak: {steps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--memory", action="store_true", help="each call on a trimmed heap; modules' memory"
    )
    args = parser.parse_args()
    if args.memory and not reset_peak():
        parser.error("--memory needs Linux's /proc/self/clear_refs")
    torch.set_num_threads(args.threads)
    model = build_sam2(SAM2Config.from_name(args.model))
    s = model.image_size
    x = torch.randn(1, 3, s, s)
    record: list = []
    if args.memory:
        watch_modules(model, record)
    with torch.inference_mode():
        model.encode_image(x)  # warm-up
        for _ in range(args.repeats):
            if args.memory:
                record.clear()
                release_freed_memory()
                start = status_mb("VmRSS")
            c, t = _cpu_seconds(), time.perf_counter()
            model.encode_image(x)
            wall, cpu = time.perf_counter() - t, (_cpu_seconds() - c) / args.threads
            print(
                f"{args.model} S={s} threads={args.threads}: "
                f"wall {wall:.2f} s, cpu/threads {cpu:.2f} s"
            )
            if args.memory:
                report_memory(record, start)


if __name__ == "__main__":
    main()
