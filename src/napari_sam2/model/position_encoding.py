"""Position encodings: 2-D sine (DETR style), 1-D sine, random Fourier features, axial RoPE.

Every table is computed in the dtype the caller asks for (the parameter dtype), so a float64
model is float64 end to end.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_2d(
    channels: int,
    height: int,
    width: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalized 2-D sine encoding, (channels, H, W): y in the first half, x in the second.

    Within each half channel 2j is sin(pos / d_2j) and 2j+1 is cos(pos / d_2j+1), where
    consecutive channels share a frequency; positions are (index + 1) / (size + 1e-6) * 2 pi.
    """
    npf = channels // 2
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=dtype, device=device)
    x = torch.arange(1, width + 1, dtype=dtype, device=device)
    y = y / (y[-1:] + eps) * scale
    x = x / (x[-1:] + eps) * scale
    k = torch.arange(npf, dtype=dtype, device=device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / npf)
    pos_y = y[:, None] / dim_t  # (H, npf)
    pos_x = x[:, None] / dim_t  # (W, npf)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pe = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, npf),
            pos_x[None, :, :].expand(height, width, npf),
        ),
        dim=2,
    )
    return pe.permute(2, 0, 1).contiguous()


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine encoding of scalar positions (P,) -> (P, dim): all sines, then all cosines."""
    pe_dim = dim // 2
    k = torch.arange(pe_dim, dtype=positions.dtype, device=positions.device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / pe_dim)
    angles = positions[:, None] / dim_t
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class RandomFourierEncoding(nn.Module):
    """Prompt-encoder position encoding with a fixed random Gaussian matrix (a buffer)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (..., 2) as (u, v) in [0, 1] -> (..., 2 * num_pos_feats) [sin | cos]."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat((coords.sin(), coords.cos()), dim=-1)

    def dense(self, height: int, width: int) -> torch.Tensor:
        """Encoding of pixel centres of an H x W grid, (C, H, W)."""
        g = self.positional_encoding_gaussian_matrix
        v = (torch.arange(height, dtype=g.dtype, device=g.device) + 0.5) / height
        u = (torch.arange(width, dtype=g.dtype, device=g.device) + 0.5) / width
        grid = torch.stack(
            (u[None, :].expand(height, width), v[:, None].expand(height, width)), dim=-1
        )
        return self.encode(grid).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: int) -> torch.Tensor:
        """Encoding of (x, y) model-pixel coordinates (B, N, 2): centres at +0.5."""
        coords = (coords + 0.5) / image_size
        return self.encode(coords)


def axial_rope_tables(
    dim: int, side: int, theta: float, *, dtype: torch.dtype, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (side*side, dim/2) of 2-D axial RoPE on a square grid.

    Pair p < dim/4 turns by column * f_p, pair p >= dim/4 by row * f_(p - dim/4), with
    f_k = theta^(-4k / dim).
    """
    k = torch.arange(0, dim, 4, dtype=dtype, device=device)[: dim // 4]
    freqs = 1.0 / (theta ** (k / dim))
    idx = torch.arange(side * side, device=device)
    cols = (idx % side).to(dtype)
    rows = torch.div(idx, side, rounding_mode="floor").to(dtype)
    angles = torch.cat((torch.outer(cols, freqs), torch.outer(rows, freqs)), dim=-1)
    return angles.cos(), angles.sin()


def rope_halves_order(dim: int) -> torch.Tensor:
    """Feature order that puts the first element of every RoPE pair in the first half and
    the second in the second half: [0, 2, 4, ..., 1, 3, 5, ...].

    Queries and keys projected in this order give the same dot products (one permutation
    applied to both) and rotate with contiguous halves instead of stride-2 pairs.
    """
    return torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))


def rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., n, D) in halves order (see `rope_halves_order`) by tables (n, D/2).

    Without autograd and in the tables' dtype, x is rotated in place (callers pass a fresh
    projection). Otherwise the rotation is computed in the tables' dtype, as the reference
    does under autocast (float32), and cast back.
    """
    half = x.shape[-1] // 2
    if x.dtype != cos.dtype or x.requires_grad:
        first, second = x.to(cos.dtype).split(half, dim=-1)
        rotated = (first * cos - second * sin, first * sin + second * cos)
        return torch.cat(rotated, dim=-1).to(x.dtype)
    first, second = x.narrow(-1, 0, half), x.narrow(-1, half, half)
    first_before = first.clone()
    first.mul_(cos).addcmul_(second, sin, value=-1)
    second.mul_(cos).addcmul_(first_before, sin)
    return x
