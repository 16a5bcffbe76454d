"""napari-sam2: SAM 2 segmentation and tracking for time-lapses and volumes in napari.

``napari_sam2.track(stack, prompts, model=...)`` runs the whole pipeline headless (see
``docs/cli.md``). It is imported on first use so that napari's plugin discovery, which imports
this package, does not load torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["track"]


def __getattr__(name: str) -> Any:
    if name == "track":
        from napari_sam2.api import track

        return track
    raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")
