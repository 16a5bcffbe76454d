"""A tracked frame reads values from the device only for its results, once all of its work is
queued: on a GPU every read (``.tolist()``, ``.item()``, ``float()``, ``.numpy()`` of a copy)
waits for the device, and a read in the middle of a frame leaves the device idle while the
host queues the rest. Counted on the CPU through torch's function hooks, which see the same
calls."""

from __future__ import annotations

import pytest
from torch.overrides import TorchFunctionMode

from napari_sam2.tracking import Tracker
from small_model import moving_blob_stack

READS = {"tolist", "item", "__float__", "__int__", "__bool__", "__index__", "numpy"}


class ReadCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("objects", [1, 3])
def test_a_tracked_frame_reads_the_device_only_for_its_results(small_model, objects):
    tracker = Tracker(small_model, moving_blob_stack(6))
    for k in range(objects):
        tracker.add_points(0, k + 1, [(20.0 + 6 * k, 20.0)], [1])
    steps = tracker.propagate()
    next(steps)  # the prompted frame (its memory encoded first)
    next(steps)
    counter = ReadCounter()
    with counter:
        result = next(steps)
    assert result.frame_index == 2 and result.has_output.all()
    assert counter.reads == ["numpy", "numpy"]  # the frame's mask logits, then its scores
    tracker.close()


def test_the_trace_and_stored_outputs_keep_the_decoder_decisions(small_model):
    tracker = Tracker(small_model, moving_blob_stack(3))
    tracker.debug_trace = []
    tracker.add_points(0, 1, [(20.0, 20.0)], [1])
    list(tracker.propagate())
    tracked = [e for e in tracker.debug_trace if e["kind"] == "track"]
    assert [e["frame"] for e in tracked] == [1, 2]
    for entry in tracked:
        decision = entry["decision"]
        assert type(decision) is dict  # plain values in the trace
        assert decision["selected_token"] in ([0], [1], [2], [3])
        assert len(decision["iou_all"]) == 1 and len(decision["iou_all"][0]) == 4
    stored = tracker.stored_output(1, 2).decision
    assert stored["object_score_logit"] == pytest.approx(
        tracked[-1]["decision"]["object_score_logit"]
    )
