"""Which torch device runs the model, and which autocast dtype suits it."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "autocast_dtype",
    "available_devices",
    "cpu_has_fast_bf16",
    "precision_label",
    "resolve_device",
]

#: The precision choices of the front ends (CLI ``--precision``, ``track(precision=...)``,
#: the widget): ``auto`` picks per device (see :func:`autocast_dtype`).
PRECISIONS = ("auto", "float32", "bfloat16")

# /proc/cpuinfo flags of CPUs with native bfloat16 matrix instructions (Intel AMX, AVX512-BF16)
_FAST_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


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


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (Intel AMX-BF16 or AVX512-BF16),
    so that bfloat16 autocast runs faster than float32 (about 2x for SAM 2 tiny on AMX).

    Asks torch's own probes first (the ones its oneDNN kernels dispatch on), then the Linux
    ``/proc/cpuinfo`` flags. Without oneDNN (mkldnn) torch has no fast bfloat16 CPU kernels,
    so the answer is False; elsewhere (no probe, no cpuinfo) it is False too: emulated
    bfloat16 is slower than float32.
    """
    mkldnn = getattr(torch.backends, "mkldnn", None)
    if mkldnn is None or not mkldnn.is_available():
        return False
    probes = [_torch_cpu_probe(n) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probes):
        return True
    if sys.platform.startswith("linux"):
        flags = cpuinfo_flags()
        if flags is not None:
            return bool(flags & _FAST_BF16_FLAGS)
    return False


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
