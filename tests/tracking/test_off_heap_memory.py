"""Long-lived tensors kept out of glibc's heap (memory_trim.off_heap_copy, the feature cache).

Cached image features outlive the frame that made them; left on the heap among the frame's
temporaries they fragment it and the peak resident size grows frame after frame (issue 12,
benchmarks/README.md). The cache keeps copies in memory maps of their own instead; these tests
check that the copies are exact (values, dtype, layout), that their memory goes back to the
system when they are dropped, and that tracking results do not change.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import re
import sys

import numpy as np
import pytest
import torch

from napari_sam2.tracking import Tracker, memory_trim
from napari_sam2.tracking.feature_cache import FeatureCache
from small_model import moving_blob_stack

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc / Linux only")
BIG = memory_trim.OFF_HEAP_MIN_BYTES // 4  # float32 elements of a tensor at the threshold


def _mapping_of(t: torch.Tensor) -> str | None:
    """The /proc/self/maps line of the mapping holding ``t``'s first byte."""
    address = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line.strip()
    return None


@linux
@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(4, BIG // 4),
        lambda: torch.randn(1, 16, 32, BIG // 512).to(memory_format=torch.channels_last),
        lambda: torch.randn(2, BIG).to(torch.bfloat16),
        lambda: torch.randn(BIG // 8, 8).t(),  # a transposed (dense) view
    ],
    ids=["contiguous", "channels_last", "bfloat16", "transposed"],
)
def test_copy_is_exact_and_outside_the_heap(make):
    t = make()
    c = memory_trim.off_heap_copy(t)
    assert c.data_ptr() != t.data_ptr()
    assert c.dtype == t.dtype and c.shape == t.shape and c.stride() == t.stride()
    assert torch.equal(c, t)
    mapping = _mapping_of(c)
    assert mapping is not None and "[heap]" not in mapping


@linux
def test_small_sparse_or_grad_tensors_are_left_alone():
    small = torch.randn(8)
    strided = torch.randn(4, 2 * BIG)[:, ::2]  # gaps between elements: not dense
    expanded = torch.randn(BIG).expand(3, BIG)  # overlapping
    grad = torch.randn(2 * BIG, requires_grad=True)
    for t in (small, strided, expanded, grad):
        assert memory_trim.off_heap_copy(t) is t


@dataclasses.dataclass
class _Feats:
    vision: torch.Tensor
    pos: torch.Tensor | None
    high: tuple[torch.Tensor, torch.Tensor]


@linux
def test_structures_are_rebuilt_with_the_copies():
    Pair = collections.namedtuple("Pair", "a b")
    big = torch.randn(2 * BIG)
    value = {
        "feats": _Feats(big, None, (big.clone(), torch.zeros(3))),
        "list": [big.clone(), "text", 3],
        "pair": Pair(big.clone(), 1.5),
    }
    out = memory_trim.off_heap_copy(value)
    assert isinstance(out["feats"], _Feats) and out["feats"].pos is None
    assert out["feats"].vision.data_ptr() != big.data_ptr()
    assert torch.equal(out["feats"].high[0], big) and out["feats"].high[1] is value["feats"].high[1]
    assert out["list"][1:] == ["text", 3] and torch.equal(out["list"][0], big)
    assert isinstance(out["pair"], Pair) and out["pair"].b == 1.5


def _rss_mb() -> float:
    status = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


@linux
def test_memory_goes_back_to_the_system_when_the_copy_is_dropped():
    t = torch.ones(16 * 2**20 // 4)  # 16 MB
    gc.collect()
    before = _rss_mb()
    copies = [memory_trim.off_heap_copy(t) for _ in range(4)]  # 64 MB, touched by the copy
    mappings = [_mapping_of(c) for c in copies]
    assert _rss_mb() - before > 48
    del copies
    gc.collect()
    assert _rss_mb() - before < 16
    current = open("/proc/self/maps").read()
    assert not any(m in current for m in mappings)  # unmapped, not merely freed


@linux
def test_feature_cache_keeps_copies_and_returns_them():
    cache = FeatureCache(max_bytes=64 * BIG)
    feats = _Feats(torch.randn(2 * BIG), None, (torch.randn(BIG), torch.randn(4)))
    kept = cache.put(0, feats)
    assert cache.get(0) is kept and kept is not feats
    assert kept.vision.data_ptr() != feats.vision.data_ptr()
    assert torch.equal(kept.vision, feats.vision) and torch.equal(kept.high[0], feats.high[0])
    assert cache.nbytes == (3 * BIG + 4) * 4
    plain = FeatureCache(max_bytes=64 * BIG, off_heap=False)
    assert plain.put(0, feats) is feats
    # larger than the budget: kept only until the next put, not worth a copy
    tiny = FeatureCache(max_bytes=16)
    assert tiny.put(0, feats) is feats


def test_tracking_results_are_the_same_with_off_heap_features(small_model, monkeypatch):
    # the small network's features are below the size threshold: lower it so they are copied
    monkeypatch.setattr(memory_trim, "OFF_HEAP_MIN_BYTES", 0)
    frames = moving_blob_stack(6, size=64, seed=5)

    def run(off_heap: bool) -> list:
        tracker = Tracker(small_model, frames)
        tracker.features.off_heap = off_heap
        tracker.add_points(0, 1, [(32.0, 16.0)], [1])
        first = list(tracker.propagate())
        # a correction and a second pass: now every frame's features come from the cache
        tracker.add_points(3, 1, [(20.0, 40.0)], [0])
        again = list(tracker.propagate(start_frame=0))
        assert tracker.features.hits >= len(again) - 1
        return first + again

    for a, b in zip(run(True), run(False), strict=True):
        assert a.frame_index == b.frame_index
        np.testing.assert_array_equal(a.mask_logits, b.mask_logits)
        np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)
