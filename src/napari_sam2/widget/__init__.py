"""The napari dock widget (``SAM2Widget``): Qt-free controllers (image axes, prompts, the
propagation queue and session, the model) composed with thin Qt views.

``SAM2Widget`` is imported on first use, so the controllers import (and are tested) without Qt.
"""

from typing import Any

__all__ = ["SAM2Widget"]


def __getattr__(name: str) -> Any:
    if name == "SAM2Widget":
        from napari_sam2.widget._widget import SAM2Widget

        return SAM2Widget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
