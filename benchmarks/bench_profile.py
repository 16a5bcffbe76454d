"""Where a tracked frame's time goes, per component, in float32 and under bfloat16 autocast.

sam2.1_hiera_tiny (random weights, nothing downloaded) at 1024 px, one object, on the CPU. One
tracked frame is: the image encoder (Hiera trunk stages, FPN neck), the memory attention over a
full memory bank (7 spatial memories and 16 object pointers), the mask decoder (prompt encoder
included) and the memory encoder. For each component this prints

- seconds per call in float32 and in bfloat16 autocast: the minimum over --reps calls, the two
  precisions interleaved call by call so that a shared machine slows both alike;
- the arithmetic it does (FLOPs of matmuls, convolutions and attention, counted with
  torch.utils.flop_counter.FlopCounterMode) and the GFLOP/s each precision reaches, next to the
  peak of one large torch.matmul measured here in the same precision;
- with --profile, what share of the bfloat16 time torch.profiler finds in matmul-like kernels
  (GEMMs, convolutions, fused attention) and in the rest (softmax, layer norm, GELU,
  copies and dtype conversions, element-wise arithmetic).

    python benchmarks/bench_profile.py                  # --reps 3 --threads 2 --profile
    python benchmarks/bench_profile.py --components trunk.stage3,memory_attention --reps 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_sam2.model import SAM2Config, build_sam2

aten = torch.ops.aten


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of the CPU flash attention kernel (FlopCounterMode has no entry for it)."""
    *batch, n, d = query_shape
    m, dv = key_shape[-2], value_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n * m * d + 2 * b * n * m * dv


def _flop_mapping() -> dict:
    mapping = {}
    op = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:

        def flops(q, k, v, *args, out_shape=None, **kwargs):
            return _sdpa_cpu_flops(q, k, v)  # FlopCounterMode passes shapes

        mapping[op] = flops
    return mapping


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 4) -> float:
    """GFLOP/s of an n x n x n torch.matmul in dtype (best of reps)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _precision(bf16: bool) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if bf16:
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return stack


def components(model, size: int, memories: int, pointers: int) -> dict[str, Callable]:
    """name -> a closure running that part of a tracked frame, inputs prepared once per
    precision (each closure takes `bf16` and returns its output)."""
    torch.manual_seed(0)
    trunk = model.image_encoder.trunk
    neck = model.image_encoder.neck
    dec = model.sam_mask_decoder
    cfg = model.config
    image = torch.randn(1, 3, size, size)

    # inputs of every stage, from one float32 and one bfloat16 pass
    stage_inputs: dict[bool, list[torch.Tensor]] = {}
    trunk_out: dict[bool, list[torch.Tensor]] = {}
    feats: dict[bool, object] = {}
    for bf16 in (False, True):
        with _precision(bf16):
            x = trunk.patch_embed(image)
            x = x + trunk._pos_embed(*x.shape[1:3])
            ins, outs = [x], []
            for i, block in enumerate(trunk.blocks):
                x = block(x)
                if i in trunk.stage_ends:
                    outs.append(x.permute(0, 3, 1, 2))
                    ins.append(x)
            stage_inputs[bf16] = ins
            trunk_out[bf16] = outs
            feats[bf16] = model.encode_image(image)

    g = cfg.image_size // 16
    m = cfg.mem_dim
    n_mem = memories * g * g + pointers * (cfg.hidden_dim // m)
    memory = torch.randn(1, n_mem, m).to(torch.bfloat16)  # stored as bfloat16
    memory_pos = torch.randn(1, n_mem, m)
    logits = torch.randn(1, 1, size, size) * 4
    score = torch.ones(1, 1)

    def stage(k: int) -> Callable:
        first = 0 if k == 0 else trunk.stage_ends[k - 1] + 1
        blocks = trunk.blocks[first : trunk.stage_ends[k] + 1]

        def run(bf16: bool):
            x = stage_inputs[bf16][k]
            for block in blocks:
                x = block(x)
            return x

        return run

    def patch(bf16: bool):
        x = trunk.patch_embed(image)
        return x + trunk._pos_embed(*x.shape[1:3])

    def fpn(bf16: bool):
        levels = neck(trunk_out[bf16], then={0: dec.conv_s0, 1: dec.conv_s1})
        return levels, neck.position_encoding(levels[-1])

    def attention(bf16: bool):
        f = feats[bf16]
        return model.attend_to_memory(f.vision, f.vision_pos, memory, memory_pos, pointers * 4)

    def decoder(bf16: bool):
        f = feats[bf16]
        return model.predict_masks(f.vision, f.high_res, None, None, None, multimask=False)

    def mem_encoder(bf16: bool):
        return model.encode_memory(feats[bf16].vision, logits, score, binarize=False)

    parts = {"trunk.patch_embed": patch}
    for k in range(len(trunk.stage_ends)):
        parts[f"trunk.stage{k + 1}"] = stage(k)
    parts |= {
        "neck": fpn,
        "memory_attention": attention,
        "mask_decoder": decoder,
        "memory_encoder": mem_encoder,
    }
    return parts


# torch.profiler op names -> category (first match wins; the rest is "other")
CATEGORIES = [
    ("attention (fused)", ("scaled_dot_product", "flash_attention")),
    ("matmul", ("addmm", "aten::mm", "bmm", "aten::matmul", "baddbmm", "linear")),
    ("convolution", ("conv", "mkldnn_convolution")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("GELU / ReLU", ("gelu", "relu", "sigmoid")),
    ("copies / casts", ("copy_", "_to_copy", "clone", "contiguous", "cat", "stack", "fill_")),
    ("pool / resize / pad", ("pool", "upsample", "interpolate", "pad")),
    ("element-wise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "where", "addcmul")),
]


def categorize(name: str) -> str:
    for label, keys in CATEGORIES:
        if any(k in name for k in keys):
            return label
    return "other"


def profile_shares(fn: Callable, bf16: bool) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Share of self CPU time per category and the top ops, for one call."""
    from torch.profiler import ProfilerActivity, profile

    with _precision(bf16), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(bf16)
    by_cat: dict[str, float] = defaultdict(float)
    ops = []
    for evt in prof.key_averages():
        t = evt.self_cpu_time_total
        if t <= 0:
            continue
        by_cat[categorize(evt.key)] += t
        ops.append((evt.key, t))
    total = sum(by_cat.values()) or 1.0
    ops.sort(key=lambda kv: -kv[1])
    return {k: v / total for k, v in by_cat.items()}, [(k, v / total) for k, v in ops[:6]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memories", type=int, default=7)
    parser.add_argument("--pointers", type=int, default=16)
    parser.add_argument("--components", default=None, help="comma-separated subset")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--top", action="store_true", help="print the top ops per component")
    parser.add_argument(
        "--detail", default=None, help="only print one component's bfloat16 ops (by shape)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = build_sam2(SAM2Config.from_name(args.model, image_size=args.size)).eval()
    parts = components(model, args.size, args.memories, args.pointers)
    if args.components:
        wanted = args.components.split(",")
        parts = {k: v for k, v in parts.items() if k in wanted}

    if args.detail:
        from torch.profiler import ProfilerActivity, profile

        fn = parts[args.detail]
        with _precision(True):
            fn(True)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                fn(True)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=30, max_shapes_column_width=80
        )
        print(table)
        return

    peak = {"f32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    load = os.getloadavg()[0]

    flops = {}
    for name, fn in parts.items():
        with _precision(False), FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as c:
            fn(False)
        flops[name] = c.get_total_flops()
        with _precision(True):  # warm-up (weight casts, oneDNN primitives)
            fn(True)

    times = {k: {False: float("inf"), True: float("inf")} for k in parts}
    for _ in range(args.reps):
        for name, fn in parts.items():
            for bf16 in (False, True):
                with _precision(bf16):
                    t0 = time.perf_counter()
                    fn(bf16)
                    dt = time.perf_counter() - t0
                times[name][bf16] = min(times[name][bf16], dt)

    print(
        f"# {args.model} at {args.size} px, {args.memories} memories + {args.pointers} "
        f"pointers, torch {torch.__version__}, {args.threads} threads, best of {args.reps}, "
        f"load average before/after {load:.2f} / {os.getloadavg()[0]:.2f}"
    )
    print(
        f"# matmul peak (2048^3 torch.matmul): float32 {peak['f32']:.0f} GFLOP/s, "
        f"bfloat16 {peak['bf16']:.0f} GFLOP/s"
    )
    print()
    print(
        "| component | f32 s | bf16 s | bf16/f32 | GFLOP | f32 GFLOP/s | bf16 GFLOP/s "
        "| f32 % peak | bf16 % peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    tot32 = tot16 = totf = 0.0
    for name in parts:
        t32, t16, f = times[name][False], times[name][True], flops[name] / 1e9
        tot32, tot16, totf = tot32 + t32, tot16 + t16, totf + f
        print(
            f"| {name} | {t32:.3f} | {t16:.3f} | {t16 / t32:.2f} | {f:.1f} | {f / t32:.0f} "
            f"| {f / t16:.0f} | {100 * f / t32 / peak['f32']:.0f} | "
            f"{100 * f / t16 / peak['bf16']:.0f} |"
        )
    print(
        f"| **sum** | **{tot32:.3f}** | **{tot16:.3f}** | {tot16 / tot32:.2f} | {totf:.1f} "
        f"| {totf / tot32:.0f} | {totf / tot16:.0f} | {100 * totf / tot32 / peak['f32']:.0f} "
        f"| {100 * totf / tot16 / peak['bf16']:.0f} |"
    )

    if not args.profile:
        return
    labels = [c for c, _ in CATEGORIES] + ["other"]
    print("\nbfloat16 autocast, share of self CPU time (torch.profiler, one call):\n")
    print("| component | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    tops = {}
    for name, fn in parts.items():
        shares, top = profile_shares(fn, True)
        tops[name] = top
        cells = " | ".join(f"{100 * shares.get(c, 0.0):.0f}" for c in labels)
        print(f"| {name} | {cells} |")
    if args.top:
        print()
        for name, top in tops.items():
            print(f"{name}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in top))


if __name__ == "__main__":
    main()
