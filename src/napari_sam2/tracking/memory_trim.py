"""Give memory freed by a tracked frame back to the system, without touching the allocator.

Each tracked frame allocates and frees tens of large tensors (image features, attention
scores, upsampled masks). glibc serves tensors above its dynamic mmap threshold with ``mmap``
(returned on free), but it raises that threshold to the size of each freed mapped block, so
after the first frames the tensors come from the heap. Freed heap blocks stay resident, and as
the feature cache evicts old frames between longer-lived tensors the heap fragments: the peak
resident size then grows by about 1 MB per frame. Fixing the threshold (``mallopt``) would
change the allocator of the whole application (napari), and every large tensor would then be
mapped and page-faulted afresh (1.6x slower bfloat16 frames, benchmarks/README.md).
``malloc_trim(0)`` instead hands the free pages of the heap (also those in its middle, with
``madvise``) back, leaving the allocator's settings alone.

Handing pages back has a price: the next frame faults its working set back in (about 50 ms,
5 % of a bfloat16 frame at 1024 px on 2 cores, benchmarks/README.md). :class:`HeapTrimmer`
can therefore trim every few frames instead of after each: the frames in between reuse the
pages the frame before them freed, and the resident size grows by at most those few frames'
fragmentation before the next trim takes it back. The tracker trims every
:data:`TRIM_EVERY_FRAMES` frames under autocast (bfloat16), after every frame in float32.

On other C libraries (macOS, Windows, musl) the call is not available and this is a no-op.

Trimming cannot undo the fragmentation itself: the feature cache keeps each frame's 16 MB of
features for 16 frames, allocated wherever the encoder's output landed among the frame's
transients, so every eviction leaves holes of a different size and place, and the transient
tensors of later frames, which no longer fit them, extend the heap. :func:`off_heap_copy`
keeps such long-lived tensors out of the heap instead: each in an anonymous memory map of its
own (``mmap``, not ``malloc``), returned to the system as a whole when the tensor is freed. The
heap then holds only what a frame allocates and frees, which reuses the same space frame after
frame. Like the trim, this changes nothing about the process's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import mmap
import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "HeapTrimmer",
    "OFF_HEAP_MIN_BYTES",
    "TRIM_EVERY_FRAMES",
    "off_heap_copy",
    "release_freed_memory",
]

# Smaller tensors stay where they are: a memory map costs a system call and whole pages, and
# glibc hands out small blocks from bins that do not fragment the heap the same way.
OFF_HEAP_MIN_BYTES = 256 * 1024
# Frames between two trims (see HeapTrimmer) of a bfloat16 tracker: its peak resident size
# stayed flat from 24 to 64 frames in 4 runs of 4, and its frames were 4-5 % faster than with
# a trim after each (benchmarks/README.md).
TRIM_EVERY_FRAMES = 8


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no libc found, or musl (no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True if anything was released.

    The walk over the heap's free blocks takes 5.9-7.5 ms on 2 cores, and the next frame's
    page faults on the pages handed back cost about 5 % of a bfloat16 frame
    (benchmarks/README.md); what that buys is a peak memory that does not grow with the stack.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))


class HeapTrimmer:
    """Trims the heap (:func:`release_freed_memory`) after every ``every_frames``-th frame
    (default :data:`TRIM_EVERY_FRAMES`).

    Call :meth:`after_frame` once per frame, between frames.
    """

    def __init__(self, every_frames: int | None = None) -> None:
        if every_frames is None:
            every_frames = TRIM_EVERY_FRAMES
        if every_frames < 1:
            raise ValueError(f"every_frames must be >= 1, got {every_frames}")
        self.every_frames = every_frames
        self._frames = 0

    def after_frame(self) -> bool:
        """Trim if this is the every_frames-th frame since the last trim; True if pages
        were handed back."""
        self._frames += 1
        if self._frames < self.every_frames:
            return False
        self._frames = 0
        return release_freed_memory()


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s layout is a permutation of a contiguous one (contiguous, channels-last,
    ...): it covers exactly ``numel`` elements of its storage, none twice."""
    expected = 1
    dims = sorted((s, n) for n, s in zip(t.shape, t.stride(), strict=True) if n > 1)
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _off_heap_tensor(t: torch.Tensor) -> torch.Tensor:
    nbytes = t.numel() * t.element_size()
    if (
        t.device.type != "cpu"
        or nbytes == 0
        or nbytes < OFF_HEAP_MIN_BYTES
        or t.requires_grad
        or t.layout != torch.strided
        or t.is_quantized
        or not _dense(t)
    ):
        return t
    buffer = mmap.mmap(-1, nbytes)  # anonymous, zero-filled; unmapped when the tensor dies
    flat = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes).view(t.dtype)
    out = flat.as_strided(t.shape, t.stride())  # the same layout: the same kernels run on it
    out.copy_(t)
    return out


def off_heap_copy(value: Any) -> Any:
    """``value`` with its large CPU tensors copied into memory maps of their own.

    Walks tensors, tuples, lists, dicts and dataclasses (rebuilt with the copies); anything
    else, and tensors under :data:`OFF_HEAP_MIN_BYTES`, on a GPU, not dense (views with gaps or
    overlaps) or needing gradients, is returned as is. Values and strides (channels-last
    included) are the same, so computations on the copy give bit-identical results. Used where
    tensors outlive the frame that made them (the feature cache), so that they do not fragment
    the heap (see the module notes). Only on Linux, where the problem is glibc's; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return value
    return _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return _off_heap_tensor(value)
    if isinstance(value, tuple):
        items = [_copy(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _copy(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
        return dataclasses.replace(value, **changes)
    return value
