"""The CPU speed paths compute the same function as the plain formulation: cross-attention
with scores in blocks and values projected afterwards, and layers applied in row chunks."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.model import build_sam2, common, hiera, memory_attention
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
    # a scratch of 6 score rows: 16 queries in blocks of 6, 6 and 4
    monkeypatch.setattr(memory_attention, "_SCORE_BUFFER_BYTES", 6 * 64 * 8)
    with torch.no_grad():  # rotations in place, score blocks in the scratch buffer
        assert attn.uses_raw_values(q.device)
        blocked = attn(q, k, v, rope, num_pointer_tokens)
    # with autograd: rotations out of place, attention over projected values
    assert not attn.uses_raw_values(q.device)
    reference = attn(q, k, v, rope, num_pointer_tokens)
    reference.sum().backward()
    assert attn.v_proj.weight.grad is not None
    torch.testing.assert_close(blocked, reference.detach(), rtol=0, atol=1e-12)


def test_float_keys_are_written_into_one_scratch_per_call(monkeypatch):
    """Without autocast the raw-value path writes every object's rotated keys into one scratch
    per call (not a fresh key matrix per layer and object: 28 MB in float32 at 1024 px),
    bitwise the keys `_project_and_rotate` makes."""
    torch.manual_seed(0)
    side, dim, mem_dim, frames, pointers = 4, 32, 8, 3, 4
    attn = RoPEAttention(dim, mem_dim, 10000.0)
    rope = axial_rope_tables(dim, side, 10000.0, dtype=torch.float32, device="cpu")
    q = torch.randn(1, side * side, dim)
    k = torch.randn(3, frames * side * side + pointers, mem_dim)
    v = torch.randn(3, frames * side * side + pointers, mem_dim)
    made = RoPEAttention._rotated_keys
    written = []

    def recording(self, k_b, rope_, n_rope, out):
        keys = made(self, k_b, rope_, n_rope, out)
        expected, _ = self._project_and_rotate(self.k_proj, k_b[None].clone(), rope_, n_rope)
        assert torch.equal(keys, expected[0])
        written.append(keys.data_ptr())
        return keys

    monkeypatch.setattr(RoPEAttention, "_rotated_keys", recording)
    with torch.inference_mode():
        attn(q, k, v, rope, pointers)
    assert len(written) == 3 and len(set(written)) == 1


def test_gradients_flow_through_chunked_layers(small_config):
    """Training-style use: chunked Hiera blocks and memory attention keep autograd working."""
    torch.manual_seed(0)
    model = build_sam2(small_config)
    s = small_config.image_size
    feats = model.encode_image(torch.randn(1, 3, s, s))
    tokens = feats.vision.shape[-1] ** 2
    memory = torch.randn(1, 2 * tokens + 4, small_config.mem_dim, requires_grad=True)
    out = model.attend_to_memory(feats.vision, feats.vision_pos, memory, memory.detach(), 4)
    (out.square().mean() + feats.high_res[0].mean()).backward()
    assert memory.grad is not None and memory.grad.abs().sum() > 0
    first_mlp = model.image_encoder.trunk.blocks[0].mlp.layers[0]
    assert first_mlp.weight.grad is not None and first_mlp.weight.grad.abs().sum() > 0


def test_small_chunks_compute_the_same_function(small_config, monkeypatch):
    """The small model's tensors fit one chunk; tiny chunks exercise every chunked path (windows,
    pooled shortcut row pairs, MLP tokens, memory-attention feed-forward)."""
    torch.manual_seed(0)
    model = build_sam2(small_config).double().eval()
    s = small_config.image_size
    image = torch.randn(1, 3, s, s, dtype=torch.float64)
    with torch.no_grad():
        whole = model.encode_image(image)
        tokens = whole.vision.shape[-1] ** 2
        memory = torch.randn(1, 2 * tokens + 4, small_config.mem_dim, dtype=torch.float64)
        attended = model.attend_to_memory(whole.vision, whole.vision_pos, memory, memory, 4)
        calls = []
        original = common.apply_in_row_chunks

        def counting(fn, x, rows):
            calls.append(x.shape[0] > rows)
            return original(fn, x, rows)

        for module in (hiera, memory_attention):
            monkeypatch.setattr(module, "CHUNK_BYTES", 1024)
            monkeypatch.setattr(module, "apply_in_row_chunks", counting)
        chunked = model.encode_image(image)
        attended_chunked = model.attend_to_memory(
            chunked.vision, chunked.vision_pos, memory, memory, 4
        )
    assert sum(calls) >= len(model.image_encoder.trunk.blocks)  # chunked, not one call
    for a, b in [
        (whole.vision, chunked.vision),
        *zip(whole.high_res, chunked.high_res, strict=True),
    ]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(attended, attended_chunked, rtol=0, atol=1e-12)


def test_row_chunks_only_on_the_cpu():
    """Chunks serve glibc's heap; on another device (a GPU; meta here) they would only
    multiply kernel launches and compiled graphs, so fn runs once on the whole input."""
    calls = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[0])
        return t * 2

    cpu = common.apply_in_row_chunks(fn, torch.ones(10, 3), rows=4)
    assert calls == [4, 4, 2] and torch.equal(cpu, torch.full((10, 3), 2.0))
    calls.clear()
    other = common.apply_in_row_chunks(fn, torch.ones(10, 3, device="meta"), rows=4)
    assert calls == [10] and other.shape == (10, 3) and other.device.type == "meta"
