"""Registered fine-tunes (MedSAM2, micro-sam's light-microscopy SAM 2) and unknown ones given as
a file plus an image size: the registry, loading by name from a ``$NAPARI_SAM2_WEIGHTS`` folder
(offline), download from a server on 127.0.0.1 with the hash recorded after the first load, the
API, and the command line (``track --model medsam2_latest``, ``--image-size``, ``models``).

The checkpoint files are random-weight sam2.1_hiera_tiny networks (about 156 MB, written once
per session, see ``official_checkpoints.py``) under the fine-tunes' published names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from file_server import FileServer
from napari_sam2 import cli
from napari_sam2.api import load_model
from napari_sam2.weights import (
    CHECKPOINT_NAMES,
    FINE_TUNES,
    MODEL_REGISTRY,
    WEIGHTS_ENV,
    WeightsError,
    checkpoint_info,
    checkpoint_status,
    describe_checkpoint,
    ensure_checkpoint,
    registered_file,
    url_env,
)
from official_checkpoints import official_checkpoint

MEDSAM2_FILES = {
    "medsam2_latest": "MedSAM2_latest.pt",
    "medsam2_2411": "MedSAM2_2411.pt",
    "medsam2_ct_lesion": "MedSAM2_CTLesion.pt",
    "medsam2_mri_liver_lesion": "MedSAM2_MRI_LiverLesion.pt",
    "medsam2_us_heart": "MedSAM2_US_Heart.pt",
}


def _link_or_copy(source: Path, target: Path) -> Path:
    """``target`` with the bytes of ``source``: a hard link where the file system allows it
    (no second 156 MB write), else a copy."""
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
    return target


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory) -> Path:
    """A random-weight sam2.1_hiera_tiny checkpoint in the official format."""
    return official_checkpoint(tmp_path_factory, "sam2.1_hiera_tiny")


@pytest.fixture(scope="session")
def medsam2_folder(tmp_path_factory, tiny_file) -> Path:
    """A folder holding ``MedSAM2_latest.pt`` (the MedSAM2 format: ``{"model": state_dict}``)."""
    folder = tmp_path_factory.getbasetemp() / "fine_tunes" / "medsam2"
    _link_or_copy(tiny_file, folder / "MedSAM2_latest.pt")
    return folder


@pytest.fixture(scope="session")
def micro_sam_file(tmp_path_factory, tiny_file) -> Path:
    """micro-sam's layout: ``{"model": state_dict, "model_type": "hvit_t"}``, under the name
    micro-sam's cache gives it (no suffix)."""
    path = tmp_path_factory.getbasetemp() / "fine_tunes" / "micro_sam" / "hvit_t_cells"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        state = torch.load(tiny_file, map_location="cpu", weights_only=True, mmap=True)["model"]
        torch.save({"model": state, "model_type": "hvit_t"}, path)
    return path


@pytest.fixture
def env(weights_env) -> Path:
    """The test's own weights store (``weights_env`` in conftest.py)."""
    return weights_env


def _offline_folder(monkeypatch, tmp_path: Path, source: Path, name: str) -> Path:
    """A private ``$NAPARI_SAM2_WEIGHTS`` folder holding ``source`` as ``name`` (so the hash
    recorded beside it belongs to this test)."""
    folder = tmp_path / "weights"
    _link_or_copy(source, folder / name)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    return folder


def small_checkpoint_bytes() -> bytes:
    """A small file in the official format, for download tests (verified by loading only)."""
    state = {"sam_mask_decoder.iou_token.weight": torch.arange(32.0).reshape(2, 16)}
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue()


# --- the registry --------------------------------------------------------------------------


def test_registry_lists_the_fine_tunes_with_source_size_licence_and_image_size():
    assert list(FINE_TUNES) == [*MEDSAM2_FILES, "micro_sam_hvit_t_cells"]
    assert CHECKPOINT_NAMES == (*MODEL_REGISTRY, *FINE_TUNES)
    for name, filename in MEDSAM2_FILES.items():
        info = checkpoint_info(name)
        assert info.url == f"https://huggingface.co/wanglab/MedSAM2/resolve/main/{filename}"
        assert info.filename == filename and info.sha256 is None  # none published
        assert (info.base, info.image_size, info.licence) == (
            "sam2.1_hiera_tiny",
            512,
            "CC-BY-SA-4.0",
        )
        assert 150e6 < info.size_bytes < 160e6 and "MedSAM2" in info.source
    assert [n for n in FINE_TUNES if FINE_TUNES[n].recommended] == ["medsam2_latest"]
    micro = checkpoint_info("micro_sam_hvit_t_cells")
    assert (micro.base, micro.image_size, micro.filename) == (
        "sam2.1_hiera_tiny",
        1024,
        "hvit_t_cells.pt",
    )
    assert micro.url.startswith("https://") and "micro-sam" in micro.source
    line = describe_checkpoint("medsam2_latest")
    for part in ("MedSAM2 (bowang-lab)", "~156 MB", "CC-BY-SA-4.0", "512 px", "recommended"):
        assert part in line
    assert "Apache-2.0" in describe_checkpoint("sam2.1_hiera_tiny")


def test_registry_agrees_with_the_network_package():
    from napari_sam2.model import FINE_TUNES as NETWORK_FINE_TUNES
    from napari_sam2.model import SAM2Config

    assert set(NETWORK_FINE_TUNES) == set(FINE_TUNES)
    for name, info in FINE_TUNES.items():
        assert tuple(NETWORK_FINE_TUNES[name]) == (info.base, info.image_size)
        assert SAM2Config.from_name(name).image_size == info.image_size


def test_files_are_known_by_their_published_names():
    assert registered_file("/data/MedSAM2_latest.pt").name == "medsam2_latest"
    assert registered_file("MedSAM2_US_Heart.pt").name == "medsam2_us_heart"
    assert registered_file("/models/hvit_t_cells").name == "micro_sam_hvit_t_cells"
    assert registered_file("my_medsam.pt") is None


def test_download_url_is_overridable(env, monkeypatch):
    monkeypatch.setenv(url_env("micro_sam_hvit_t_cells"), "https://mirror.example/x/download")
    info = checkpoint_info("micro_sam_hvit_t_cells")
    assert info.url == "https://mirror.example/x/download"
    assert info.filename == "hvit_t_cells.pt"  # the file keeps its name
    assert url_env("sam2.1_hiera_tiny") == "NAPARI_SAM2_URL_SAM2_1_HIERA_TINY"


# --- offline files and downloads -----------------------------------------------------------


def test_offline_file_is_found_by_name_and_its_hash_recorded(env, monkeypatch, tiny_file):
    folder = _offline_folder(monkeypatch, env, tiny_file, "MedSAM2_latest.pt")
    assert checkpoint_status("medsam2_latest") == "local file"
    assert checkpoint_status("medsam2_2411") == "needs download"
    path = ensure_checkpoint("medsam2_latest")
    assert path == folder / "MedSAM2_latest.pt"
    recorded = json.loads((folder / "MedSAM2_latest.pt.sha256").read_text())["sha256"]
    assert recorded == hashlib.sha256(tiny_file.read_bytes()).hexdigest()


def test_micro_sam_file_is_found_under_micro_sams_own_name(env, monkeypatch, micro_sam_file):
    folder = _offline_folder(monkeypatch, env, micro_sam_file, "hvit_t_cells")
    assert checkpoint_status("micro_sam_hvit_t_cells") == "local file"
    assert ensure_checkpoint("micro_sam_hvit_t_cells") == folder / "hvit_t_cells"


def test_download_from_a_local_server_with_progress_and_hash_recorded(env, monkeypatch):
    data = small_checkpoint_bytes()
    with FileServer() as server:
        server.files["MedSAM2_latest.pt"] = data
        monkeypatch.setenv(url_env("medsam2_latest"), server.url("MedSAM2_latest.pt"))
        seen = []
        path = ensure_checkpoint("medsam2_latest", progress=lambda d, t: seen.append((d, t)))
        assert path == env / "cache" / "MedSAM2_latest.pt" and path.read_bytes() == data
        assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
        sidecar = json.loads((env / "cache" / "MedSAM2_latest.pt.sha256").read_text())
        assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()
        assert checkpoint_status("medsam2_latest") == "cached"
        requests = len(server.requests)
        assert ensure_checkpoint("medsam2_latest") == path  # checked against the hash, no fetch
        assert len(server.requests) == requests
        # damage after the first load is caught by the recorded hash: fetched again
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        assert ensure_checkpoint("medsam2_latest").read_bytes() == data
        assert len(server.requests) == requests + 1


def test_download_of_micro_sam_behind_a_download_url(env, monkeypatch):
    data = small_checkpoint_bytes()
    with FileServer() as server:
        server.files["download"] = data  # micro-sam's share links end in /download
        info = dataclasses.replace(FINE_TUNES["micro_sam_hvit_t_cells"], url=server.url("download"))
        monkeypatch.setitem(FINE_TUNES, "micro_sam_hvit_t_cells", info)
        path = ensure_checkpoint("micro_sam_hvit_t_cells")
    assert path.name == "hvit_t_cells.pt" and path.read_bytes() == data


def test_a_download_that_is_no_checkpoint_is_refused(env, monkeypatch):
    with FileServer() as server:
        server.files["MedSAM2_2411.pt"] = b"<html>login required</html>"
        monkeypatch.setenv(url_env("medsam2_2411"), server.url("MedSAM2_2411.pt"))
        with pytest.raises(WeightsError, match="corrupt.*HTML page"):
            ensure_checkpoint("medsam2_2411")
    assert not (env / "cache" / "MedSAM2_2411.pt").exists()


# --- loading --------------------------------------------------------------------------------


@pytest.mark.slow
def test_load_medsam2_by_name_offline_builds_it_at_512(env, monkeypatch, tiny_file):
    _offline_folder(monkeypatch, env, tiny_file, "MedSAM2_latest.pt")
    model = load_model("medsam2_latest")
    assert model.config.image_size == 512 and model.config.name == "medsam2_latest"
    assert model.config.grid_size == 32
    saved = torch.load(tiny_file, map_location="cpu", weights_only=True, mmap=True)["model"]
    assert torch.equal(model.state_dict()["no_obj_ptr"], saved["no_obj_ptr"])


@pytest.mark.slow
def test_load_micro_sam_layout_by_name_at_1024(env, monkeypatch, micro_sam_file):
    _offline_folder(monkeypatch, env, micro_sam_file, "hvit_t_cells.pt")
    model = load_model("micro_sam_hvit_t_cells")
    assert model.config.image_size == 1024 and model.config.name == "micro_sam_hvit_t_cells"


@pytest.mark.slow
def test_checkpoint_files_by_path_and_image_size(env, tmp_path, medsam2_folder, tiny_file):
    # a fine-tune's published file name keeps its size; any other file needs one to be given
    by_name = load_model(medsam2_folder / "MedSAM2_latest.pt")
    assert by_name.config.image_size == 512
    unknown = _link_or_copy(tiny_file, tmp_path / "my_medsam.pt")
    assert load_model(unknown, random_weights=True).config.image_size == 1024
    sized = load_model(str(unknown), image_size=512)
    assert sized.config.image_size == 512 and sized.config.name == "sam2.1_hiera_tiny@512"
    with pytest.raises(ValueError, match="multiple of 32"):
        load_model(str(unknown), image_size=500)


def test_image_size_is_refused_for_a_config(small_config, small_checkpoint):
    with pytest.raises(ValueError, match="own image size"):
        load_model(small_config, small_checkpoint, image_size=512)


# --- the command line ---------------------------------------------------------------------


def ct_stack(tmp_path: Path, slices: int = 3, size: int = 48) -> tuple[Path, Path]:
    """A small CT-like volume (Hounsfield units, int16, ZYX) with a round organ, and a prompt."""
    yy, xx = np.mgrid[:size, :size]
    volume = np.full((slices, size, size), -1000, np.int16)  # air
    for z in range(slices):
        body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
        organ = (yy - size / 2) ** 2 + (xx - size / 2 - z) ** 2 < (size * 0.15) ** 2
        volume[z][body] = 40
        volume[z][organ] = 300
    stack = tmp_path / "ct.tif"
    tifffile.imwrite(stack, volume, imagej=True, metadata={"axes": "ZYX"})
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[24, 25]]}]))
    return stack, prompts


@pytest.mark.slow
def test_cli_tracks_a_ct_stack_with_medsam2_by_name(env, monkeypatch, tiny_file, capsys):
    _offline_folder(monkeypatch, env, tiny_file, "MedSAM2_latest.pt")
    stack, prompts = ct_stack(env)
    sizes = []
    real = cli._make_tracker

    def spy(model, frames, *args):
        sizes.append((model.config.name, model.config.image_size, frames.image_size))
        return real(model, frames, *args)  # the real network at 512 px

    monkeypatch.setattr(cli, "_make_tracker", spy)
    out = env / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    argv += ["--model", "medsam2_latest", "--direction", "forward", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    assert sizes == [("medsam2_latest", 512, 512)]
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (3, 48, 48) and labels.dtype == np.uint16
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True and record["frames_written"] == 3


class ModelBuilt(Exception):
    """Raised by the test once the CLI has built its model (no error the CLI reports)."""


def _spy_model_only(monkeypatch) -> list:
    """Record the model the CLI builds and stop before tracking."""
    seen = []

    def spy(model, frames, *args):
        seen.append((model.config.name, model.config.image_size, frames.image_size))
        raise ModelBuilt

    monkeypatch.setattr(cli, "_make_tracker", spy)
    return seen


@pytest.mark.slow
def test_cli_image_size_for_an_unregistered_file(env, monkeypatch, tiny_file):
    unknown = _link_or_copy(tiny_file, env / "my_medsam.pt")
    stack, prompts = ct_stack(env)
    seen = _spy_model_only(monkeypatch)
    argv = ["track", str(stack), "--prompts", str(prompts), "--device", "cpu", "--quiet"]
    argv += ["--model", str(unknown), "--image-size", "512"]
    with pytest.raises(ModelBuilt):
        cli.main([*argv, "--out", str(env / "a")])
    assert seen == [("sam2.1_hiera_tiny@512", 512, 512)]


def test_cli_refuses_bad_image_sizes_and_names(env, tmp_path, capsys, small_config_file):
    stack, prompts = ct_stack(tmp_path)
    base = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--model", "medsam2_latest", "--image-size", "500"]) == 2
    assert "--image-size 500" in capsys.readouterr().err
    assert cli.main([*base, "--model", "medsam3"]) == 2
    err = capsys.readouterr().err
    assert "medsam2_latest" in err and "micro_sam_hvit_t_cells" in err
    config = ["--config", str(small_config_file), "--random-weights", "--image-size", "512"]
    assert cli.main([*base, *config]) == 2
    assert "image_size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_models_into_a_reader_that_stopped_ends_quietly(env):
    # `napari-sam2 models | head`: head has its lines and is gone
    import subprocess
    import sys

    command = [sys.executable, "-m", "napari_sam2.cli", "models"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""


def test_cli_models_lists_names_sizes_licences_and_state(env, monkeypatch, capsys, tiny_file):
    _offline_folder(monkeypatch, env, tiny_file, "MedSAM2_latest.pt")
    assert cli.main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(CHECKPOINT_NAMES) <= set(lines)
    assert all(part in lines["medsam2_latest"] for part in ("CC-BY-SA-4.0", "512", "local file"))
    assert "needs download" in lines["medsam2_us_heart"]
    assert all(part in lines["sam2.1_hiera_tiny"] for part in ("156 MB", "Apache-2.0", "1024"))
    assert cli.main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    micro = next(row for row in rows if row["name"] == "micro_sam_hvit_t_cells")
    assert (micro["image_size"], micro["size_mb"], micro["state"]) == (1024, 156, "needs download")
