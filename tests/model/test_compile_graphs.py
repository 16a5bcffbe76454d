"""The components that ``benchmarks/gpu_checks.py`` compiles trace into whole graphs.

``torch.compile`` splits a module's graph wherever dynamo meets something it cannot trace
(a graph break), and every split costs fusion and a return to Python on every call. The
components are traced here on the code path a GPU takes: autograd on, so none of the CPU
inference-only fast paths (raw-value attention blocks, the bfloat16 CPU path) is taken, with
dynamo's ``eager`` backend (tracing only: no compiler needed).
"""

from __future__ import annotations

import pytest
import torch

from napari_sam2.tracking import Tracker

COMPILED = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder")


@pytest.fixture(scope="module")
def captured_inputs(small_model):
    """The arguments each compiled component received in an eager tracked run (two objects,
    so that the memory attention sees a full memory bank and batched objects)."""
    from small_model import moving_blob_stack

    calls: dict[str, tuple] = {}

    def normal(value):  # tensors made under inference mode cannot be saved for backward
        if isinstance(value, torch.Tensor):
            with torch.inference_mode(False):
                return value.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(normal(v) for v in value)
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        return value

    def keep(name):
        def hook(module, args, kwargs):
            calls[name] = (normal(args), normal(kwargs))  # the last call: a full memory bank

        return hook

    handles = [
        getattr(small_model, name).register_forward_pre_hook(keep(name), with_kwargs=True)
        for name in COMPILED
    ]
    try:
        stack = moving_blob_stack(frames=9)
        tracker = Tracker(small_model, stack)
        s = stack.shape[-1]
        tracker.add_points(0, 1, [(s // 2, s // 2)], [1])
        tracker.add_box(0, 2, [2, 2, s // 4, s // 4])
        for _ in tracker.propagate():
            pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


def test_tracking_calls_every_compiled_component_as_a_module(captured_inputs):
    """``module.compile()`` replaces what the module's call runs: a component reached around
    its call (e.g. its submodules called one by one) would stay uncompiled."""
    assert set(captured_inputs) == set(COMPILED)


@pytest.mark.parametrize("name", COMPILED)
def test_component_traces_without_graph_breaks(small_model, captured_inputs, name):
    module = getattr(small_model, name)
    if name not in captured_inputs:
        pytest.fail(f"tracking never called {name} as a module")
    args, kwargs = captured_inputs[name]
    torch._dynamo.reset()
    with torch.enable_grad():  # the GPU's code path (see the module docstring)
        explained = torch._dynamo.explain(module)(*args, **kwargs)
    reasons = [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1
