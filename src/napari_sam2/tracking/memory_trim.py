"""Give memory freed by a tracked frame back to the system, without touching the allocator.

Each tracked frame allocates and frees tens of large tensors (image features, attention
scores, upsampled masks). glibc serves tensors above its dynamic mmap threshold with ``mmap``
(returned on free), but it raises that threshold to the size of each freed mapped block, so
after the first frames the tensors come from the heap. Freed heap blocks stay resident, and as
the feature cache evicts old frames between longer-lived tensors the heap fragments: the peak
resident size then grows by about 1 MB per frame. The command line avoids it by fixing the
threshold for its whole process (``mallopt``); a library inside napari must not change the
allocator of the whole application. ``malloc_trim(0)`` instead hands the free pages of the
heap (also those in its middle, with ``madvise``) back once per frame, leaving the allocator's
settings alone.

On other C libraries (macOS, Windows, musl) the call is not available and this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

__all__ = ["release_freed_memory"]


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

    Costs a walk over the heap's free blocks (about a millisecond per tracked frame, see
    benchmarks/README.md), small against the encoder's seconds.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
