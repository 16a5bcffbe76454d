"""Hiera trunk: a hierarchical ViT with windowed attention and query pooling.

Tokens are kept channels-last, (B, H, W, C), throughout; windows are cut by reshapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import CHUNK_BYTES, MLP, add, add_, apply_in_row_chunks, linear, lowp_dtype
from .config import BlockSpec, SAM2Config

# Windowed blocks of CPU inference run one band of windows at a time
# (`MultiScaleBlock._forward_in_bands`), in every precision: besides the speed, a float32
# frame's peak memory then scatters half as much from frame to frame (benchmarks/README.md).
# 8192 tokens: the tracked bfloat16 frame 15-22 ms faster than with 4096 (frames alternating in
# one tracker), where the image encoder alone had measured them alike: half the bands, half
# the Python calls.
IN_BANDS = True
BAND_TOKENS = 8192


def _window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, window, window, C), zero-padding bottom/right."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def _window_unpartition(
    x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `_window_partition`, cropping the padding."""
    hp, wp = padded
    h, w = size
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool (floor) of a channels-last map (B, H, W, C).

    max_pool2d on the channels-first *view* runs torch's channels-last kernel, several times
    faster than a reduction over reshaped axes and bitwise the same.
    """
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, out_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if lowp_dtype(x.device) is not None:
            # a channels-last input makes oneDNN write the (B, S/4, S/4, C0) layout directly
            x = x.contiguous(memory_format=torch.channels_last)
        return self.proj(x).permute(0, 2, 3, 1)  # (B, S/4, S/4, C0)


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, q_pool: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape  # b = batch * windows
        qkv = linear(self.qkv, x).reshape(b, h, w, 3, self.heads, -1)
        q, k, v = (t.flatten(1, 2) for t in qkv.unbind(3))  # (b, hw, heads, d)
        if self.q_pool:
            q = _max_pool_2x2(qkv[:, :, :, 0].flatten(3))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return linear(self.proj, out)


class MultiScaleBlock(nn.Module):
    def __init__(self, spec: BlockSpec, mlp_ratio: float) -> None:
        super().__init__()
        self.spec = spec
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = MultiScaleAttention(spec.dim, spec.dim_out, spec.heads, spec.q_pool)
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=1e-6)
        self.mlp = MLP(
            spec.dim_out, int(spec.dim_out * mlp_ratio), spec.dim_out, 2, activation=nn.GELU
        )
        if spec.dim != spec.dim_out:
            self.proj = nn.Linear(spec.dim, spec.dim_out)

    def _pooled_projection(self, a: torch.Tensor) -> torch.Tensor:
        """2x2 max-pool of proj(a) (B, H, W, C), a few pairs of token rows at a time."""
        b, h, w, c = a.shape
        row_pairs = a[:, : h - h % 2].reshape(b * (h // 2), 2, w, c)
        pair_bytes = 2 * w * self.proj.out_features * a.element_size()
        pooled = apply_in_row_chunks(
            lambda t: _max_pool_2x2(linear(self.proj, t)),
            row_pairs,
            max(1, CHUNK_BYTES // pair_bytes),
        )  # (B * H/2, 1, W/2, C')
        return pooled.view(b, h // 2, w // 2, -1)

    def _forward_in_bands(self, x: torch.Tensor, lowp: torch.dtype | None) -> torch.Tensor:
        """The windowed block a band of window rows at a time (each image apart).

        Windows never cross a band and the MLP works token by token, so a band of about
        `BAND_TOKENS` tokens goes through the whole block (norms, windows, attention,
        residuals, MLP) while its tensors stay in the CPU's caches, instead of every step
        streaming the whole map through memory (the narrow early stages are bound by memory
        traffic, not arithmetic). With query pooling the grid must be a multiple of the
        window (`forward` checks).
        """
        b, h, w, _ = x.shape
        win = self.spec.window_size
        pool = self.spec.q_pool
        out_win = win // 2 if pool else win
        pad_w = (-w) % win
        nw = (w + pad_w) // win
        step = win * max(1, BAND_TOKENS // (win * (w + pad_w)))  # token rows per band
        out = None
        for i in range(b):
            for r0 in range(0, h, step):
                rows = min(step, h - r0)
                a = self.norm1(x[i : i + 1, r0 : r0 + rows])
                if lowp is not None:
                    a = a.to(lowp)
                if self.spec.dim == self.spec.dim_out:
                    shortcut = x[i : i + 1, r0 : r0 + rows]
                elif pool:
                    shortcut = _max_pool_2x2(linear(self.proj, a))
                else:
                    shortcut = linear(self.proj, a)
                pad_h = (-rows) % win
                if pad_h or pad_w:
                    a = F.pad(a, (0, 0, 0, pad_w, 0, pad_h))
                nh = (rows + pad_h) // win
                a = a.view(nh, win, nw, win, -1).transpose(1, 2).reshape(nh * nw, win, win, -1)
                a = self.attn(a)  # (windows, out_win, out_win, C')
                a = a.view(nh, nw, out_win, out_win, -1).transpose(1, 2)
                a = a.reshape(1, nh * out_win, nw * out_win, -1)
                if out is None:  # the dtype of shortcut + a, as in `forward`
                    dtype = torch.promote_types(shortcut.dtype, a.dtype)
                    size = (b, h // 2 if pool else h, shortcut.shape[2], a.shape[-1])
                    out = x.new_empty(size, dtype=dtype)
                o0, orows = (r0 // 2, rows // 2) if pool else (r0, rows)
                band = out[i : i + 1, o0 : o0 + orows]
                a = a[:, :orows, : band.shape[2]]
                if shortcut.dtype == band.dtype:  # a is cast by the copy (see `add_`)
                    add_(band.copy_(a), shortcut)
                else:
                    torch.add(shortcut, a, out=band)
                tokens = band.view(-1, band.shape[-1])
                add_(tokens, self.mlp(self.norm2(tokens)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lowp = lowp_dtype(x.device)
        window = self.spec.window_size
        if (
            IN_BANDS
            and x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and window > 0
            and x.shape[1] * x.shape[2] > BAND_TOKENS
            and (not self.spec.q_pool or (x.shape[1] % window == 0 and x.shape[2] % window == 0))
        ):
            return self._forward_in_bands(x, lowp)
        return self._forward_whole(x, lowp)

    def _forward_whole(self, x: torch.Tensor, lowp: torch.dtype | None) -> torch.Tensor:
        """The block over the whole map at once (autograd, GPUs, global attention)."""
        window = self.spec.window_size
        a = self.norm1(x)
        if lowp is not None:
            # every consumer of a is a matmul that computes in lowp: cast once, before the
            # window copies (the residual stream keeps the dtype autocast gives it)
            a = a.to(lowp)
        shortcut = x
        if self.spec.dim != self.spec.dim_out:
            # the widening shortcut is taken from the *normalized* input
            shortcut = self._pooled_projection(a) if self.spec.q_pool else linear(self.proj, a)
        if window > 0:
            a, _ = _window_partition(a, window)
            # windows attend independently: a few at a time, sized by their qkv tensor
            qkv_bytes = window * window * self.attn.qkv.out_features * a.element_size()
            a = apply_in_row_chunks(self.attn, a, max(1, CHUNK_BYTES // qkv_bytes))
            if self.spec.q_pool:
                window //= 2
            h, w = shortcut.shape[1:3]
            padded = (h + (-h) % window, w + (-w) % window)
            a = _window_unpartition(a, window, padded, (h, w))
        else:
            a = self.attn(a)
        x = shortcut + a if lowp is None else add(shortcut, a)
        tokens = x.flatten(0, 2)
        hidden_bytes = self.mlp.layers[0].out_features * x.element_size()
        if lowp is not None:
            # x is ours: add each chunk's MLP output to it in place (no output buffer)
            rows = max(1, CHUNK_BYTES // hidden_bytes)
            for start in range(0, tokens.shape[0], rows):
                t = tokens[start : start + rows]
                add_(t, self.mlp(self.norm2(t)))
            return x
        mlp = apply_in_row_chunks(
            lambda t: self.mlp(self.norm2(t)), tokens, max(1, CHUNK_BYTES // hidden_bytes)
        )
        return x + mlp.view_as(x)


class Hiera(nn.Module):
    """Returns the last state of each stage, channels-first, finest first."""

    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        c0 = config.embed_dim
        w0 = config.window_spec[0]
        self.patch_embed = PatchEmbed(c0)
        self.pos_embed = nn.Parameter(torch.zeros(1, c0, *config.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, c0, w0, w0))
        self.blocks = nn.ModuleList(MultiScaleBlock(s, config.mlp_ratio) for s in config.blocks)
        self.stage_ends = config.stage_ends
        self._pos_cache: list | None = None

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Background embedding resized to the grid plus the tiled window embedding; cached
        per grid while no gradient is needed (it depends on the weights only). Not under
        torch.compile, which cannot trace the cache's key (data pointers) and keeps the
        embedding in its graph instead."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute_pos_embed(h, w)
        key = (
            h,
            w,
            self.pos_embed.dtype,
            self.pos_embed.device,
            self.pos_embed._version,
            self.pos_embed_window._version,
            self.pos_embed.data_ptr(),
            self.pos_embed_window.data_ptr(),
        )
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = [key, self._compute_pos_embed(h, w), None]
        if lowp_dtype(self.pos_embed.device) is None:
            return self._pos_cache[1]  # added to the convolution's own layout
        if self._pos_cache[2] is None:  # the tokens' layout of the channels-last path
            self._pos_cache[2] = self._pos_cache[1].contiguous()
        return self._pos_cache[2]

    def _compute_pos_embed(self, h: int, w: int) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        win = self.pos_embed_window
        wh, ww = win.shape[-2:]
        if h % wh or w % ww:
            raise ValueError(f"token grid {h}x{w} is not a multiple of the window {wh}x{ww}")
        pos = pos + win.tile(1, 1, h // wh, w // ww)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        pos = self._pos_embed(*x.shape[1:3])
        if x.dtype != pos.dtype and lowp_dtype(x.device) is not None:
            x = add_(x.to(pos.dtype), pos)  # the same sum, vectorized (see `add_`)
        else:
            x = x + pos
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs
