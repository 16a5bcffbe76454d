"""Memory encoder, memory assembly and memory attention against the debug intermediates of
step 3 (first propagation) of the mini video scenario (mini/video*.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_testing import close, normalize

from napari_sam2.model.memory_attention import RoPEAttention

MEM_ATOL = {torch.float32: 0.07, torch.float64: 1e-6}  # stored features are bfloat16 values
T_MAX = 7  # min(8 frames, 16) - 1


def _bf16(t: torch.Tensor) -> torch.Tensor:
    """Store like the reference: to bfloat16 via float32 (two roundings from float64)."""
    return t.float().bfloat16().to(t.dtype)


@pytest.fixture(scope="module")
def setup(precision, mini_frames):
    model, dtype, _, video, atol = precision
    np_dtype = np.float32 if dtype == torch.float32 else np.float64

    def t(name):
        return torch.from_numpy(np.asarray(video[name])).to(dtype)

    with torch.no_grad():
        feats = {
            i: model.encode_image(normalize(mini_frames[i].astype(np_dtype), dtype))
            for i in (0, 1, 2)
        }
    return model, dtype, video, atol, feats, t


def test_frame_features(setup):
    model, dtype, video, atol, feats, t = setup
    close(feats[1].vision, video["dbg_f1_vision_feat_stride16"], atol, "p2 of frame 1")
    close(feats[1].vision_pos, video["dbg_f1_vision_pos_stride16"], atol, "PE of frame 1")


def test_conditioning_memory_binarized(setup):
    """Prompted frames: binarized mask; obj 2 on frame 2 is absent (no_obj_embed_spatial)."""
    model, dtype, video, atol, feats, t = setup
    with torch.no_grad():
        high = model.upsample_logits(t("s1_f0_lowres_logits")[:, None])
        mem, pos = model.encode_memory(
            feats[0].vision, high, t("s1_f0_object_score_logits")[:, None], binarize=True
        )
        close(_bf16(mem), video["dbg_s3_f0_obj1_maskmem_features"], MEM_ATOL[dtype], "f0 obj1")
        close(pos, video["dbg_s3_f0_obj1_maskmem_pos_enc"], atol, "memory PE")
        score2 = t("s2_f2_object_score_logits")[1:2, None]
        assert score2.item() <= 0, "fixture: object 2 is absent on frame 2"
        high = model.upsample_logits(t("s2_f2_lowres_logits")[1:2, None])
        mem2, _ = model.encode_memory(feats[2].vision, high, score2, binarize=True)
        close(_bf16(mem2), video["dbg_s3_f2_obj2_maskmem_features"], MEM_ATOL[dtype], "f2 obj2")
        # without the no-object embedding the result would be off by it
        delta = model.no_obj_embed_spatial.abs().max().item()
        assert delta > 10 * MEM_ATOL[dtype]
        plain = mem2 - model.no_obj_embed_spatial[..., None, None]
        err = (plain - torch.from_numpy(video["dbg_s3_f2_obj2_maskmem_features"]).to(dtype)).abs()
        assert err.max().item() > MEM_ATOL[dtype]


def test_tracked_memory_sigmoid(setup):
    model, dtype, video, atol, feats, t = setup
    with torch.no_grad():
        high = model.upsample_logits(t("s3_f1_lowres_logits")[:, None])
        mem, _ = model.encode_memory(
            feats[1].vision.expand(2, -1, -1, -1),
            high,
            t("s3_f1_object_score_logits")[:, None],
            binarize=False,
        )
    close(_bf16(mem), video["s3_f1_maskmem_features"], MEM_ATOL[dtype], "tracked memory f1")


def _assemble_obj1(model, t):
    tok, pos = model.spatial_memory(
        t("dbg_s3_f0_obj1_maskmem_features"), t("dbg_s3_f0_obj1_maskmem_pos_enc"), 6
    )
    ptok, ppos = model.pointer_memory(t("dbg_s3_f0_obj1_obj_ptr")[None], torch.tensor([1]), T_MAX)
    return torch.cat((tok, ptok), 1), torch.cat((pos, ppos), 1), ptok.shape[1]


def _assemble_obj2(model, t):
    pe = t("dbg_s3_f0_obj1_maskmem_pos_enc")
    cond, cond_pos = model.spatial_memory(t("dbg_s3_f2_obj2_maskmem_features"), pe, 6)
    prev, prev_pos = model.spatial_memory(t("s3_f0_maskmem_features")[1:2], pe, 0)
    ptok, ppos = model.pointer_memory(t("s3_f0_obj_ptr")[1:2][None], torch.tensor([1]), T_MAX)
    return torch.cat((cond, prev, ptok), 1), torch.cat((cond_pos, prev_pos, ppos), 1), 4


@pytest.mark.parametrize("raw_values", [True, False], ids=["raw-values", "sdpa"])
@pytest.mark.parametrize("obj,assemble", [(1, _assemble_obj1), (2, _assemble_obj2)])
def test_memory_sequence_and_attention(setup, obj, assemble, raw_values, monkeypatch):
    """Both cross-attention paths: values projected after (CPU) or before (GPU) attending."""
    model, dtype, video, atol, feats, t = setup
    if not raw_values:
        monkeypatch.setattr(RoPEAttention, "uses_raw_values", lambda self, device: False)
    prefix = f"dbg_s3_f1_obj{obj}"
    with torch.no_grad():
        memory, memory_pos, n_ptr = assemble(model, t)
        assert n_ptr == int(video[f"{prefix}_num_obj_ptr_tokens"])
        close(memory.transpose(0, 1), video[f"{prefix}_memory"], atol, "memory tokens")
        close(memory_pos.transpose(0, 1), video[f"{prefix}_memory_pos"], atol, "memory PE")
        pix = model.attend_to_memory(
            feats[1].vision, feats[1].vision_pos, memory, memory_pos, n_ptr
        )
        close(pix, video[f"{prefix}_pix_feat_with_mem"], atol, "memory attention output")
        # the decoder on the conditioned features gives the tracked result of frame 1
        out = model.predict_masks(pix, feats[1].high_res, None, None, None, multimask=True)
    row = obj - 1
    close(out.low_res[:, 0], video["s3_f1_lowres_logits"][row : row + 1], 10 * atol, "logits")
    close(out.obj_ptr, video["s3_f1_obj_ptr"][row : row + 1], atol, "pointer")
    assert out.decision["num_sparse_tokens"] == 2


def test_mask_as_output(mini_model, mini_dir, mini_frames):
    """Step 6: a mask prompt on frame 7 is the output; the pointer comes from the decoder."""
    video = np.load(mini_dir / "video.npz")
    model = mini_model
    mask = torch.from_numpy(video["input_step6_mask"])[None, None]
    with torch.no_grad():
        feats = model.encode_image(normalize(mini_frames[7], torch.float32))
        out = model.mask_as_output(feats.vision, feats.high_res, mask)
        empty = model.mask_as_output(feats.vision, feats.high_res, torch.zeros_like(mask))
    close(out.low_res[:, 0], video["s6_f7_lowres_logits"][2:3], 1e-4, "low-res logits")
    close(out.obj_ptr, video["s6_f7_obj_ptr"][2:3], 1e-4, "pointer")
    close(out.object_score_logits[:, 0], video["s6_f7_object_score_logits"][2:3], 0, "score")
    assert set(out.high_res.unique().tolist()) == {-10.0, 10.0}
    torch.testing.assert_close(empty.low_res, torch.full_like(empty.low_res, -10.0))
    assert empty.object_score_logits.item() == -10.0
    assert torch.equal(empty.obj_ptr, model.no_obj_ptr.detach())


# test_bfloat16_memory_is_promoted and test_pointer_memory_layout_and_versions compare with
# no reference array: they are in test_network_properties.py, on the small model.
