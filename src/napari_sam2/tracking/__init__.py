"""The tracking engine: frames, prompts, the bounded memory bank, propagation and results.

Headless (no napari, no Qt): :class:`Tracker` takes a :class:`napari_sam2.model.SAM2Model` and
an array-like stack of frames; see ``docs/architecture.md`` and ``DESIGN.md``.
"""

from napari_sam2.tracking.everything import segment_everything
from napari_sam2.tracking.frame_order import propagation_frames
from napari_sam2.tracking.frames import FrameSource, stack_view
from napari_sam2.tracking.results import PLACEHOLDER_LOGIT, FrameResult
from napari_sam2.tracking.track_all import AutoFrame, TrackAll, TrackAllSettings
from napari_sam2.tracking.tracker import Tracker

__all__ = [
    "Tracker",
    "FrameResult",
    "FrameSource",
    "stack_view",
    "PLACEHOLDER_LOGIT",
    "propagation_frames",
    "segment_everything",
    "TrackAll",
    "TrackAllSettings",
    "AutoFrame",
]
