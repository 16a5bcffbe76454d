"""napari-sam2: SAM 2 segmentation and tracking for time-lapses and volumes in napari."""

__version__ = "0.1.0"
