"""Mask decoder: output tokens, two-way transformer, upscaling with high-res features,
hypernetwork masks, IoU and object-score heads, and the stability-based mask selection."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import MLP, LayerNorm2d, add
from .config import SAM2Config
from .two_way_transformer import TwoWayTransformer


@dataclass
class DecoderOutput:
    """All four candidates, before any selection."""

    masks: torch.Tensor  # (B, 4, S/4, S/4) logits
    ious: torch.Tensor  # (B, 4) after sigmoid
    mask_tokens: torch.Tensor  # (B, 4, C) transformer outputs of the mask tokens
    object_score_logits: torch.Tensor  # (B, 1)


class MaskDecoder(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        c = config.hidden_dim
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.stability_delta = config.stability_delta
        self.stability_thresh = config.stability_thresh
        self.transformer = TwoWayTransformer(
            c,
            config.decoder_depth,
            config.decoder_heads,
            config.decoder_mlp_dim,
            config.attention_downsample_rate,
        )
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            c,
            config.iou_head_hidden_dim,
            self.num_mask_tokens,
            config.iou_head_depth,
            sigmoid_output=True,
        )
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> DecoderOutput:
        """image (B, C, G, G) conditioned features; sparse (B, N, C); dense (B, C, G, G)."""
        b = sparse.shape[0]
        out_tokens = torch.cat(
            (self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight), dim=0
        )
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        src = add(image, dense)
        pe = image_pe.expand(b, -1, -1, -1)
        hs, src = self.transformer(src, pe, tokens)
        score_out, iou_out = hs[:, 0], hs[:, 1]
        mask_out = hs[:, 2 : 2 + self.num_mask_tokens]

        g = image.shape[-1]
        src = src.transpose(1, 2).reshape(b, -1, g, g)
        feat_s0, feat_s1 = high_res
        up1, ln1, act1, up2, act2 = self.output_upscaling
        u = act1(ln1(up1(src) + feat_s1))
        u = act2(up2(u) + feat_s0)  # (B, C/8, 4G, 4G)

        hyper = torch.stack(
            [mlp(mask_out[:, t]) for t, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, 4, C/8)
        h, w = u.shape[-2:]
        masks = (hyper @ u.flatten(2)).view(b, -1, h, w)
        return DecoderOutput(
            masks=masks,
            ious=self.iou_prediction_head(iou_out),
            mask_tokens=mask_out,
            object_score_logits=self.pred_obj_score_head(score_out),
        )

    def stability(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) logits -> (B, K): area above +delta over area above -delta."""
        inter = (masks > self.stability_delta).flatten(-2).sum(-1).to(masks.dtype)
        union = (masks > -self.stability_delta).flatten(-2).sum(-1).to(masks.dtype)
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))

    def select(self, out: DecoderOutput, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (B,) of the mask to return and of the token for the object pointer.

        multimask: best of tokens 1..3 by IoU for both. Single: token 0 if its mask is stable,
        else the best of 1..3; the pointer always uses token 0.
        """
        best_multi = out.ious[:, 1:].argmax(dim=-1) + 1
        if multimask:
            return best_multi, best_multi
        stable = self.stability(out.masks[:, :1])[:, 0] >= self.stability_thresh
        chosen = torch.where(stable, torch.zeros_like(best_multi), best_multi)
        return chosen, torch.zeros_like(best_multi)
