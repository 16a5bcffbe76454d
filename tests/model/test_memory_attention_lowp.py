"""Memory attention on the CPU low-precision path (bfloat16 autocast without autograd): cached
halves-ordered bfloat16 projections, RoPE rotated in place in float32 chunks, even blocks of
scores. Bitwise where the same arithmetic is claimed, otherwise as close to float32 as plain
autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_sam2.model import SAM2Config, common, memory_attention
from napari_sam2.model.memory_attention import (
    MemoryAttention,
    RoPEAttention,
    _rotate_columns_lowp_,
    _rotate_lowp_,
)
from napari_sam2.model.position_encoding import axial_rope_tables, rotate_halves

SIDE, DIM, MEM_DIM, FRAMES, POINTERS = 6, 32, 8, 3, 8


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _config() -> SAM2Config:
    return SAM2Config(
        image_size=SIDE * 16,
        hidden_dim=DIM,
        mem_dim=MEM_DIM,
        memory_attention_layers=2,
        memory_attention_ffn_dim=64,
    )


def _inputs(batch: int = 1, shared: bool = False):
    torch.manual_seed(1)
    n_mem = FRAMES * SIDE * SIDE + POINTERS
    xb = 1 if shared else batch
    shapes = [(xb, SIDE * SIDE, DIM)] * 2 + [(batch, n_mem, MEM_DIM)] * 2
    # bfloat16 values: float32 and autocast runs see the same inputs
    return tuple(torch.randn(shape).bfloat16().float() for shape in shapes)


def _model() -> MemoryAttention:
    torch.manual_seed(0)
    model = MemoryAttention(_config()).eval()
    with torch.no_grad():  # non-trivial norms
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("chunk_rows", [5, 36, 256])
def test_rotation_in_chunks_is_bitwise_the_float32_route(monkeypatch, chunk_rows):
    """Chunks that end inside a frame, at frame ends, or one chunk per frame; pointer keys
    are left as they are."""
    monkeypatch.setattr(memory_attention, "_ROPE_CHUNK_ROWS", chunk_rows)
    torch.manual_seed(0)
    cos, sin = axial_rope_tables(DIM, SIDE, 10000.0, dtype=torch.float32, device="cpu")
    t = SIDE * SIDE
    k = torch.randn(2, FRAMES * t + POINTERS, DIM).bfloat16()
    frames = k[:, : FRAMES * t].unflatten(1, (FRAMES, t))
    expected = torch.cat((rotate_halves(frames, cos, sin).flatten(1, 2), k[:, FRAMES * t :]), 1)
    got = k.clone()
    _rotate_lowp_(got, cos, sin, FRAMES * t)
    assert torch.equal(got, expected)
    assert torch.equal(got[:, FRAMES * t :], k[:, FRAMES * t :])


@pytest.mark.parametrize("chunk_rows", [1, 5, DIM // 2])
def test_transposed_keys_are_the_rotated_projection(monkeypatch, chunk_rows):
    """Memory keys made transposed (C, m) for the score product: the bias added and the
    spatial tokens rotated in float32 as `rotate_halves` rotates them, pointer keys only
    biased; chunks of one feature row, of rows that do not divide the half, of all rows."""
    elements = chunk_rows * FRAMES * SIDE * SIDE
    monkeypatch.setattr(memory_attention, "_ROPE_CHUNK_ELEMENTS", elements)
    torch.manual_seed(0)
    cos, sin = axial_rope_tables(DIM, SIDE, 10000.0, dtype=torch.float32, device="cpu")
    t = SIDE * SIDE
    projected = torch.randn(DIM, FRAMES * t + POINTERS).bfloat16()
    bias = torch.randn(DIM)
    keys = projected.float().t() + bias  # (m, C) in float32
    frames = keys[: FRAMES * t].unflatten(0, (FRAMES, t))
    expected = torch.cat((rotate_halves(frames, cos, sin).flatten(0, 1), keys[FRAMES * t :]))
    got = projected.clone()
    _rotate_columns_lowp_(got, cos.t().contiguous(), sin.t().contiguous(), bias, FRAMES * t)
    assert got.dtype == torch.bfloat16
    # one rounding to bfloat16 of the float32 result
    assert torch.equal(got, expected.t().bfloat16())


def test_halves_ordered_weights_are_cached_and_follow_the_weights():
    torch.manual_seed(0)
    attn = RoPEAttention(DIM, MEM_DIM, 10000.0)
    x = torch.randn(2, 7, MEM_DIM)
    with torch.inference_mode(), _autocast():
        got = attn._project_in_halves(attn.k_proj, x)
        w = common.lowp_param(attn.k_proj.weight, torch.bfloat16, attn.halves_order)
        assert w is common.lowp_param(attn.k_proj.weight, torch.bfloat16, attn.halves_order)
        # autocast casts the reordered weight, bias and input alike
        expected = F.linear(
            x, attn.k_proj.weight[attn.halves_order], attn.k_proj.bias[attn.halves_order]
        )
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)
    # the plain cast of the same weight is a separate cache entry
    with torch.inference_mode():
        plain = common.lowp_param(attn.k_proj.weight, torch.bfloat16)
    assert torch.equal(plain, attn.k_proj.weight.detach().bfloat16())
    with torch.no_grad():
        attn.k_proj.weight.mul_(-2)
        attn.k_proj.bias.add_(1)
    with torch.inference_mode(), _autocast():
        changed = attn._project_in_halves(attn.k_proj, x)
        expected = F.linear(
            x, attn.k_proj.weight[attn.halves_order], attn.k_proj.bias[attn.halves_order]
        )
    assert torch.equal(changed, expected)
    assert not torch.equal(changed, got)


def test_casts_of_one_parameter_to_two_dtypes_are_cached_side_by_side():
    """The transposed key path takes the key bias in float32, other paths in bfloat16: each
    cast keeps its own cache entry instead of replacing the other's on every call."""
    torch.manual_seed(0)
    attn = RoPEAttention(DIM, MEM_DIM, 10000.0)
    with torch.no_grad():
        low = common.lowp_param(attn.k_proj.bias, torch.bfloat16, attn.halves_order)
        full = common.lowp_param(attn.k_proj.bias, torch.float32, attn.halves_order)
        assert low is common.lowp_param(attn.k_proj.bias, torch.bfloat16, attn.halves_order)
        assert full is common.lowp_param(attn.k_proj.bias, torch.float32, attn.halves_order)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.equal(full, attn.k_proj.bias.detach()[attn.halves_order])


def _run(model, inputs, lowp: bool, monkeypatch=None) -> torch.Tensor:
    if not lowp:  # plain autocast: what the layers did before the low-precision path
        monkeypatch.setattr(memory_attention, "lowp_dtype", lambda device: None)
    try:  # features as the image encoder makes them under autocast
        with torch.inference_mode(), _autocast():
            return model(*(t.bfloat16() for t in inputs), POINTERS).float()
    finally:
        if not lowp:
            monkeypatch.undo()


def test_lowp_is_as_close_to_float32_as_plain_autocast(monkeypatch):
    model = _model()
    inputs = _inputs()
    with torch.inference_mode():
        reference = model(*inputs, POINTERS)
    lowp = _run(model, inputs, True)
    plain = _run(model, inputs, False, monkeypatch)
    err_lowp = (lowp - reference).abs()
    err_plain = (plain - reference).abs()
    assert err_lowp.mean() <= 1.25 * err_plain.mean()
    assert err_lowp.max() <= 2 * err_plain.max()
    # no systematic shift
    assert (lowp - reference).mean().abs() <= 0.1 * err_lowp.mean()
    torch.testing.assert_close(lowp, reference, rtol=0, atol=0.1)


def test_float32_does_not_take_the_lowp_path(monkeypatch):
    model = _model()
    inputs = _inputs()

    def forbidden(*args, **kwargs):
        raise AssertionError("float32 took the low-precision path")

    monkeypatch.setattr(memory_attention, "_rotate_lowp_", forbidden)
    monkeypatch.setattr(memory_attention, "lowp_linear", forbidden)
    with torch.inference_mode():
        model(*inputs, POINTERS)
    with torch.no_grad():
        model(*inputs, POINTERS)


def test_even_score_blocks_match_one_block(monkeypatch):
    model = _model()
    inputs = _inputs()
    whole = _run(model, inputs, True)
    # 7 rows of scores: 36 queries in 6 blocks of 6 rows
    width = -(-(FRAMES * SIDE * SIDE + POINTERS) // 16) * 16
    monkeypatch.setattr(memory_attention, "_LOWP_SCORE_BUFFER_BYTES", 7 * width * 2)
    blocked = _run(model, inputs, True)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=2e-2)


def test_shared_frame_features_match_objects_alone():
    """Several objects on one frame (queries of shape (1, n, C)) on the low-precision path."""
    model = _model()
    x, x_pos, memory, memory_pos = _inputs(batch=2, shared=True)
    batched = _run(model, (x, x_pos, memory, memory_pos), True)
    for b in range(2):
        alone = _run(model, (x, x_pos, memory[b : b + 1], memory_pos[b : b + 1]), True)
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=2e-2)


@pytest.mark.parametrize("queries", [4096, 1000, 7])
@pytest.mark.parametrize(
    ("lowp", "budget", "blocks_at_1024px"),
    [
        (torch.bfloat16, "_LOWP_SCORE_BUFFER_BYTES", (512, 8)),
        (None, "_SCORE_BUFFER_BYTES", (256, 16)),
    ],
)
def test_score_blocks_are_even_and_fit_the_budget(queries, lowp, budget, blocks_at_1024px):
    """Blocks of query rows split the queries evenly (no thin last block) and each fits the
    scratch budget, under glibc's largest mmap threshold (32 MiB) so that the block comes from
    the heap's freed pages instead of a fresh mapping each frame."""
    keys = 28_736
    q = torch.empty(1, queries, 8)
    scores = memory_attention.score_buffer(q, keys, lowp)
    rows, width = scores.shape
    blocks = -(-queries // rows)
    assert scores.dtype == (lowp or q.dtype) and width % 16 == 0 and width >= keys
    assert rows == -(-queries // blocks)  # the most even split into that many blocks
    nbytes = rows * width * scores.element_size()
    assert nbytes <= getattr(memory_attention, budget) and nbytes < 32 * 2**20
    if queries == 4096:
        assert (rows, blocks) == blocks_at_1024px


def test_one_key_scratch_serves_every_layer_and_object(monkeypatch):
    """The transposed keys of every layer and object are written into one scratch made once
    per call (fresh 15 MB tensors per layer and object cost page faults at 1024 px)."""
    model = _model()
    x, x_pos, memory, memory_pos = _inputs(batch=2, shared=True)
    made, written = [], set()
    make = memory_attention.key_buffer
    rotate = RoPEAttention._rotated_keys_t_lowp

    def counting_make(*args):
        made.append(make(*args))
        return made[-1]

    def recording_rotate(self, k, rope, n_rope, out):
        keys = rotate(self, k, rope, n_rope, out)
        written.add(keys.data_ptr())
        return keys

    monkeypatch.setattr(memory_attention, "key_buffer", counting_make)
    monkeypatch.setattr(RoPEAttention, "_rotated_keys_t_lowp", recording_rotate)
    _run(model, (x, x_pos, memory, memory_pos), True)
    assert len(made) == 1
    assert written == {made[0].data_ptr()}
