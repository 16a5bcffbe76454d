"""Per-frame results of the tracker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameResult", "PLACEHOLDER_LOGIT"]

PLACEHOLDER_LOGIT = -1024.0  # logits and score of an object without output on a frame


@dataclass(frozen=True, eq=False)
class FrameResult:
    """The outputs of all objects on one frame.

    ``mask_logits`` (N, H, W) float32 at frame resolution and ``object_score_logits`` (N,)
    float32 follow ``object_ids`` (order of first use). An object is present where its score is
    > 0; its mask is ``mask_logits > 0`` and is empty where it is absent. Objects without output
    on the frame (never prompted or tracked there, or released, see :class:`Tracker`) have
    logits and score -1024 and ``has_output`` False.
    """

    frame_index: int
    object_ids: tuple[int, ...]
    mask_logits: np.ndarray
    object_score_logits: np.ndarray
    has_output: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """(N,) bool: object score logit > 0."""
        return self.object_score_logits > 0

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool: ``mask_logits > 0`` where the object is present."""
        return (self.mask_logits > 0) & self.present[:, None, None]

    def mask(self, object_id: int) -> np.ndarray:
        """(H, W) bool mask of one object."""
        try:
            row = self.object_ids.index(object_id)
        except ValueError:
            raise KeyError(
                f"object {object_id} is not in this result (objects {self.object_ids})"
            ) from None
        return self.masks[row]
