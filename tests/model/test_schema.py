"""State-dict names and shapes of all eight official models and the mini model, and the
configurations written in our code against the official hyperparameters."""

from __future__ import annotations

import json

import pytest
import torch

from napari_sam2.model import MODEL_NAMES, SAM2Config, SAM2Model, build_sam2
from small_model import small_config


def _schema(reference_dir, name):
    return json.loads((reference_dir / "schema" / f"{name}.json").read_text())


def test_state_dicts_match_the_official_schemas(reference_dir):
    """All eight official models (one test: the schemas are one reference fact)."""
    for name in MODEL_NAMES:
        _check_state_dict(reference_dir, name)


def _check_state_dict(reference_dir, name: str) -> None:
    schema = _schema(reference_dir, name)
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        model = SAM2Model(SAM2Config.from_name(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(schema["state_dict"]), f"{name}: keys or their order differ"
    assert ours == schema["state_dict"], name
    assert sum(p.numel() for p in model.parameters()) == schema["num_parameters"], name
    buffers = [k for k, _ in model.named_buffers() if k in ours]
    assert buffers == ["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    sd = {k: torch.empty(shape, device="meta") for k, shape in schema["state_dict"].items()}
    model.load_state_dict(sd, strict=True, assign=True)


def test_configs_match_the_official_hyperparameters(reference_dir):
    for name in MODEL_NAMES:
        _check_hyperparameters(reference_dir, name)


def _check_hyperparameters(reference_dir, name: str) -> None:
    hp = _schema(reference_dir, name)["hyperparameters"]
    config = SAM2Config.from_name(name)
    assert config.image_size == hp["image_size"] and config.hidden_dim == hp["hidden_dim"]
    assert list(config.q_pool_blocks) == hp["trunk.q_pool_blocks"]
    assert list(config.channel_list) == hp["neck.backbone_channel_list"]
    blocks = [
        dict(index=i, dim=b.dim, dim_out=b.dim_out, heads=b.heads,
             window_size=b.window_size, q_pool=b.q_pool)
        for i, b in enumerate(config.blocks)
    ]  # fmt: skip
    assert blocks == hp["trunk.blocks"], name
    assert config.no_obj_embed_spatial == hp["model.no_obj_embed_spatial"], name
    assert config.proj_tpos_enc_in_obj_ptrs == hp["model.proj_tpos_enc_in_obj_ptrs"], name
    # from_dict on the official values gives the same configuration
    assert SAM2Config.from_dict(hp, name=name).to_dict() | {"extras": {}} == config.to_dict() | {
        "extras": {}
    }


def test_mini_config_and_schema(mini_dir, mini_config):
    schema = json.loads((mini_dir / "schema.json").read_text())
    values = json.loads((mini_dir / "config.json").read_text())["values"]
    blocks = [(b["dim"], b["dim_out"], b["heads"], b["window_size"], b["q_pool"]) for b in
              values["trunk.blocks"]]  # fmt: skip
    assert [(b.dim, b.dim_out, b.heads, b.window_size, b.q_pool) for b in mini_config.blocks] == (
        blocks
    )
    with torch.device("meta"):
        model = SAM2Model(mini_config)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == schema["state_dict"]


def test_from_dict_rejects_inconsistent_values():
    from small_model import config_values

    values = config_values()
    assert SAM2Config.from_dict(values).to_dict() | {"name": "", "extras": {}} == (
        small_config().to_dict() | {"name": "", "extras": {}}
    )
    with pytest.raises(ValueError, match="trunk.q_pool_blocks"):
        SAM2Config.from_dict({**values, "trunk.q_pool_blocks": [1, 3, 7]})
    incomplete = dict(values)
    del incomplete["mem_dim"]
    with pytest.raises(KeyError, match="mem_dim"):
        SAM2Config.from_dict(incomplete)


def test_build_from_official_file_loads_every_tensor(tmp_path):
    name = "sam2.1_hiera_tiny"
    # random values under the official names and shapes (the tests above check that ours are
    # the official ones against the schemas, where ../shared is present)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in SAM2Model(SAM2Config.from_name(name)).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    path = tmp_path / "tiny.pt"
    torch.save({"model": sd}, path)
    model = build_sam2(name, checkpoint=path)
    assert not model.training
    ours = model.state_dict()
    for key in ("image_encoder.trunk.pos_embed", "no_obj_embed_spatial", "obj_ptr_tpos_proj.bias"):
        assert torch.equal(ours[key], sd[key])
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    assert model.config.image_mean == (0.485, 0.456, 0.406)
    assert model.image_size == 1024
