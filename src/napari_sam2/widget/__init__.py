"""The napari dock widget (``SAM2Widget``) and its Qt-free session controller."""

from napari_sam2.widget._widget import SAM2Widget

__all__ = ["SAM2Widget"]
