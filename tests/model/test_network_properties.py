"""Properties of the network that hold for any weights, checked on the small random-weight model:
object-score gating, a mask given as the output, the object-pointer memory layout and
bfloat16 memory. (Moved from the parity files: they compare with no reference array.)"""

from __future__ import annotations

import pytest
import torch

from napari_sam2.model import SAM2Config, SAM2Model

T_MAX = 7  # min(8 frames, 16) - 1, as in an 8-frame video


def _image(model, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    s = model.image_size
    return torch.randn(1, 3, s, s, generator=gen).to(next(model.parameters()).dtype)


def _click(dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[[100.5, 170.25]]], dtype=dtype), torch.ones(1, 1, dtype=torch.long)


def test_absent_object_gets_no_obj_score_and_pointer(small_model):
    """Forcing the object score <= 0 gates the logits to -1024 and the pointer to no_obj_ptr;
    forcing it > 0 on the same input does not (so the gating is what the score changes)."""
    model = small_model
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    saved = head.bias.detach().clone()
    outputs = {}
    with torch.no_grad():
        feats = model.encode_image(_image(model))
        pix = model.add_no_memory_embedding(feats.vision)
        coords, labels = _click(torch.float32)
        try:
            for shift in (100.0, -100.0):
                head.bias.copy_(saved + shift)
                outputs[shift] = model.predict_masks(
                    pix, feats.high_res, coords, labels, None, True
                )
        finally:
            head.bias.copy_(saved)
    present, absent = outputs[100.0], outputs[-100.0]
    assert (present.object_score_logits > 0).all()
    assert (present.low_res > -1024.0).all()
    assert not torch.equal(present.obj_ptr, model.no_obj_ptr.detach())
    assert (absent.object_score_logits <= 0).all()
    assert torch.all(absent.low_res == -1024.0)
    assert torch.equal(absent.obj_ptr, model.no_obj_ptr.detach())


def test_mask_as_output(small_model):
    """A mask prompt is the output (logits +-10); an empty mask is an absent object."""
    model = small_model
    s = model.image_size
    mask = torch.zeros(1, 1, s, s)
    mask[..., 60:140, 80:200] = 1.0
    with torch.no_grad():
        feats = model.encode_image(_image(model, 1))
        out = model.mask_as_output(feats.vision, feats.high_res, mask)
        empty = model.mask_as_output(feats.vision, feats.high_res, torch.zeros_like(mask))
    assert set(out.high_res.unique().tolist()) == {-10.0, 10.0}
    assert torch.equal(out.high_res > 0, mask > 0)
    assert out.object_score_logits.item() == 10.0
    assert not torch.equal(out.obj_ptr, model.no_obj_ptr.detach())  # from the decoder
    torch.testing.assert_close(empty.low_res, torch.full_like(empty.low_res, -10.0))
    assert empty.object_score_logits.item() == -10.0
    assert torch.equal(empty.obj_ptr, model.no_obj_ptr.detach())


def test_pointer_memory_layout_and_versions(small_model):
    """Pointer j is cut into C/M consecutive chunks; SAM 2.0 gives zero pointer PE."""
    model = small_model
    c, m = model.config.hidden_dim, model.config.mem_dim
    ptrs = torch.randn(3, 2, c)
    tok, pos = model.pointer_memory(ptrs, torch.tensor([1, 2, 5]), T_MAX)
    k = c // m
    assert tok.shape == (2, 3 * k, m) and pos.shape == (2, 3 * k, m)
    torch.testing.assert_close(tok[1, 2 * k + 1], ptrs[2, 1, m : 2 * m])
    torch.testing.assert_close(pos[0, 2 * k], pos[0, 3 * k - 1])
    assert not torch.allclose(pos[0, 0], pos[0, k])
    v20 = SAM2Model(
        SAM2Config(
            **{
                **model.config.to_dict(),
                "no_obj_embed_spatial": False,
                "proj_tpos_enc_in_obj_ptrs": False,
                "add_tpos_enc_to_obj_ptrs": False,
            }
        )
    )
    _, pos20 = v20.pointer_memory(ptrs, torch.tensor([1, 2, 5]), T_MAX)
    assert torch.count_nonzero(pos20) == 0


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_bfloat16_memory_is_promoted(request, precision):
    """Stored bfloat16 features attend like their float values (SEMANTICS 4.8)."""
    model = request.getfixturevalue("small_model" if precision == "float32" else "small_model_f64")
    dtype = getattr(torch, precision)
    with torch.no_grad():
        feats = [model.encode_image(_image(model, seed)) for seed in (0, 1)]
        pix = model.add_no_memory_embedding(feats[0].vision)
        coords, labels = _click(dtype)
        out = model.predict_masks(pix, feats[0].high_res, coords, labels, None, True)
        mem, mem_pos = model.encode_memory(
            feats[0].vision, out.high_res, out.object_score_logits, True
        )
        tok, pos = model.spatial_memory(mem, mem_pos, 6)
        ptok, ppos = model.pointer_memory(out.obj_ptr[None], torch.tensor([1]), T_MAX)
        memory, memory_pos = torch.cat((tok, ptok), 1), torch.cat((pos, ppos), 1)
        n_ptr = ptok.shape[1]
        stored = memory.bfloat16()  # e.g. a bank without pointers keeps bfloat16
        a = model.attend_to_memory(
            feats[1].vision, feats[1].vision_pos, stored.to(dtype), memory_pos, n_ptr
        )
        b = model.attend_to_memory(feats[1].vision, feats[1].vision_pos, stored, memory_pos, n_ptr)
        full = model.attend_to_memory(
            feats[1].vision, feats[1].vision_pos, memory, memory_pos, n_ptr
        )
    assert b.dtype == dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(b, full)  # the bfloat16 rounding did change the memory
