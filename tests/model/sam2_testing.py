"""Helpers shared by the network tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import numpy as np
import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(frame: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) normalized as the reference does, in dtype."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).to(dtype)
    mean = torch.tensor(MEAN, dtype=dtype)[:, None, None]
    std = torch.tensor(STD, dtype=dtype)[:, None, None]
    return ((x - mean) / std)[None]


def close(actual: torch.Tensor, expected: np.ndarray, atol: float, what: str = "") -> None:
    a = actual.detach().to(torch.float64).cpu().numpy()
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = float(np.abs(a - e).max()) if a.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"
