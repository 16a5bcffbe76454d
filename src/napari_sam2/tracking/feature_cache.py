"""A least-recently-used cache of image features under a byte budget.

The image encoder is the most expensive step per frame. Every object on a frame shares the
frame's features, a prompt on the frame shown right now reuses them, and re-propagating after a
correction finds the frames it saw last without running the encoder again, as far as the budget
allows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from napari_sam2.tracking.memory_trim import off_heap_copy

__all__ = ["FeatureCache", "tensor_bytes"]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "__dict__"):
        for item in vars(value).values():
            yield from _tensors(item)


def tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (tensors, tuples, dicts, dataclasses)."""
    return sum(t.numel() * t.element_size() for t in _tensors(value))


class FeatureCache:
    """Maps a frame index to its features; evicts the least recently used beyond ``max_bytes``
    or beyond ``max_frames`` entries (None: no limit on the count).

    The most recent entry is always kept, even when it alone exceeds the budget, so the frame
    being worked on never needs encoding twice.

    With ``off_heap`` (default), entries that stay cached are stored as copies of their large
    CPU tensors in memory maps of their own (``memory_trim.off_heap_copy``): they outlive many
    frames, and kept among a frame's temporaries on glibc's heap they fragment it until the
    peak resident size grows with every frame. ``put`` returns the value kept (the caller may
    go on with the original). An entry larger than the whole budget (a budget of 0 included)
    lives only until the next ``put`` and is not copied.
    """

    def __init__(
        self, max_bytes: int, *, max_frames: int | None = None, off_heap: bool = True
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
        self.max_bytes = int(max_bytes)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.off_heap = bool(off_heap)
        self._entries: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: int) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: int, value: Any) -> Any:
        if key in self._entries:
            self._bytes -= self._entries.pop(key)[1]
        size = tensor_bytes(value)
        if self.off_heap and 0 < size <= self.max_bytes and self.max_frames != 0:
            value = off_heap_copy(value)
        self._entries[key] = (value, size)
        self._bytes += size
        while len(self._entries) > 1 and (
            self._bytes > self.max_bytes
            or (self.max_frames is not None and len(self._entries) > self.max_frames)
        ):
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old
        return value

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
