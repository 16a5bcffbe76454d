"""Hole filling in low-resolution mask logits (project decision D4, SEMANTICS 1.8).

The reference fills holes only when its compiled CUDA extension is present: background
components (logits <= 0, 8-connectivity) of at most ``max_area`` pixels of the S/4 grid are set
to +0.1, turning them into foreground with a small margin. We do the same on every device with
scikit-image's connected-component labelling.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label

__all__ = ["fill_holes", "HOLE_FILL_VALUE"]

HOLE_FILL_VALUE = 0.1


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Return ``logits`` (..., H, W) with small background components set to +0.1.

    A component is a set of pixels with logit <= 0 connected through their 8 neighbours; it is
    filled when it has at most ``max_area`` pixels. ``max_area <= 0`` returns ``logits``
    unchanged. The input is not modified.
    """
    if max_area <= 0:
        return logits
    if logits.ndim < 2:
        raise ValueError(f"logits must have at least 2 dimensions (H, W), got {logits.ndim}")
    background = (logits <= 0).detach().cpu().numpy()
    flat = background.reshape(-1, *background.shape[-2:])
    fill = np.zeros_like(flat)
    for i, image in enumerate(flat):  # one labelling per mask, not per pixel
        labels = label(image, connectivity=2)
        if labels.max() == 0:
            continue
        areas = np.bincount(labels.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        fill[i] = small[labels]
    if not fill.any():
        return logits
    mask = torch.from_numpy(fill.reshape(background.shape)).to(logits.device)
    return torch.where(mask, torch.full_like(logits, HOLE_FILL_VALUE), logits)
