"""Single-frame parity of every module with the official code (mini/image*.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_testing import close, normalize

from cuda_testing import ieee_float32

CASES = [("A_multi", True), ("A_single", False), ("B_multi", True)]


def _input(dtype, image_npz, mini_frames):
    if dtype == torch.float32:
        return torch.from_numpy(image_npz["input_normalized"])
    # the float64 run normalized float64(frames) in float64
    return normalize(mini_frames[0].astype(np.float64), torch.float64)


@pytest.fixture(scope="module")
def encoded(precision, mini_frames):
    model, dtype, image, _, atol = precision
    x = _input(dtype, image, mini_frames)
    with torch.no_grad():
        trunk = model.image_encoder.trunk(x)
        neck, _ = model.image_encoder(x)
        pos = [model.image_encoder.neck.position_encoding(level) for level in neck]
        feats = model.encode_image(x)
    return model, dtype, image, atol, x, trunk, neck, pos, feats


def test_float32_input_matches_reference_normalization(mini_dir, mini_frames):
    image = np.load(mini_dir / "image.npz")
    x = normalize(mini_frames[0], torch.float32)
    assert torch.equal(x, torch.from_numpy(image["input_normalized"]))


def test_image_encoder_levels(encoded):
    model, dtype, image, atol, x, trunk, neck, pos, feats = encoded
    assert all(t.dtype == dtype for t in trunk)
    for i, t in enumerate(trunk):
        if f"trunk_stage{i}" in image:
            close(t, image[f"trunk_stage{i}"], atol, f"trunk_stage{i}")
    assert len(neck) == 3, "scalp drops the coarsest level"
    for i, t in enumerate(neck):
        if f"backbone_fpn_{i}_raw" in image:
            close(t, image[f"backbone_fpn_{i}_raw"], atol, f"neck level {i}")
    close(feats.vision, image["backbone_fpn_2_raw"], atol, "vision")
    close(feats.high_res[0], image["high_res_s0_after_conv_s0"], atol, "conv_s0")
    close(feats.high_res[1], image["high_res_s1_after_conv_s1"], atol, "conv_s1")


def test_position_encodings(encoded):
    model, dtype, image, atol, x, trunk, neck, pos, feats = encoded
    close(feats.vision_pos, image["vision_pos_enc_2"], atol, "stride-16 PE")
    for i in (0, 1):
        if f"vision_pos_enc_{i}" in image:  # stored as float16
            close(pos[i], image[f"vision_pos_enc_{i}"], 1e-3, f"PE level {i}")
    dense = model.sam_prompt_encoder.dense_pe()
    assert dense.dtype == dtype
    close(dense, image["dense_pe"], atol, "dense PE")
    pix = model.add_no_memory_embedding(feats.vision)
    close(pix, image["pix_feat_with_no_mem_embed"], atol, "no_mem_embed")


def _prompt(image, case, dtype):
    p = case[0]
    coords = torch.from_numpy(image[f"{p}_point_coords_model"]).to(dtype)
    labels = torch.from_numpy(image[f"{p}_point_labels_model"]).long()
    mask = torch.from_numpy(image["B_mask_input"]).to(dtype) if p == "B" else None
    return coords, labels, mask


@pytest.mark.parametrize("case,multimask", CASES)
def test_prompt_embeddings(encoded, case, multimask):
    model, dtype, image, atol, *_ = encoded
    coords, labels, mask = _prompt(image, case, dtype)
    with torch.no_grad():
        sparse, dense = model.sam_prompt_encoder(coords, labels, mask)
    close(sparse, image[f"{case}_sparse_embeddings"], atol, "sparse")
    close(dense, image[f"{case}_dense_embeddings"], atol, "dense")


@pytest.mark.parametrize("case,multimask", CASES)
def test_decoder_outputs(encoded, case, multimask, mini_dir):
    import json

    model, dtype, image, atol, x, trunk, neck, pos, feats = encoded
    coords, labels, mask = _prompt(image, case, dtype)
    pix = model.add_no_memory_embedding(feats.vision)
    with torch.no_grad():
        sparse, dense = model.sam_prompt_encoder(coords, labels, mask)
        raw = model.sam_mask_decoder(
            pix, model.sam_prompt_encoder.dense_pe(), sparse, dense, feats.high_res
        )
        out = model.predict_masks(pix, feats.high_res, coords, labels, mask, multimask)
    close(raw.masks, image[f"{case}_decoder_all_mask_logits"], atol, "all mask logits")
    close(raw.ious, image[f"{case}_decoder_all_iou"], atol / 10, "all IoUs")
    close(raw.mask_tokens, image[f"{case}_decoder_all_mask_tokens"], atol, "mask tokens")
    close(out.low_res, image[f"{case}_low_res_best"], atol, "chosen low-res logits")
    close(out.obj_ptr, image[f"{case}_obj_ptr"], atol, "object pointer")
    close(out.object_score_logits, image[f"{case}_object_score_logits"], atol, "object score")
    best_iou = image[f"{case}_iou_out"].max(axis=1, keepdims=True)
    if not multimask:
        best_iou = image[f"{case}_iou_out"]
    close(out.ious, best_iou, atol / 10, "IoU of the chosen mask")
    assert out.high_res.shape == (1, 1, model.image_size, model.image_size)
    meta = json.loads((mini_dir / "image_meta.json").read_text())
    key = "decisions_float32" if dtype == torch.float32 else "decisions_float64"
    expected = meta[key][case]
    assert out.decision["multimask"] == expected["multimask_output"]
    assert out.decision["selected_token"] == [expected["selected_token"]]
    assert out.decision["pointer_token"] == [expected["selected_token"] if multimask else 0]
    assert out.decision["num_sparse_tokens"] == expected["num_sparse_tokens"]
    np.testing.assert_allclose(out.decision["iou_all"][0], expected["iou_all"], atol=atol / 10)
    # the pointer is obj_ptr_proj of the token the reference used
    with torch.no_grad():
        ptr = model.obj_ptr_proj(
            torch.from_numpy(image[f"{case}_sam_output_token_used_for_obj_ptr"]).to(dtype)
        )
    close(ptr, image[f"{case}_obj_ptr"], atol, "pointer from the reference token")


# test_absent_object_gets_no_obj_score_and_pointer: in test_network_properties.py (no array)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case,multimask", CASES)
def test_float32_on_cuda(mini_config, mini_checkpoint, mini_dir, case, multimask):
    """Encoder, prompt encoder and decoder on CUDA in float32 against the reference."""
    from napari_sam2.model import build_sam2

    model = build_sam2(mini_config, checkpoint=mini_checkpoint, device="cuda")
    image = np.load(mini_dir / "image.npz")
    coords, labels, mask = (
        None if t is None else t.cuda() for t in _prompt(image, case, torch.float32)
    )
    with torch.no_grad(), ieee_float32():
        feats = model.encode_image(torch.from_numpy(image["input_normalized"]).cuda())
        pix = model.add_no_memory_embedding(feats.vision)
        out = model.predict_masks(pix, feats.high_res, coords, labels, mask, multimask)
    atol = 1e-3  # README tolerances for a float32 implementation
    close(feats.vision, image["backbone_fpn_2_raw"], atol, "vision")
    close(feats.high_res[0], image["high_res_s0_after_conv_s0"], atol, "conv_s0")
    close(out.low_res, image[f"{case}_low_res_best"], atol, "chosen low-res logits")
    close(out.obj_ptr, image[f"{case}_obj_ptr"], 1e-4, "object pointer")
    close(out.object_score_logits, image[f"{case}_object_score_logits"], 5e-4, "object score")
