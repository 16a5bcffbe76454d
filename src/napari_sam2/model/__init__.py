"""The SAM 2 / SAM 2.1 network in plain PyTorch."""

from .build import (
    build_sam2,
    describe_state_dict,
    identify_checkpoint,
    load_checkpoint,
    state_dict_mismatch,
)
from .config import FINE_TUNE_NAMES, FINE_TUNES, MODEL_NAMES, FineTune, SAM2Config
from .sam2 import NO_OBJ_SCORE, HeadOutput, ImageFeatures, SAM2Model

__all__ = [
    "FINE_TUNES",
    "FINE_TUNE_NAMES",
    "MODEL_NAMES",
    "NO_OBJ_SCORE",
    "HeadOutput",
    "FineTune",
    "ImageFeatures",
    "SAM2Config",
    "SAM2Model",
    "build_sam2",
    "describe_state_dict",
    "identify_checkpoint",
    "load_checkpoint",
    "state_dict_mismatch",
]
