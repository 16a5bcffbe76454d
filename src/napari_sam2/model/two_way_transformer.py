"""The mask decoder's two-way transformer: tokens attend to the image and back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, add, linear, lowp_dtype


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections to an internal width."""

    def __init__(
        self, dim: int, heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None
    ):
        super().__init__()
        kv_in_dim = dim if kv_in_dim is None else kv_in_dim
        inner = dim // downsample_rate
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_in_dim, inner)
        self.v_proj = nn.Linear(kv_in_dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, n, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split(linear(self.q_proj, q))
        k = self._split(linear(self.k_proj, k))
        v = self._split(linear(self.v_proj, v))
        if k.shape[2] <= _FEW_KEYS and lowp_dtype(q.device) is not None:
            out = _attend_to_few_keys(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return linear(self.out_proj, out.transpose(1, 2).flatten(2))


# Below this many keys the CPU low-precision path attends without the flash kernel, whose
# blocking is made for long key sequences (the 4096 image tokens attending to the 7-10 prompt
# tokens took longer than all the decoder's matmuls).
_FEW_KEYS = 64


def _attend_to_few_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, heads, n, d) inputs and a few keys: scores and
    softmax in float32 (as the flash kernel accumulates), the result in v's dtype."""
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
        # softmax written out: torch's kernel is slow on rows this short (6x here)
        scores = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        scores = scores.div_(scores.sum(dim=-1, keepdim=True))
        return torch.matmul(scores, v.float()).to(v.dtype)


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, 2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample)
        self.skip_first_pe = skip_first_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, qpe: torch.Tensor, kpe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + qpe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + qpe, add(keys, kpe)
        lowp = lowp_dtype(keys.device)
        # on the CPU low-precision path the image-side inputs of the projections are cast
        # once (k feeds two of them), as the projections would cast them
        k = k if lowp is None else k.to(lowp)
        v = keys if lowp is None else keys.to(lowp)
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, v))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + qpe
        keys = self.norm4(add(keys, self.cross_attn_image_to_token(k, q, queries)))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, downsample: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, downsample, skip_first_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, h, w); tokens (B, T, C) -> tokens (B, T, C), image (B, hw, C)."""
        keys = image.flatten(2).transpose(1, 2)
        kpe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, kpe)
        q, k = queries + tokens, add(keys, kpe)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
