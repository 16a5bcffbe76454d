"""Segment everything on one frame: SAM 2's automatic mask generation on our network.

A regular grid of single-point prompts goes through the mask decoder in batches on the frame's
features (the image encoder runs once). Each point gives the decoder's three multimask outputs;
masks are kept when their predicted IoU is above ``pred_iou_thresh`` and their stability score
(the area above ``+offset`` over the area above ``-offset`` of the logits) reaches
``stability_score_thresh``; overlapping boxes are then thinned by non-maximum suppression,
highest predicted IoU first. Defaults and record keys are those of SAM 2's automatic mask
generator (one crop layer, no mask-to-mask refinement).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.tracking.frames import FrameSource

__all__ = ["segment_everything", "segment_everything_in_features", "point_grid"]


def point_grid(points_per_side: int, height: int, width: int) -> np.ndarray:
    """(n * n, 2) prompt points as (x, y) frame pixels: cell centres of an n x n grid."""
    if int(points_per_side) < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    n = int(points_per_side)
    centres = (np.arange(n) + 0.5) / n
    ys, xs = np.meshgrid(centres * height, centres * width, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) x0, y0, x1, y1 with inclusive maxima (0s for empty masks)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h, w = masks.shape[-2:]

    def extent(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(size, device=hits.device)
        first = torch.where(hits, index, size).min(dim=1).values
        last = torch.where(hits, index, -1).max(dim=1).values
        empty = last < 0
        return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

    y0, y1 = extent(rows, h)
    x0, x1 = extent(cols, w)
    return torch.stack([x0, y0, x1, y1], dim=1)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, highest score first."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    b = boxes.to(torch.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept: list[int] = []
    for i in order:
        if kept:
            k = b[kept]
            ix = (torch.minimum(k[:, 2], b[i, 2]) - torch.maximum(k[:, 0], b[i, 0])).clamp(min=0)
            iy = (torch.minimum(k[:, 3], b[i, 3]) - torch.maximum(k[:, 1], b[i, 1])).clamp(min=0)
            inter = ix * iy
            iou = inter / (area[kept] + area[i] - inter).clamp(min=1e-12)
            if bool((iou > threshold).any()):
                continue
        kept.append(i)
    return kept


def _without_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` with holes, then islands, of fewer than ``min_area`` pixels removed."""
    from scipy import ndimage

    def small_parts(binary: np.ndarray) -> np.ndarray:
        labels, count = ndimage.label(binary)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = sizes < min_area
        small[0] = False
        return small[labels]

    filled = mask | small_parts(~mask)
    return filled & ~small_parts(filled)


@torch.inference_mode()
def segment_everything(
    model: Any,
    image: Any,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.8,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    min_mask_region_area: int = 0,
    *,
    points_per_batch: int = 64,
    stability_score_offset: float = 1.0,
    mask_threshold: float = 0.0,
    contrast_limits: Any = None,
) -> list[dict[str, Any]]:
    """Every object SAM 2 finds in ``image`` ((H, W) or (H, W, C), intensities handled as by
    :class:`FrameSource`), as records with the keys of SAM 2's automatic mask generator:
    ``segmentation`` (H, W) bool, ``area``, ``bbox`` (x, y, w, h), ``predicted_iou``,
    ``stability_score``, ``point_coords`` ([[x, y]] of the prompt) and ``crop_box``.

    ``min_mask_region_area`` > 0 removes disconnected regions and holes smaller than that from
    each mask, and then suppresses overlaps again (masks left unchanged win). Deterministic.
    A :class:`~napari_sam2.tracking.Tracker` does the same on a frame of its stack with the
    features it has cached: ``tracker.segment_everything(frame_index)``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    check_everything_options(points_per_side, points_per_batch)
    size = int(model.config.image_size)
    param = next(model.parameters())
    frames = FrameSource(image[None], size, contrast_limits=contrast_limits, prefetch=0)
    try:
        x = frames.model_input(0).to(device=param.device, dtype=param.dtype)
    finally:
        frames.close()
    feats = model.encode_image(x[None])
    return segment_everything_in_features(
        model,
        feats,
        image.shape[:2],
        points_per_side,
        pred_iou_thresh,
        stability_score_thresh,
        box_nms_thresh,
        min_mask_region_area,
        points_per_batch=points_per_batch,
        stability_score_offset=stability_score_offset,
        mask_threshold=mask_threshold,
    )


def check_everything_options(points_per_side: int, points_per_batch: int) -> None:
    """Clear errors for grid and batch sizes that cannot work."""
    if int(points_per_side) < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    if int(points_per_batch) < 1:
        raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")


@torch.inference_mode()
def segment_everything_in_features(
    model: Any,
    feats: Any,
    frame_shape: tuple[int, int],
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.8,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    min_mask_region_area: int = 0,
    *,
    points_per_batch: int = 64,
    stability_score_offset: float = 1.0,
    mask_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """:func:`segment_everything` on a frame already encoded (``model.encode_image``'s
    features of one frame), with masks at ``frame_shape`` (H, W)."""
    check_everything_options(points_per_side, points_per_batch)
    height, width = (int(v) for v in frame_shape)
    size = int(model.config.image_size)
    pix = model.add_no_memory_embedding(feats.vision)
    prompts = model.sam_prompt_encoder
    decoder = model.sam_mask_decoder
    dense_pe = prompts.dense_pe().to(pix.dtype)

    grid = point_grid(points_per_side, height, width)
    scale = torch.tensor([size / width, size / height], dtype=pix.dtype, device=pix.device)
    kept_masks, kept_ious, kept_stability, kept_points = [], [], [], []
    for start in range(0, len(grid), int(points_per_batch)):
        points = torch.as_tensor(grid[start : start + points_per_batch], device=pix.device)
        b = len(points)
        coords = (points.to(pix.dtype) * scale)[:, None, :]
        labels = torch.ones((b, 1), dtype=torch.int64, device=pix.device)
        sparse, dense = prompts(coords, labels, None)
        high_res = tuple(level.expand(b, -1, -1, -1) for level in feats.high_res)
        out = decoder(pix.expand(b, -1, -1, -1), dense_pe, sparse, dense, high_res)
        ious = out.ious[:, 1:].float().flatten()  # the three multimask outputs
        prompt_points = points.repeat_interleave(3, dim=0)
        # The predicted-IoU filter needs no mask: only the masks it keeps are upsampled to the
        # frame (on a CPU that resize costs more than the decoder).
        passed = ious > pred_iou_thresh
        logits = out.masks[:, 1:].flatten(0, 1)[passed]
        ious, prompt_points = ious[passed], prompt_points[passed]
        logits = F.interpolate(
            logits[:, None].float(), (height, width), mode="bilinear", align_corners=False
        )[:, 0]
        inter = (logits > mask_threshold + stability_score_offset).sum(dim=(1, 2)).float()
        union = (logits > mask_threshold - stability_score_offset).sum(dim=(1, 2)).float()
        stability = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        keep = stability >= stability_score_thresh
        kept_masks.append((logits[keep] > mask_threshold).cpu())
        kept_ious.append(ious[keep].cpu())
        kept_stability.append(stability[keep].cpu())
        kept_points.append(prompt_points[keep].cpu())

    masks = torch.cat(kept_masks)
    ious = torch.cat(kept_ious)
    stability = torch.cat(kept_stability)
    points = torch.cat(kept_points)
    order = _nms(_boxes(masks), ious, box_nms_thresh) if len(masks) else []
    records = [
        {
            "segmentation": masks[i].numpy(),
            "predicted_iou": float(ious[i]),
            "stability_score": float(stability[i]),
            "point_coords": [[float(points[i, 0]), float(points[i, 1])]],
        }
        for i in order
    ]
    if min_mask_region_area > 0 and records:
        unchanged = []
        for record in records:
            cleaned = _without_small_regions(record["segmentation"], int(min_mask_region_area))
            unchanged.append(float(np.array_equal(cleaned, record["segmentation"])))
            record["segmentation"] = cleaned
        stacked = torch.from_numpy(np.stack([r["segmentation"] for r in records]))
        keep = _nms(_boxes(stacked), torch.tensor(unchanged), box_nms_thresh)
        records = [records[i] for i in keep]
    for record in records:
        seg = record["segmentation"]
        x0, y0, x1, y1 = _boxes(torch.from_numpy(seg)[None])[0].tolist()
        record["area"] = int(seg.sum())
        record["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        record["crop_box"] = [0, 0, width, height]
    return records
