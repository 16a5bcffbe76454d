"""Prompt encoder: points (box corners are points), mask prompts and the dense PE."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d
from .config import SAM2Config
from .position_encoding import RandomFourierEncoding


class PromptEncoder(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        e = config.hidden_dim
        self.embed_dim = e
        self.image_size = config.image_size
        self.grid = config.grid_size
        self.pe_layer = RandomFourierEncoding(e // 2)
        # labels 0 negative, 1 positive, 2 box top-left, 3 box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, e) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, e)
        c = config.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, e, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, e)
        self._dense_pe_cache: tuple | None = None

    def dense_pe(self) -> torch.Tensor:
        """(1, E, G, G) Fourier encoding of the stride-16 pixel centres.

        Cached while no gradient is recorded: it depends on the fixed Gaussian buffer (and on
        autocast, which computes its matmul in low precision) only.
        """
        g = self.pe_layer.positional_encoding_gaussian_matrix
        if torch.is_grad_enabled() or torch.is_inference(g):
            return self.pe_layer.dense(self.grid, self.grid).unsqueeze(0)
        kind = g.device.type
        autocast = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind)
        key = (g.dtype, g.device, g.data_ptr(), g._version, self.grid, autocast)
        if self._dense_pe_cache is None or self._dense_pe_cache[0] != key:
            pe = self.pe_layer.dense(self.grid, self.grid).unsqueeze(0)
            self._dense_pe_cache = (key, pe)
        return self._dense_pe_cache[1]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) (x, y) model pixels, (B, N) labels -> (B, N + 1, E), padding appended."""
        b = coords.shape[0]
        coords = torch.cat((coords, coords.new_zeros(b, 1, 2)), dim=1)
        labels = torch.cat((labels, labels.new_full((b, 1), -1)), dim=1)
        emb = self.pe_layer.points(coords, self.image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight.expand_as(emb), emb)
        for value, table in enumerate(self.point_embeddings):
            emb = torch.where(lab == value, emb + table.weight, emb)
        return emb

    def embed_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, S/4, S/4) logits -> (B, E, G, G)."""
        return self.mask_downscaling(mask)

    def forward(
        self, coords: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N + 1, E) and dense (B, E, G, G) prompt embeddings."""
        sparse = self.embed_points(coords, labels)
        if mask is not None:
            dense = self.embed_mask(mask)
        else:
            b = coords.shape[0]
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                b, -1, self.grid, self.grid
            )
        return sparse, dense
