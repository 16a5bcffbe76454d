"""Memory attention: the current frame's tokens attend to themselves and to the memory bank
(spatial memories and object pointers), with axial RoPE on the spatial tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SAM2Config
from .position_encoding import apply_rope, axial_rope_tables


class RoPEAttention(nn.Module):
    """Single-head attention with 2-D axial RoPE on queries and (spatial) keys."""

    def __init__(self, dim: int, kv_in_dim: int, theta: float) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_in_dim, dim)
        self.v_proj = nn.Linear(kv_in_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.theta = theta

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """q (B, n, C); k, v (B, m, kv_in_dim); the last num_k_exclude_rope keys keep no RoPE."""
        cos, sin = rope
        q = apply_rope(self.q_proj(q), cos, sin)
        k = self.k_proj(k)
        n_rope = k.shape[1] - num_k_exclude_rope
        if n_rope > 0:
            # every spatial memory frame reuses the query grid's rotations
            reps, rest = divmod(n_rope, cos.shape[0])
            if rest:
                raise ValueError(
                    f"{n_rope} spatial memory tokens are not whole frames of {cos.shape[0]} "
                    "tokens; check num_pointer_tokens"
                )
            k_rope = apply_rope(k[:, :n_rope], cos.repeat(reps, 1), sin.repeat(reps, 1))
            k = torch.cat((k_rope, k[:, n_rope:]), dim=1) if num_k_exclude_rope else k_rope
        out = F.scaled_dot_product_attention(
            q.unsqueeze(1), k.unsqueeze(1), self.v_proj(v).unsqueeze(1)
        )
        return self.out_proj(out.squeeze(1))


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int, mem_dim: int, ffn_dim: int, theta: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim, dim, theta)
        self.cross_attn_image = RoPEAttention(dim, mem_dim, theta)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_pointer_tokens: int,
    ) -> torch.Tensor:
        a = self.norm1(x)
        x = x + self.self_attn(a, a, a, rope)
        a = self.norm2(x)
        x = x + self.cross_attn_image(a, memory + memory_pos, memory, rope, num_pointer_tokens)
        a = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(a)))


class MemoryAttention(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        c = config.hidden_dim
        self.dim = c
        self.theta = config.rope_theta
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(c, config.mem_dim, config.memory_attention_ffn_dim, self.theta)
            for _ in range(config.memory_attention_layers)
        )
        self.norm = nn.LayerNorm(c)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rope_tables(
        self, side: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (side, dtype, str(device))
        if key not in self._rope_cache:
            self._rope_cache[key] = axial_rope_tables(
                self.dim, side, self.theta, dtype=dtype, device=device
            )
        return self._rope_cache[key]

    def forward(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_pointer_tokens: int,
    ) -> torch.Tensor:
        """x, x_pos (B, G*G, C); memory, memory_pos (B, n, M) -> (B, G*G, C)."""
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError("memory attention needs a square token grid")
        rope = self.rope_tables(side, self.norm.weight.dtype, x.device)
        x = x + 0.1 * x_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, rope, num_pointer_tokens)
        return self.norm(x)
