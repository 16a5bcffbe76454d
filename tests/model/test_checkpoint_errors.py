"""Wrong, broken and mismatched checkpoints, unknown names and devices give clear errors."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.model import SAM2Config, SAM2Model, build_sam2, describe_state_dict


def _official_state(name):
    """Names and shapes of an official checkpoint's state dict, as meta tensors (no memory).

    Taken from our model of that name: test_schema.py checks that its names and shapes are
    those of the official checkpoints (the schemas in ../shared/reference/schema).
    """
    with torch.device("meta"):
        return SAM2Model(SAM2Config.from_name(name)).state_dict()


@pytest.mark.parametrize(
    "name,looks_like",
    [
        ("sam2.1_hiera_tiny", "sam2.1_hiera_tiny (SAM 2.1)"),
        ("sam2_hiera_small", "sam2_hiera_small (SAM 2.0)"),
        ("sam2.1_hiera_base_plus", "sam2.1_hiera_base_plus (SAM 2.1)"),
        ("sam2_hiera_large", "sam2_hiera_large (SAM 2.0)"),
    ],
)
def test_describe_state_dict(name, looks_like):
    assert describe_state_dict(_official_state(name)) == looks_like


def test_sam20_file_into_sam21_model():
    sd = _official_state("sam2_hiera_tiny")
    with pytest.raises(ValueError) as err:
        build_sam2(SAM2Config.from_name("sam2.1_hiera_tiny"), checkpoint=sd)
    msg = str(err.value)
    assert "looks like sam2_hiera_tiny (SAM 2.0)" in msg
    assert "sam2.1_hiera_tiny" in msg and "3 missing" in msg


def test_small_into_tiny():
    sd = _official_state("sam2.1_hiera_small")
    with pytest.raises(ValueError, match=r"looks like sam2.1_hiera_small \(SAM 2.1\), but "
                       r"sam2.1_hiera_tiny"):  # fmt: skip
        build_sam2(SAM2Config.from_name("sam2.1_hiera_tiny"), checkpoint=sd)


def test_small_weights_into_tiny(small_checkpoint):
    with pytest.raises(ValueError, match="wrong shape"):
        build_sam2(SAM2Config.from_name("sam2.1_hiera_tiny"), checkpoint=small_checkpoint)


def test_garbage_file(tmp_path, small_config):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        build_sam2(small_config, checkpoint=path)


def test_truncated_file(tmp_path, small_config, small_checkpoint):
    path = tmp_path / "weights.pt"
    path.write_bytes(small_checkpoint.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="truncated"):
        build_sam2(small_config, checkpoint=path)


def test_missing_model_key(tmp_path, small_config, small_checkpoint):
    sd = torch.load(small_checkpoint, map_location="cpu", weights_only=True)["model"]
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ValueError, match="key 'model'"):
        build_sam2(small_config, checkpoint=path)


def test_missing_file(tmp_path, small_config):
    with pytest.raises(FileNotFoundError):
        build_sam2(small_config, checkpoint=tmp_path / "nothing.pt")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="sam2.1_hiera_tiny.*sam2_hiera_large"):
        build_sam2("sam2.1_hiera_huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(small_config):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        build_sam2(small_config, device="cuda")
    with pytest.raises(ValueError, match="invalid device"):
        build_sam2(small_config, device="gpu0")


def test_loaded_official_file_is_taken_as_is(small_config, small_checkpoint):
    """What torch.load reads from an official file ({"model": state_dict}) builds the model."""
    contents = torch.load(small_checkpoint, map_location="cpu", weights_only=True)
    loaded = build_sam2(small_config, checkpoint=contents).state_dict()
    expected = build_sam2(small_config, checkpoint=small_checkpoint).state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
