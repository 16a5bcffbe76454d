"""Which official model a state dict holds, from its parameter names and shapes alone."""

from __future__ import annotations

import json

import pytest
import torch

from napari_sam2.model import (
    MODEL_NAMES,
    SAM2Config,
    SAM2Model,
    describe_state_dict,
    identify_checkpoint,
    load_checkpoint,
    state_dict_mismatch,
)


def shapes_only(config: SAM2Config) -> dict[str, torch.Tensor]:
    """The state dict of a network of ``config``, as meta tensors (names and shapes only)."""
    with torch.device("meta"):
        return SAM2Model(config).state_dict()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_official_model_is_recognised(name):
    assert identify_checkpoint(shapes_only(SAM2Config.from_name(name))) == name


def test_official_schemas_are_recognised(reference_dir):
    """The parameter shapes of Meta's own checkpoints (recorded in the reference schema)."""
    for name in MODEL_NAMES:
        schema = json.loads((reference_dir / "schema" / f"{name}.json").read_text())
        state = {k: torch.empty(s, device="meta") for k, s in schema["state_dict"].items()}
        assert identify_checkpoint(state) == name


def test_what_tells_the_models_apart():
    state = {name: shapes_only(SAM2Config.from_name(name)) for name in MODEL_NAMES}
    # SAM 2.0 and 2.1: three keys
    assert set(state["sam2.1_hiera_tiny"]) - set(state["sam2_hiera_tiny"]) == {
        "no_obj_embed_spatial",
        "obj_ptr_tpos_proj.weight",
        "obj_ptr_tpos_proj.bias",
    }
    # tiny and small: trunk blocks (12 and 16), same position embedding
    assert "image_encoder.trunk.blocks.15.attn.qkv.weight" in state["sam2.1_hiera_small"]
    assert "image_encoder.trunk.blocks.12.attn.qkv.weight" not in state["sam2.1_hiera_tiny"]
    pos = "image_encoder.trunk.pos_embed"
    assert state["sam2.1_hiera_tiny"][pos].shape == state["sam2.1_hiera_small"][pos].shape
    # base_plus and large: the position embedding
    assert state["sam2.1_hiera_base_plus"][pos].shape != state["sam2.1_hiera_large"][pos].shape


def test_sam21_without_its_extra_keys_is_sam20():
    state = shapes_only(SAM2Config.from_name("sam2.1_hiera_small"))
    for key in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
        del state[key]
    assert identify_checkpoint(state) == "sam2_hiera_small"


def test_custom_configuration_is_not_recognised(small_config):
    state = shapes_only(small_config)
    assert identify_checkpoint(state) is None
    assert describe_state_dict(state).startswith("an unknown SAM 2.1 model")


def test_partial_extended_or_reshaped_official_dicts_are_not_recognised():
    tiny = shapes_only(SAM2Config.from_name("sam2.1_hiera_tiny"))
    missing = dict(tiny)
    del missing["sam_mask_decoder.iou_token.weight"]
    extra = dict(tiny, **{"extra.weight": torch.empty(3, device="meta")})
    reshaped = dict(tiny, **{"sam_mask_decoder.iou_token.weight": torch.empty(2, 256)})
    for state in (missing, extra, reshaped):
        assert identify_checkpoint(state) is None
    assert identify_checkpoint({}) is None
    assert identify_checkpoint({"image_encoder.trunk.pos_embed": "not a tensor"}) is None


def test_state_dict_mismatch_says_what_it_looks_like(small_config):
    small = shapes_only(small_config)
    assert state_dict_mismatch(small, small_config) is None
    message = state_dict_mismatch(small, SAM2Config.from_name("sam2.1_hiera_tiny"))
    assert "looks like an unknown SAM 2.1 model" in message and "sam2.1_hiera_tiny" in message


def test_files_recognised_with_and_without_memory_mapping(tmp_path, small_config, small_checkpoint):
    plain = load_checkpoint(small_checkpoint)
    mapped = load_checkpoint(small_checkpoint, mmap=True)
    assert plain.keys() == mapped.keys()
    assert all(torch.equal(plain[k], mapped[k]) for k in plain)
    # the legacy (non-zip) format cannot be mapped: it is read
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": plain}, legacy, _use_new_zipfile_serialization=False)
    read = load_checkpoint(legacy, mmap=True)
    assert all(torch.equal(plain[k], read[k]) for k in plain)
    assert identify_checkpoint(read) is None
