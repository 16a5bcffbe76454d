"""Which torch device runs the model, and which autocast dtype suits it."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["available_devices", "resolve_device", "autocast_dtype"]


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


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 on GPUs that support it, float16 on older
    CUDA GPUs and on MPS without bfloat16, None (run in float32) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError):
            return torch.float16
        return torch.bfloat16
    return None
