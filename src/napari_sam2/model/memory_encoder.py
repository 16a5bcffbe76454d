"""Memory encoder: the mask is downsampled to the feature grid, fused with the frame's
features by ConvNeXt blocks and projected to the memory width M."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d, linear, lowp_dtype
from .config import SAM2Config
from .position_encoding import sine_2d


class MaskDownSampler(nn.Module):
    """Repeated [conv k3 s2, LayerNorm2d, GELU] (x16 downsampling), then a 1x1 conv to C."""

    def __init__(self, channels: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), LayerNorm2d(cout), nn.GELU()]
        layers.append(nn.Conv2d(channels[-1], out_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm, pointwise MLP x4, layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        if lowp_dtype(x.device) is not None and type(self.act) is nn.GELU:
            y = self.gamma * linear(self.pwconv2, linear(self.pwconv1, y, "gelu"))
        else:
            y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, kernel_size) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        c = config.hidden_dim
        self.mem_dim = config.mem_dim
        self.mask_downsampler = MaskDownSampler(tuple(config.mask_downsampler_channels), c)
        self.pix_feat_proj = nn.Conv2d(c, c, kernel_size=1)
        self.fuser = Fuser(c, config.fuser_layers, config.fuser_kernel_size)
        self.out_proj = nn.Conv2d(c, config.mem_dim, kernel_size=1)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, G, G) raw p2; mask (B, 1, S, S) already scaled to [-10, 10].

        Returns memory features (B, M, G, G) and their sine PE (B, M, G, G).
        """
        x = self.pix_feat_proj(features) + self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(x))
        return x, self._position_encoding(x)

    def _position_encoding(self, x: torch.Tensor) -> torch.Tensor:
        """Sine PE of the memory grid, cached per grid and dtype while no gradient is needed."""
        b, _, h, w = x.shape
        key = (h, w, x.dtype, x.device)
        pos = self._pos_cache.get(key)
        if pos is None:
            pos = sine_2d(self.mem_dim, h, w, dtype=x.dtype, device=x.device).unsqueeze(0)
            if not torch.is_grad_enabled():  # a cached inference tensor cannot enter autograd
                self._pos_cache[key] = pos
        return pos.expand(b, -1, -1, -1)
