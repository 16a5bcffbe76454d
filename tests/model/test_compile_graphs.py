"""The components that ``benchmarks/gpu_checks.py`` compiles trace into whole graphs.

``torch.compile`` splits a module's graph wherever dynamo meets something it cannot trace
(a graph break), and every split costs fusion and a return to Python on every call. The
components are traced here as a GPU runs them: under inference mode (the tracker's), on a
device that is not the CPU, so that none of the CPU-only fast paths (raw-value attention
blocks, the bfloat16 CPU path) is taken. That device is ``meta`` (shapes without data), and
dynamo's ``eager`` backend only traces: no GPU and no compiler needed.
"""

from __future__ import annotations

import copy

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

    def keep(name):
        def hook(module, args, kwargs):
            calls[name] = (args, kwargs)  # the last call: a full memory bank

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


def _to_meta(value, modules: dict):
    """value with its tensors on meta and its submodules of the small model replaced by the
    meta copy's (``modules``: id of a module -> its copy)."""
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, torch.nn.Module):
        return modules[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v, modules) for v in value)
    if isinstance(value, dict):
        return {k: _to_meta(v, modules) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def meta_model(small_model):
    """A copy of the small model on meta, and its modules by the id of the original's."""
    meta = copy.deepcopy(small_model).to("meta")
    originals = dict(small_model.named_modules())
    return meta, {id(originals[name]): m for name, m in meta.named_modules()}


@pytest.mark.parametrize("name", COMPILED)
def test_component_traces_without_graph_breaks(meta_model, captured_inputs, name):
    if name not in captured_inputs:
        pytest.fail(f"tracking never called {name} as a module")
    model, modules = meta_model
    module = getattr(model, name)
    args, kwargs = _to_meta(captured_inputs[name], modules)
    torch._dynamo.reset()
    with torch.inference_mode():
        for _ in range(2):  # the second call meets the caches the first one filled
            explained = torch._dynamo.explain(module)(*args, **kwargs)
            reasons = [str(b.reason) for b in explained.break_reasons]
            assert explained.graph_break_count == 0, reasons
            assert explained.graph_count == 1
