"""Per-object prompts and outputs, and what is released when.

Each object keeps (SEMANTICS 3, project decision D1):

- ``points``: its point prompts per frame, in frame pixels (y, x), with labels 0/1 (2/3 for box
  corners), in the order they were given;
- ``pending``: outputs of prompts given since the last propagation; they have no memory yet.
  The next propagation encodes their memory (binarized, SEMANTICS 3.2) and turns them into
  conditioning outputs (D1: also on frames that were already tracked);
- ``conditioning``: conditioning outputs, kept for the lifetime of the object, in the order they
  became conditioning frames (the order of their spatial memories);
- ``non_conditioning``: outputs of tracked frames;
- ``tracked``: the direction (+1 / -1) in which each frame was last tracked.

Bounded memory (issue 4). The reference keeps every non-conditioning output forever. A tracked
frame only reads non-conditioning memories up to ``max(num_maskmem - 1, max_obj_ptrs - 1)``
frames back (15 for the official models), so :meth:`ObjectState.release_far_from` drops
non-conditioning outputs that far or farther from the frame just tracked. Conditioning outputs
and the ``tracked`` bookkeeping (a few bytes per frame) are always kept. What changes against the
reference: nothing while a propagation runs or for corrections within the window of where the
last propagation stopped (so nothing at all for videos of at most ``window`` frames). A prompt on
a tracked frame farther away gets no previous logits as mask prompt and fewer (or no)
non-conditioning memories, a propagation started farther away starts without the old
non-conditioning memories behind it, and the results of ``add_*`` show other objects without a
kept output on that frame as placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["StoredOutput", "ObjectState"]


@dataclass
class StoredOutput:
    """One object's output on one frame, at model resolution.

    ``low_res``: (1, 1, S/4, S/4) logits after the object-score gate (-1024 where absent) and
    the optional hole filling; ``obj_ptr``: (1, C); ``score``: (1, 1) object-score logit;
    ``memory``: (1, M, S/16, S/16) bfloat16 memory features, None until encoded;
    ``decision``: the decoder's decisions, for debugging.
    """

    low_res: torch.Tensor
    obj_ptr: torch.Tensor
    score: torch.Tensor
    memory: torch.Tensor | None = None
    decision: Mapping[str, Any] | None = None

    @property
    def present(self) -> bool:
        return bool(self.score.item() > 0)

    def nbytes(self) -> int:
        tensors = [self.low_res, self.obj_ptr, self.score]
        if self.memory is not None:
            tensors.append(self.memory)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class ObjectState:
    """Prompts and outputs of one object (see the module docstring)."""

    object_id: int
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    mask_prompts: set[int] = field(default_factory=set)
    pending: dict[int, StoredOutput] = field(default_factory=dict)
    conditioning: dict[int, StoredOutput] = field(default_factory=dict)
    non_conditioning: dict[int, StoredOutput] = field(default_factory=dict)
    tracked: dict[int, int] = field(default_factory=dict)

    def output_at(self, frame: int) -> StoredOutput | None:
        """The output shown for ``frame``: pending, else conditioning, else non-conditioning."""
        for store in (self.pending, self.conditioning, self.non_conditioning):
            out = store.get(frame)
            if out is not None:
                return out
        return None

    @property
    def has_conditioning(self) -> bool:
        return bool(self.conditioning) or bool(self.pending)

    def commit_pending(self) -> None:
        """Turn pending outputs (memories already encoded) into conditioning outputs."""
        for frame, out in self.pending.items():
            if out.memory is None:
                raise RuntimeError(f"pending output of frame {frame} has no memory yet")
            # Re-prompting a conditioning frame keeps its place in the order (dict semantics).
            self.conditioning[frame] = out
        self.pending.clear()
        for frame in self.conditioning:
            self.non_conditioning.pop(frame, None)

    def clear_frame(self, frame: int) -> None:
        """Forget the prompts of ``frame`` (SEMANTICS 7.1).

        A conditioning output becomes a non-conditioning one and the frame counts as not
        tracked, so the next prompt there starts a new conditioning frame without memory.
        """
        self.points.pop(frame, None)
        self.mask_prompts.discard(frame)
        self.pending.pop(frame, None)
        out = self.conditioning.pop(frame, None)
        if out is not None:
            self.non_conditioning[frame] = out
            self.tracked.pop(frame, None)

    def release_far_from(self, frame: int, window: int) -> None:
        """Drop non-conditioning outputs ``window`` or more frames away from ``frame``."""
        far = [t for t in self.non_conditioning if abs(t - frame) >= window]
        for t in far:
            del self.non_conditioning[t]

    def nbytes(self) -> int:
        """Bytes of stored tensors (outputs at model resolution and memories)."""
        stores = (self.pending, self.conditioning, self.non_conditioning)
        return sum(out.nbytes() for store in stores for out in store.values())
