"""The network follows the parameter dtype and runs under autocast."""

from __future__ import annotations

import torch


def _run_all_steps(model, dtype):
    s = model.image_size
    x = torch.randn(1, 3, s, s, dtype=dtype)
    feats = model.encode_image(x)
    pix = model.add_no_memory_embedding(feats.vision)
    coords = torch.tensor([[[100.5, 170.25]]])
    out = model.predict_masks(pix, feats.high_res, coords, torch.ones(1, 1, dtype=torch.long),
                              None, multimask=True)  # fmt: skip
    mem, mem_pos = model.encode_memory(feats.vision, out.high_res, out.object_score_logits, True)
    tok, pos = model.spatial_memory(mem.bfloat16(), mem_pos, 6)
    ptok, ppos = model.pointer_memory(out.obj_ptr[None], torch.tensor([1]), 7)
    memory, memory_pos = torch.cat((tok, ptok), 1), torch.cat((pos, ppos), 1)
    pix = model.attend_to_memory(feats.vision, feats.vision_pos, memory, memory_pos, ptok.shape[1])
    out2 = model.predict_masks(pix, feats.high_res, None, None, out.low_res, multimask=False)
    masked = model.mask_as_output(feats.vision, feats.high_res, (out.high_res > 0).to(dtype))
    return feats, out, mem, out2, masked


def test_float64_end_to_end(small_model_f64):
    with torch.no_grad():
        feats, out, mem, out2, masked = _run_all_steps(small_model_f64, torch.float64)
    outputs = (feats.vision, feats.vision_pos, *feats.high_res, out.low_res, out.high_res)
    outputs += (out.obj_ptr, mem, out2.low_res, out2.obj_ptr, masked.low_res, masked.obj_ptr)
    for t in outputs:
        assert t.dtype == torch.float64


def test_cpu_autocast_bfloat16(small_model):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats, out, mem, out2, masked = _run_all_steps(small_model, torch.float32)
    assert out.low_res.shape == (1, 1, 64, 64)
    assert torch.isfinite(out2.low_res).all() and torch.isfinite(masked.obj_ptr).all()


def test_rejects_wrong_image_size(small_model):
    import pytest

    with pytest.raises(ValueError, match=r"\(B, 3, 256, 256\)"):
        small_model.encode_image(torch.zeros(1, 3, 128, 128))
