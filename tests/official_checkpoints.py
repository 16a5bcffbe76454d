"""Checkpoint files of official-size models (default-initialised weights), for recognition tests.

Each file holds ``{"model": state_dict}`` with exactly the parameter names and shapes of the
official model (about 160 MB for a tiny model); it is written once per test session into
pytest's base temporary folder and shared by the test modules that ask for it. The file names
differ from the official ones so that the weights store does not check them against Meta's
checksums.

Imported by name (``tests/`` has no packages): ``from official_checkpoints import ...``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_sam2.model import SAM2Config, SAM2Model


def official_checkpoint(tmp_path_factory, name: str) -> Path:
    """The path of a checkpoint file of the official model ``name``, written on first use."""
    path = tmp_path_factory.getbasetemp() / "official_checkpoints" / f"{name}-random.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        state = SAM2Model(SAM2Config.from_name(name)).state_dict()
        part = path.with_suffix(".part")
        torch.save({"model": state}, part)
        part.replace(path)
    return path
