"""The CPU cross-attention path (scores in blocks, values projected afterwards) computes the
same function as attention over projected values."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.model import memory_attention
from napari_sam2.model.memory_attention import RoPEAttention
from napari_sam2.model.position_encoding import axial_rope_tables


@pytest.mark.parametrize("num_pointer_tokens", [0, 4, 6])
def test_raw_value_path_matches_projected_values(monkeypatch, num_pointer_tokens):
    torch.manual_seed(0)
    side, dim, mem_dim, frames = 4, 32, 8, 3
    attn = RoPEAttention(dim, mem_dim, 10000.0).double()
    rope = axial_rope_tables(dim, side, 10000.0, dtype=torch.float64, device="cpu")
    q = torch.randn(2, side * side, dim, dtype=torch.float64)
    n_keys = frames * side * side + num_pointer_tokens  # 48, 52, 54: padded score rows
    k = torch.randn(2, n_keys, mem_dim, dtype=torch.float64)
    v = torch.randn(2, n_keys, mem_dim, dtype=torch.float64)
    # a scratch of 5 score rows: several blocks, the last one partial
    monkeypatch.setattr(memory_attention, "_SCORE_BUFFER_BYTES", 5 * 64 * 8)
    assert attn.uses_raw_values(q.device)
    with torch.no_grad():  # rotations in place
        blocked = attn(q, k, v, rope, num_pointer_tokens)
    monkeypatch.setattr(RoPEAttention, "uses_raw_values", lambda self, device: False)
    reference = attn(q, k, v, rope, num_pointer_tokens)  # with autograd: rotations out of place
    assert reference.requires_grad
    torch.testing.assert_close(blocked, reference.detach(), rtol=0, atol=1e-12)
