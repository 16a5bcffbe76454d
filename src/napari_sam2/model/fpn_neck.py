"""FPN neck: lateral 1x1 convolutions to C, one top-down sum, scalp of the coarsest level."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import SAM2Config
from .position_encoding import sine_2d


class _Lateral(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _compose_1x1(first: nn.Conv2d, second: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """second(first(x)) for two 1x1 convolutions, as one 1x1 convolution."""
    w1, w2 = first.weight.flatten(1), second.weight.flatten(1)  # (mid, in), (out, mid)
    weight = (w2 @ w1)[:, :, None, None]
    bias = w2 @ first.bias + second.bias
    return lambda x: F.conv2d(x, weight, bias)


class FpnNeck(nn.Module):
    """`convs.j` serves `channel_list[j]` (coarsest first), the reverse of the trunk order."""

    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        self.d_model = config.hidden_dim
        self.convs = nn.ModuleList(_Lateral(c, config.hidden_dim) for c in config.channel_list)
        self.top_down_levels = tuple(config.fpn_top_down_levels)
        self.scalp = config.scalp
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def forward(
        self, xs: list[torch.Tensor], then: dict[int, nn.Conv2d] | None = None
    ) -> list[torch.Tensor]:
        """Trunk levels (finest first) -> the kept levels (finest first).

        then: 1x1 convolutions to apply to some output levels. A level that no finer level
        sums into gets its lateral and that convolution as one 1x1 convolution: the same
        function, with no 256-channel map at stride 4 (0.1 s of a 1024 px frame on a CPU).
        """
        then = dict(then or {})
        n = len(xs) - 1
        outs: list[torch.Tensor] = [xs[0]] * len(xs)
        prev = None
        for i in range(n, -1, -1):
            if i in then and i not in self.top_down_levels and i - 1 not in self.top_down_levels:
                outs[i] = _compose_1x1(self.convs[n - i].conv, then.pop(i))(xs[i])
                continue
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            outs[i] = prev
        for i, conv in then.items():
            outs[i] = conv(outs[i])
        return outs[: len(outs) - self.scalp] if self.scalp > 0 else outs

    def position_encoding(self, level: torch.Tensor) -> torch.Tensor:
        """Sine PE (B, C, H, W) of a level (B, C, H, W).

        Computed on demand and cached per grid: the model only uses the stride-16 one, and it
        is the same for every frame (the official code recomputes all levels per frame).
        """
        b, _, h, w = level.shape
        key = (h, w, level.dtype, level.device)
        pe = self._pos_cache.get(key)
        if pe is None:
            pe = sine_2d(self.d_model, h, w, dtype=level.dtype, device=level.device)[None]
            if not torch.is_grad_enabled():  # a cached inference tensor cannot enter autograd
                self._pos_cache[key] = pe
        return pe.expand(b, -1, -1, -1)
