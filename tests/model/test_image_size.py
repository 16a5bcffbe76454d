"""Any input resolution and the registered fine-tunes by name (no ``../shared`` needed).

A resolution changes only grids derived from ``image_size`` (stride-16 grid, RoPE grid of the
memory attention, prompt-encoder embedding and mask-input sizes, low-res masks), never a
parameter: one checkpoint loads at every size, and the fine-tunes are official architectures
at their own resolution (MedSAM2: sam2.1_hiera_tiny at 512 px). The network at another size
is exercised with the small test configuration; its 512 px parity with the official code is
``test_parity_t512.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import napari_sam2.weights
from napari_sam2.model import (
    FINE_TUNE_NAMES,
    FINE_TUNES,
    MODEL_NAMES,
    SAM2Config,
    SAM2Model,
    build_sam2,
    identify_checkpoint,
)
from napari_sam2.model.build import state_dict_mismatch


def _architecture(config: SAM2Config) -> dict:
    """Everything but the name: what decides the network."""
    values = config.to_dict()
    values.pop("name")
    return values


def test_from_name_derives_every_size_from_image_size():
    for name in MODEL_NAMES:
        default = SAM2Config.from_name(name)
        assert default.name == name and default.image_size == 1024
        assert SAM2Config.from_name(name, image_size=1024) == default
        for size, grid in ((512, 32), (256, 16), (384, 24), (1024, 64)):
            config = SAM2Config.from_name(name, image_size=size)
            assert config.name == (name if size == 1024 else f"{name}@{size}")
            assert config.image_size == size
            assert config.grid_size == grid
            assert config.image_embedding_size == (grid, grid)
            assert config.rope_feat_sizes == (grid, grid)
            assert config.low_res_mask_size == size // 4
            assert config.mask_input_size == (size // 4, size // 4)
            # only the resolution differs from the official configuration
            assert _architecture(config) == dict(_architecture(default), image_size=size)
            # the name says the size, so it builds the same configuration again
            assert SAM2Config.from_name(config.name) == config


def test_a_checkpoint_fits_every_size():
    with torch.device("meta"):
        state = SAM2Model(SAM2Config.from_name("sam2.1_hiera_tiny")).state_dict()
    for name in ("sam2.1_hiera_tiny@256", "sam2.1_hiera_tiny@768", "medsam2_latest"):
        assert state_dict_mismatch(state, SAM2Config.from_name(name)) is None, name


def test_fine_tunes_are_official_architectures_at_their_size():
    assert len(MODEL_NAMES) == 8 and not set(FINE_TUNE_NAMES) & set(MODEL_NAMES)
    assert set(FINE_TUNE_NAMES) == {
        "medsam2_latest",
        "medsam2_2411",
        "medsam2_ct_lesion",
        "medsam2_mri_liver_lesion",
        "medsam2_us_heart",
        "micro_sam_hvit_t_cells",
    }
    for name in FINE_TUNE_NAMES:
        base, size = FINE_TUNES[name]
        config = SAM2Config.from_name(name)
        assert config.name == name
        assert _architecture(config) == _architecture(SAM2Config.from_name(base, image_size=size))
        assert SAM2Config.from_name(name, image_size=size) == config
        other = SAM2Config.from_name(name, image_size=256)
        assert other.name == f"{name}@256" and other.image_size == 256
    medsam2 = SAM2Config.from_name("medsam2_latest")
    assert (medsam2.image_size, medsam2.grid_size, medsam2.low_res_mask_size) == (512, 32, 128)
    assert medsam2.rope_feat_sizes == (32, 32)
    assert SAM2Config.from_name("micro_sam_hvit_t_cells").image_size == 1024


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(image_size=500), ValueError, "image_size 500 is not usable.*multiple of 32"),
        (dict(image_size=528), ValueError, "e.g. 512 or 544"),
        (dict(image_size=0), ValueError, "positive multiple of 32"),
        (dict(image_size=-512), ValueError, "positive multiple of 32"),
        (dict(image_size=512.0), TypeError, "must be an integer, not float"),
        (dict(image_size="512"), TypeError, "must be an integer, not str"),
        (dict(image_size=True), TypeError, "must be an integer, not bool"),
        (dict(name="sam2.1_hiera_tiny@500"), ValueError, "image_size 500 is not usable"),
        (dict(name="sam2.1_hiera_tiny@big"), ValueError, "after '@' must be an image size"),
        (dict(name="sam2.1_hiera_tiny@512", image_size=256), ValueError, "give one of them"),
        (dict(name="medsam2"), ValueError, "unknown SAM 2 model name 'medsam2'.*medsam2_latest"),
    ],
)
def test_bad_sizes_and_names_say_what_is_wrong(kwargs, error, match):
    kwargs = dict(dict(name="sam2.1_hiera_tiny"), **kwargs)
    with pytest.raises(error, match=match):
        SAM2Config.from_name(kwargs.pop("name"), **kwargs)


def test_any_config_checks_its_image_size(small_config):
    assert dataclasses.replace(small_config, image_size=np.int64(384)).image_size == 384
    with pytest.raises(ValueError, match="image_size 300 is not usable"):
        dataclasses.replace(small_config, image_size=300)
    values = {
        "image_size": 512,
        "hidden_dim": 64,
        "mem_dim": 16,
        "trunk.embed_dim": 16,
        "trunk.num_heads": 1,
        "trunk.stages": [1, 2, 3, 2],
        "trunk.global_att_blocks": [5],
        "trunk.window_spec": [8, 4, 14, 7],
        "trunk.window_pos_embed_bkg_spatial_size": [7, 7],
        "memory_attention.num_layers": 2,
        "memory_attention.dim_feedforward": 256,
        "model.no_obj_embed_spatial": True,
        "model.proj_tpos_enc_in_obj_ptrs": True,
        "model.add_tpos_enc_to_obj_ptrs": True,
        "prompt_encoder.image_embedding_size": [32, 32],
        "prompt_encoder.mask_input_size": [128, 128],
    }
    assert SAM2Config.from_dict(values).grid_size == 32
    # sizes a config file states must be those image_size gives
    with pytest.raises(ValueError, match="image_embedding_size"):
        SAM2Config.from_dict(dict(values, image_size=1024))


@pytest.mark.parametrize("size", [512, 384])
def test_network_runs_at_other_sizes(small_config, small_checkpoint, size):
    """Encode, decode (points, mask prompt, mask as output) and memory at size px: every
    tensor has the size's shapes, and the same weights load as at 256 px."""
    config = dataclasses.replace(small_config, image_size=size)
    model = build_sam2(config, checkpoint=small_checkpoint)
    c, m, g, s = config.hidden_dim, config.mem_dim, config.grid_size, size
    images = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        feats = model.encode_image(images)
        assert feats.vision.shape == feats.vision_pos.shape == (1, c, g, g)
        assert feats.high_res[0].shape == (1, c // 8, 4 * g, 4 * g)
        assert feats.high_res[1].shape == (1, c // 4, 2 * g, 2 * g)

        pix = model.add_no_memory_embedding(feats.vision)
        points = torch.tensor([[[0.4 * s, 0.6 * s], [0.1 * s, 0.2 * s]]])
        head = model.predict_masks(pix, feats.high_res, points, torch.tensor([[1, 0]]), None, False)
        assert head.low_res.shape == (1, 1, s // 4, s // 4)
        assert head.high_res.shape == (1, 1, s, s)
        assert head.obj_ptr.shape == (1, c)
        again = model.predict_masks(pix, feats.high_res, None, None, head.low_res, False)
        assert again.low_res.shape == (1, 1, s // 4, s // 4)
        with pytest.raises(ValueError, match=f"expected images of shape \\(B, 3, {s}, {s}\\)"):
            model.encode_image(torch.zeros(1, 3, 1024, 1024))

        mask = torch.zeros(1, 1, s, s)
        mask[..., s // 4 : s // 2, s // 3 : s // 2] = 1
        as_output = model.mask_as_output(feats.vision, feats.high_res, mask)
        assert as_output.low_res.shape == (1, 1, s // 4, s // 4)

        memory, memory_pos = model.encode_memory(
            feats.vision, head.high_res, head.object_score_logits, binarize=True
        )
        assert memory.shape == memory_pos.shape == (1, m, g, g)
        tokens, pos = model.spatial_memory(memory, memory_pos, config.num_maskmem - 1)
        assert tokens.shape == pos.shape == (1, g * g, m)
        ptr, ptr_pos = model.pointer_memory(head.obj_ptr[None], torch.tensor([1]), 16)
        attended = model.attend_to_memory(
            feats.vision,
            feats.vision_pos,
            torch.cat((tokens, ptr), dim=1),
            torch.cat((pos, ptr_pos), dim=1),
            ptr.shape[1],
        )
        assert attended.shape == (1, c, g, g)
        assert torch.isfinite(attended).all()
        tables = model.memory_attention.rope_tables(g, model.dtype, model.device)
        assert tables[0].shape[0] == g * g  # the RoPE grid follows the token grid


def test_tracker_at_512(small_config, small_checkpoint):
    """The tracker runs a 512 px network on frames of another size and shape."""
    from napari_sam2.tracking import Tracker
    from small_model import moving_blob_stack

    model = build_sam2(
        dataclasses.replace(small_config, image_size=512), checkpoint=small_checkpoint
    )
    frames = moving_blob_stack(3, size=96)[:, :, :80]  # (3, 96, 80): not square, not 512
    with torch.no_grad(), Tracker(model, frames) as tracker:
        first = tracker.add_points(0, 1, [[48, 24]], [1])
        assert tracker.stored_output(1, 0).low_res.shape == (1, 1, 128, 128)
        results = [first, *tracker.propagate()]
    assert [r.frame_index for r in results] == [0, 0, 1, 2]
    for r in results:
        assert r.mask_logits.shape == (1, 96, 80) and np.isfinite(r.mask_logits).all()


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """Random weights with the sam2.1_hiera_tiny schema (the MedSAM2 checkpoints' schema)."""
    torch.manual_seed(0)
    return SAM2Model(SAM2Config.from_name("sam2.1_hiera_tiny")).state_dict()


def test_medsam2_builds_from_a_tiny_checkpoint(tiny_state, small_checkpoint):
    model = build_sam2("medsam2_latest", checkpoint=tiny_state)
    assert model.config.name == "medsam2_latest" and model.image_size == 512
    assert model.config.grid_size == 32
    # shapes cannot tell MedSAM2 from tiny: a checkpoint is named by its architecture
    assert identify_checkpoint(tiny_state) == "sam2.1_hiera_tiny"
    with pytest.raises(ValueError, match=r"but medsam2_us_heart \(SAM 2.1: sam2.1_hiera_tiny at "
                       r"512 px\) was requested"):  # fmt: skip
        build_sam2("medsam2_us_heart", checkpoint=small_checkpoint)


def test_names_without_checkpoint_fetch_their_weights(monkeypatch):
    """A fine-tune fetches its own weights; a size suffix runs the same weights at another size."""
    asked: list[str] = []

    class Fetched(Exception):
        pass

    def fake_ensure_checkpoint(name: str, progress=None):
        asked.append(name)
        raise Fetched  # stops before the network is built: only the name matters here

    monkeypatch.setattr(napari_sam2.weights, "ensure_checkpoint", fake_ensure_checkpoint)
    for name in ("medsam2_latest", "micro_sam_hvit_t_cells", "sam2.1_hiera_tiny@512"):
        with pytest.raises(Fetched):
            build_sam2(name)
    with pytest.raises(Fetched):
        build_sam2("medsam2_ct_lesion@1024")
    assert asked == [
        "medsam2_latest",
        "micro_sam_hvit_t_cells",
        "sam2.1_hiera_tiny",
        "medsam2_ct_lesion",
    ]
