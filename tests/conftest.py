"""Fixtures shared by all test packages.

The reference fixtures and the real data live in ``../shared`` beside the repository (a user's
clone has no such folder): only the tests that compare against them skip where it is absent.
Every other test uses the small random-weight network the tests build themselves
(``small_model``, ``small_checkpoint``: see ``small_model.py``) and stacks they generate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent: reference fixtures and data are not in this checkout")
    return SHARED_DIR


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference"


@pytest.fixture(scope="session")
def mini_dir(reference_dir: Path) -> Path:
    return reference_dir / "mini"


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def mini_config(mini_dir: Path):
    from napari_sam2.model import SAM2Config

    return SAM2Config.from_dict(json.loads((mini_dir / "config.json").read_text())["values"])


@pytest.fixture(scope="session")
def mini_checkpoint(mini_dir: Path) -> Path:
    return mini_dir / "weights.pt"


@pytest.fixture(scope="session")
def mini_model(mini_config, mini_checkpoint):
    """The mini SAM 2.1 model in float32 with the fixture weights (shared: do not modify)."""
    from napari_sam2.model import build_sam2

    return build_sam2(mini_config, checkpoint=mini_checkpoint)


@pytest.fixture(scope="session")
def small_config():
    """The small SAM 2.1 configuration of the tests (256 px, 1.7 M parameters)."""
    from small_model import small_config as make

    return make()


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, small_config) -> Path:
    """Random weights for ``small_config`` as an official-format checkpoint file."""
    from small_model import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("weights") / "small.pt", small_config)


@pytest.fixture(scope="session")
def small_config_file(tmp_path_factory, small_config) -> Path:
    """``small_config`` as a config JSON file, as the CLI's ``--config`` reads."""
    from small_model import write_config

    return write_config(tmp_path_factory.mktemp("config") / "small.json", small_config)


@pytest.fixture(scope="session")
def small_model(small_config, small_checkpoint):
    """The small network in float32 with the random test weights (shared: do not modify)."""
    from napari_sam2.model import build_sam2

    return build_sam2(small_config, checkpoint=small_checkpoint)


@pytest.fixture
def model_args(small_config_file, small_checkpoint) -> list[str]:
    """The command line's options for the small test network on the CPU, without progress."""
    return [
        "--config",
        str(small_config_file),
        "--checkpoint",
        str(small_checkpoint),
        "--device",
        "cpu",
        "--quiet",
    ]


@pytest.fixture
def weights_env(tmp_path, monkeypatch) -> Path:
    """A weights store of the test's own: an empty cache under ``tmp_path``, no offline
    folder, no lock timeout, no download-address override, and no proxy from outside that
    could capture 127.0.0.1."""
    from napari_sam2.weights import (
        CACHE_ENV,
        CHECKPOINT_NAMES,
        LOCK_TIMEOUT_ENV,
        WEIGHTS_ENV,
        url_env,
    )

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for var in (WEIGHTS_ENV, LOCK_TIMEOUT_ENV, *(url_env(name) for name in CHECKPOINT_NAMES)):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _auto_precision_is_float32(monkeypatch):
    """``precision="auto"`` picks bfloat16 on CPUs where it measures faster (AMX): pin it to
    float32 so results and state lines in tests do not depend on the machine (the precision
    tests exercise the real detector)."""
    from napari_sam2.tracking import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
