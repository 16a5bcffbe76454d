"""State-dict names and shapes of all eight official models and the mini model, and the
configurations written in our code against the official hyperparameters."""

from __future__ import annotations

import json

import pytest
import torch

from napari_sam2.model import MODEL_NAMES, SAM2Config, SAM2Model, build_sam2


def _schema(reference_dir, name):
    return json.loads((reference_dir / "schema" / f"{name}.json").read_text())


def _random_state(schema: dict, empty: bool = False) -> dict[str, torch.Tensor]:
    make = torch.empty if empty else torch.randn
    return {k: make(*shape) for k, shape in schema["state_dict"].items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_matches_schema(reference_dir, name):
    schema = _schema(reference_dir, name)
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        model = SAM2Model(SAM2Config.from_name(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(schema["state_dict"]), "keys or their order differ"
    assert ours == schema["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == schema["num_parameters"]
    buffers = [k for k, _ in model.named_buffers() if k in ours]
    assert buffers == ["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    sd = {k: torch.empty(shape, device="meta") for k, shape in schema["state_dict"].items()}
    model.load_state_dict(sd, strict=True, assign=True)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_matches_official_hyperparameters(reference_dir, name):
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
    assert blocks == hp["trunk.blocks"]
    assert config.no_obj_embed_spatial == hp["model.no_obj_embed_spatial"]
    assert config.proj_tpos_enc_in_obj_ptrs == hp["model.proj_tpos_enc_in_obj_ptrs"]
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


def test_from_dict_rejects_inconsistent_values(mini_dir):
    values = json.loads((mini_dir / "config.json").read_text())["values"]
    with pytest.raises(ValueError, match="trunk.q_pool_blocks"):
        SAM2Config.from_dict({**values, "trunk.q_pool_blocks": [1, 3, 7]})
    incomplete = dict(values)
    del incomplete["mem_dim"]
    with pytest.raises(KeyError, match="mem_dim"):
        SAM2Config.from_dict(incomplete)


def test_build_from_official_file_loads_every_tensor(reference_dir, tmp_path):
    name = "sam2.1_hiera_tiny"
    sd = _random_state(_schema(reference_dir, name))
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
