"""CUDA test helpers (imported by name: tests/ has no packages)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 convolutions and matmuls in full precision on CUDA, as the reference fixtures
    were made: torch lets cuDNN use TF32 for float32 convolutions by default, which moves the
    image encoder's outputs by about 4e-3, beyond the parity tolerance of 1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
