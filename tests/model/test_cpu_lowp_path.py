"""The CPU low-precision path (bfloat16 autocast without autograd) computes what autocast
computes: cached bfloat16 weights with oneDNN's fused bias, Hiera's windowed blocks in bands
of window rows, and caches that never leak between precisions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_sam2.model import SAM2Config, build_sam2, common, hiera


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_lowp_dtype_only_under_cpu_bfloat16_autocast_without_grad():
    cpu = torch.device("cpu")
    assert common.lowp_dtype(cpu) is None
    with _autocast():
        assert common.lowp_dtype(cpu) is None  # autograd records: plain autocast
        with torch.no_grad():
            assert common.lowp_dtype(cpu) == torch.bfloat16
        with torch.inference_mode():
            assert common.lowp_dtype(cpu) == torch.bfloat16
    with torch.no_grad():
        assert common.lowp_dtype(cpu) is None


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_matches_autocast_bitwise(activation):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 96)
    x = torch.randn(3, 5, 48)
    with torch.inference_mode(), _autocast():
        expected = F.linear(x, layer.weight, layer.bias)  # autocast casts all three
        if activation:
            expected = F.relu(expected)
        got = common.linear(layer, x, activation)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)


def test_fused_gelu_rounds_once():
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 96)
    x = torch.randn(64, 48)
    exact = F.gelu(
        F.linear(
            x.bfloat16().double(), layer.weight.bfloat16().double(), layer.bias.bfloat16().double()
        )
    )
    with torch.inference_mode(), _autocast():
        fused = common.linear(layer, x, "gelu").double()
        unfused = F.gelu(F.linear(x, layer.weight, layer.bias)).double()
    # one bfloat16 rounding of the exact value (the unfused form rounds twice)
    assert (fused - exact).abs().max() <= (unfused - exact).abs().max()
    torch.testing.assert_close(fused, exact, rtol=2**-8, atol=1e-6)


def test_cached_weights_follow_in_place_updates():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with torch.inference_mode(), _autocast():
        before = common.linear(layer, x)
    with torch.no_grad():
        layer.weight.mul_(2)  # e.g. load_state_dict copies in place
    with torch.inference_mode(), _autocast():
        after = common.linear(layer, x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert not torch.equal(before, after)
    assert torch.equal(after, expected)


def _blocks_and_inputs(config: SAM2Config, batch: int):
    torch.manual_seed(0)
    model = build_sam2(config).double().eval()
    trunk = model.image_encoder.trunk
    s = config.image_size
    with torch.no_grad():
        x = trunk.patch_embed(torch.randn(batch, 3, s, s, dtype=torch.float64))
        x = x + trunk._pos_embed(*x.shape[1:3])
        for block in trunk.blocks:
            yield block, x
            x = block(x)


@pytest.mark.parametrize("band_tokens", [1, 1024])
def test_bands_compute_the_block(small_config, monkeypatch, band_tokens):
    """Every windowed block of the small model (padded windows, query pooling, a batch of
    two), one window row per band and several, against the whole-map formulation."""
    monkeypatch.setattr(hiera, "BAND_TOKENS", band_tokens)
    checked = 0
    for block, x in _blocks_and_inputs(small_config, batch=2):
        if block.spec.window_size == 0:
            continue
        if block.spec.q_pool and (x.shape[1] % block.spec.window_size):
            continue
        with torch.no_grad():
            expected = block._forward_whole(x, None)
            got = block._forward_in_bands(x, None)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        checked += 1
    assert checked >= 3


def test_cpu_inference_runs_windowed_blocks_in_bands(small_config, monkeypatch):
    """Every precision takes the bands on the CPU without autograd (they hold a float32 frame's
    peak memory steadier as well); with autograd the block runs whole."""
    monkeypatch.setattr(hiera, "BAND_TOKENS", 16)
    banded = []
    in_bands = hiera.MultiScaleBlock._forward_in_bands

    def recording(self, x, lowp):
        banded.append(x.dtype)
        return in_bands(self, x, lowp)

    monkeypatch.setattr(hiera.MultiScaleBlock, "_forward_in_bands", recording)
    block, x = next((b, x) for b, x in _blocks_and_inputs(small_config, 1) if b.spec.window_size)
    x = x.float()
    block.float()
    with torch.no_grad():
        block(x)
    assert banded == [torch.float32]
    block(x.requires_grad_())
    assert banded == [torch.float32]


def test_lowp_encoder_agrees_with_float32(small_model):
    """The whole image encoder on the low-precision path stays within bfloat16 rounding of
    float32, with and without bands."""
    torch.manual_seed(0)
    s = small_model.config.image_size
    image = torch.randn(1, 3, s, s)
    with torch.inference_mode():
        ref = small_model.encode_image(image)
        with _autocast():
            lowp = small_model.encode_image(image)
    for a, b in [(ref.vision, lowp.vision), *zip(ref.high_res, lowp.high_res, strict=True)]:
        err = (a - b.float()).abs().max() / a.abs().max()
        assert err < 0.05


def test_dense_pe_cache_keeps_precisions_apart(small_model):
    pe = small_model.sam_prompt_encoder
    with torch.inference_mode():
        full = pe.dense_pe().clone()
        with _autocast():
            low = pe.dense_pe()
        again = pe.dense_pe()
    assert torch.equal(again, full)
    assert not torch.equal(low.float(), full)  # its matmul ran in bfloat16
    with torch.enable_grad():
        assert torch.equal(pe.dense_pe(), full)
