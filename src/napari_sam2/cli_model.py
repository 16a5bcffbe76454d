"""The network of a ``napari-sam2 track`` run: ``--model NAME_OR_PATH`` and ``--config``
read into what the model loader takes, each problem a one-line error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from napari_sam2.cli_errors import CliError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _model_path(model: str | None) -> Path | None:
    """``--model`` as a checkpoint path, or None when it is a model name."""
    from napari_sam2.model import FINE_TUNE_NAMES, MODEL_NAMES

    if model is None or model in MODEL_NAMES or model in FINE_TUNE_NAMES:
        return None
    path = Path(model)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in model or os.sep in model:
        return path
    return path if path.exists() else None


def _read_config(path: str) -> Any:
    """The ``--config`` file as a SAM2Config; every problem is a one-line CliError."""
    from napari_sam2.model import SAM2Config

    try:
        values = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise CliError(f"--config {path}: file does not exist") from None
    except OSError as err:
        raise CliError(f"--config {path}: cannot read it: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"--config {path} is not valid JSON: {err}") from None
    if isinstance(values, dict) and "values" in values:
        values = values["values"]
    if not isinstance(values, dict):
        raise CliError(
            f"--config {path} must hold a JSON object of configuration values (optionally "
            'under the key "values"); see docs/cli.md, "Model configuration"'
        )
    try:
        return SAM2Config.from_dict(values, name=Path(path).stem)
    except KeyError as err:
        raise CliError(f"--config {path}: {err.args[0]}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise CliError(f"--config {path}: a value has the wrong type or size: {err}") from None


def _load_checkpoint_model(path: Path, device: Any, image_size: int | None = None) -> Any:
    """The network of an official architecture recognised from its checkpoint file, at
    ``image_size`` (None: the official size, or a registered fine-tune's by its file name)."""
    from napari_sam2.api import load_model

    try:
        return load_model(str(path), None, device, image_size=image_size)
    except (ValueError, KeyError, TypeError) as err:
        raise CliError(
            f"--model {path}: {err}. A checkpoint of another size or resolution needs its "
            f"configuration: give --config CONFIG.json --checkpoint {path} instead"
        ) from None
