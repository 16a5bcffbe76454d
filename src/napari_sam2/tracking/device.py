"""Which torch device runs the model, and which autocast dtype suits it."""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "autocast_dtype",
    "available_devices",
    "bf16_matmul_time_ratio",
    "cpu_has_fast_bf16",
    "precision_label",
    "resolve_device",
]

#: The precision choices of the front ends (CLI ``--precision``, ``track(precision=...)``,
#: the widget): ``auto`` picks per device (see :func:`autocast_dtype`).
PRECISIONS = ("auto", "float32", "bfloat16")

# /proc/cpuinfo flags of CPUs with native bfloat16 matrix instructions (Intel AMX, AVX512-BF16)
_FAST_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# `auto` computes in bfloat16 on a CPU only where a bfloat16 matrix product takes at most this
# fraction of float32's time. The flags alone do not tell: a Xeon (family 6 model 207) whose
# virtual machine exposes AVX512-BF16 but not AMX multiplies bfloat16 at half float32's speed
# and tracks a frame 1.48x slower in bfloat16; with AMX the product takes 0.17x and the frame
# 0.33x (benchmarks/README.md). Below 0.75 the frame gains about a quarter or more.
_MAX_BF16_TIME_RATIO = 0.75
# The timed product: one block of the memory attention's scores (queries x channels x keys),
# a few milliseconds in float32 on two cores.
_PROBE_SHAPE = (512, 256, 4096)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device names usable here, best first: ``cuda:0`` ... , ``mps``, ``cpu``."""
    names = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``.

    This is the one place that checks a device: a device that is not there (CUDA on a
    CPU-only torch build or without a driver, MPS off Apple silicon, ``cuda:N`` beyond the GPUs
    torch sees) raises a ``ValueError`` that says what is missing and lists the available ones.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        logger.info("using device %s", device)
        return device
    try:
        device = torch.device(name.strip().lower() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps "
            f"(available here: {', '.join(available_devices())})"
        ) from err
    available = ", ".join(available_devices())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            # torch.cuda would fail later with "Torch not compiled with CUDA enabled" or a
            # driver error, far from the choice of device: say here what is missing.
            why = "CPU-only torch build" if torch.version.cuda is None else "no GPU or driver"
            raise ValueError(
                f"device {name!r} is not available: no CUDA GPU is available to torch here "
                f"({why}); use device='cpu' or 'auto' (available here: {available})"
            )
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} is not available: torch sees {torch.cuda.device_count()} "
                f"CUDA GPU(s), numbered from 0 (available here: {available})"
            )
        device = torch.device("cuda", index)
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {name!r} is not available: no Apple MPS GPU is available to torch "
                f"here (not a Mac with Apple silicon, or torch without MPS); use device='cpu' "
                f"or 'auto' (available here: {available})"
            )
    elif device.type != "cpu":
        raise ValueError(
            f"device type {device.type!r} is not supported; use auto, cpu, cuda or mps "
            f"(available here: {available})"
        )
    logger.info("using device %s", device)
    return device


def cpuinfo_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags listed in ``path`` (Linux), or None where it cannot be read."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def _torch_cpu_probe(name: str) -> bool | None:
    """The answer of torch's private CPU feature probe ``torch.cpu.<name>``; None where this
    torch build lacks it or it fails (private API: it may move between releases)."""
    probe = getattr(getattr(torch, "cpu", None), name, None)
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - a broken private probe must not stop the plugin
        return None


def _cpu_has_bf16_instructions() -> bool:
    """Whether the CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16) that torch's
    oneDNN kernels can use: torch's own probes first, then the Linux ``/proc/cpuinfo`` flags."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    if mkldnn is None or not mkldnn.is_available():
        return False  # no oneDNN: torch has no fast bfloat16 CPU kernels
    probes = [_torch_cpu_probe(n) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probes):
        return True
    if sys.platform.startswith("linux"):
        flags = cpuinfo_flags()
        if flags is not None:
            return bool(flags & _FAST_BF16_FLAGS)
    return False


def bf16_matmul_time_ratio(repeats: int = 3) -> float:
    """Time of a bfloat16 matrix product over that of the same float32 product on this CPU
    (best of ``repeats`` each, alternating, after one untimed run of each), with torch's
    current thread count."""
    m, k, n = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    operands = {dtype: (a.to(dtype), b.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(operands, float("inf"))
    with torch.inference_mode():
        for run in range(repeats + 1):
            for dtype, (left, right) in operands.items():
                start = time.perf_counter()
                torch.mm(left, right)
                if run:  # the first run builds oneDNN's kernels
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether bfloat16 autocast runs clearly faster than float32 on this CPU (about 3x for
    SAM 2 tiny with Intel AMX).

    Needs bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16) and a measurement: a bfloat16
    product of the memory attention's size must take at most 3/4 of float32's time
    (:func:`bf16_matmul_time_ratio`, about 50 ms, once per process). Instructions alone are not
    enough: where oneDNN runs bfloat16 on AVX512-BF16 without AMX it can be slower than
    float32. Without the instructions the answer is False without measuring (emulated bfloat16
    is slower than float32).
    """
    if not _cpu_has_bf16_instructions():
        return False
    ratio = bf16_matmul_time_ratio()
    fast = ratio <= _MAX_BF16_TIME_RATIO
    logger.info(
        "bfloat16 matrix product %.2fx float32's time: auto precision is %s on the CPU",
        ratio,
        "bfloat16" if fast else "float32",
    )
    return fast


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` and ``precision`` (``auto``, ``float32`` or
    ``bfloat16``); None means: compute in float32, without autocast.

    ``auto``: bfloat16 on GPUs that support it, float16 on older CUDA GPUs and on MPS without
    bfloat16, bfloat16 on CPUs with native bfloat16 matrix support
    (:func:`cpu_has_fast_bf16`), float32 on other CPUs. ``float32`` and ``bfloat16`` force
    that choice on any device.
    """
    choice = (precision or "auto").strip().lower()
    if choice not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if choice == "float32":
        return None
    if choice == "bfloat16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError):
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None


def precision_label(dtype: torch.dtype | None) -> str:
    """How a user reads the compute precision of ``dtype`` (an :func:`autocast_dtype` answer):
    ``"float32"``, ``"bfloat16 autocast"`` or ``"float16 autocast"``."""
    if dtype is None:
        return "float32"
    return f"{str(dtype).removeprefix('torch.')} autocast"
