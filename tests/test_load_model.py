"""``napari_sam2.api.load_model``: a model from a name, a checkpoint file, a config or a module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam2.api import load_model, track
from napari_sam2.model import SAM2Config
from napari_sam2.tracking.prompts_io import PromptRecord
from official_checkpoints import official_checkpoint


@pytest.fixture(scope="session")
def tiny21(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2.1_hiera_tiny")


@pytest.fixture(scope="session")
def tiny20(tmp_path_factory) -> Path:
    return official_checkpoint(tmp_path_factory, "sam2_hiera_tiny")


def assert_holds(model: torch.nn.Module, path: Path) -> None:
    """The model's parameters are exactly the file's."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    assert own.keys() == state.keys()
    for key in ("image_encoder.trunk.pos_embed", "sam_mask_decoder.iou_token.weight"):
        assert torch.equal(own[key], state[key]), key


def test_a_checkpoint_file_is_recognised_as_its_model(tiny21, tiny20):
    model = load_model(str(tiny21))
    assert model.config.name == "sam2.1_hiera_tiny" and not model.training
    assert_holds(model, tiny21)
    model = load_model(tiny20)  # a Path works as well as a str
    assert model.config.name == "sam2_hiera_tiny"
    assert_holds(model, tiny20)


def test_a_file_name_in_the_working_folder_is_a_file(tiny20, tmp_path, monkeypatch):
    (tmp_path / "weights.pt").symlink_to(tiny20)
    monkeypatch.chdir(tmp_path)
    assert load_model("weights.pt").config.name == "sam2_hiera_tiny"


def test_name_with_its_own_checkpoint_file(tiny20):
    model = load_model("sam2_hiera_tiny", checkpoint=tiny20)
    assert model.config.name == "sam2_hiera_tiny"
    assert_holds(model, tiny20)


def test_name_with_the_file_of_another_model_names_both(tiny20):
    with pytest.raises(ValueError) as error:
        load_model("sam2.1_hiera_tiny", checkpoint=str(tiny20))
    assert str(error.value) == (
        f"the file {tiny20} holds the weights of sam2_hiera_tiny (SAM 2.0), not "
        "sam2.1_hiera_tiny: choose sam2_hiera_tiny or another file"
    )


def test_a_custom_size_file_asks_for_its_model(small_config, small_checkpoint):
    with pytest.raises(ValueError) as error:
        load_model(small_checkpoint)
    message = str(error.value)
    assert f"cannot tell which model the file {small_checkpoint} holds" in message
    assert "an unknown SAM 2.1 model" in message and "checkpoint=" in message
    with pytest.raises(ValueError, match="does not hold the weights of sam2.1_hiera_tiny"):
        load_model("sam2.1_hiera_tiny", checkpoint=small_checkpoint)
    # with its configuration it loads
    model = load_model(small_config, checkpoint=small_checkpoint)
    assert_holds(model, small_checkpoint)


def test_missing_files_are_named(tmp_path, small_config):
    missing = tmp_path / "nowhere" / "weights.pt"
    for call in (
        lambda: load_model(missing),
        lambda: load_model(str(missing)),
        lambda: load_model("sam2.1_hiera_tiny", checkpoint=missing),
        lambda: load_model(small_config, checkpoint=missing),
    ):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            call()


def test_names_configs_and_modules_as_before(small_config, small_model):
    assert load_model(small_model) is small_model
    with pytest.raises(ValueError, match="unknown SAM 2 model name"):
        load_model("sam2.1_hiera_huge")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        load_model(small_config)
    random = load_model("sam2_hiera_tiny", random_weights=True)
    assert random.config == SAM2Config.from_name("sam2_hiera_tiny")


def test_a_file_and_a_checkpoint_at_once_is_refused(tiny20):
    with pytest.raises(ValueError, match="give the model's name or config"):
        load_model(tiny20, checkpoint=tiny20)


def test_track_takes_a_checkpoint_file_as_model(small_checkpoint):
    stack = np.zeros((2, 32, 32), np.uint8)
    click = PromptRecord(0, 1, "points", (np.array([[16.0, 16.0]]), np.array([1])))
    with pytest.raises(ValueError, match="cannot tell which model"):
        track(stack, [click], model=str(small_checkpoint), device="cpu")


def test_a_config_file_with_its_checkpoint(small_config_file, small_checkpoint):
    for config in (str(small_config_file), small_config_file):  # a path with folders, a Path
        model = load_model(config, checkpoint=str(small_checkpoint))
        assert_holds(model, small_checkpoint)
