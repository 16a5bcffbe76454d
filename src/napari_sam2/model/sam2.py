"""`SAM2Model`: the SAM 2 modules under their official state-dict names and the per-step
operations the tracker composes (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP
from .config import SAM2Config
from .fpn_neck import FpnNeck
from .hiera import Hiera
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .position_encoding import sine_1d
from .prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0  # logits of an output whose object is judged absent


@dataclass
class ImageFeatures:
    """Per-frame image features, computed once per frame."""

    vision: torch.Tensor  # (B, C, G, G) raw stride-16 features p2
    vision_pos: torch.Tensor  # (B, C, G, G) sine PE of p2
    high_res: tuple[torch.Tensor, torch.Tensor]  # conv_s0(p0) (B, C/8, 4G, 4G), conv_s1(p1)


class DecoderDecision(Mapping[str, Any]):
    """What a decoder call chose (tokens, IoU predictions, object scores), for debugging and
    the parity tests: values held as tensors are read into lists only when looked up, since on
    a GPU each read waits for the device, and tracking itself reads none of them."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if isinstance(value, torch.Tensor):
            value = self._values[key] = value.tolist()
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"DecoderDecision({dict(self)!r})"

    def row(self, index: int) -> DecoderDecision:
        """Row ``index`` of a batched call's decision, as a call of batch 1 records it."""
        return DecoderDecision(
            {
                key: value[index : index + 1] if isinstance(value, (torch.Tensor, list)) else value
                for key, value in self._values.items()
            }
        )

    def with_values(self, **values: Any) -> DecoderDecision:
        return DecoderDecision({**self._values, **values})


@dataclass
class HeadOutput:
    """The chosen output of one decoder call (or of a mask used as output)."""

    low_res: torch.Tensor  # (B, 1, S/4, S/4) logits, -1024 where the object is absent
    high_res: torch.Tensor  # (B, 1, S, S) bilinear upsampling of low_res
    ious: torch.Tensor  # (B, 1)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)
    decision: Mapping[str, Any] = field(default_factory=dict)


class ImageEncoder(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        self.trunk = Hiera(config)
        self.neck = FpnNeck(config)

    def forward(
        self, images: torch.Tensor, then: dict[int, nn.Conv2d] | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> the neck levels (finest first, `then` applied, see `FpnNeck.forward`) and the PE
        of the coarsest kept (stride-16) one."""
        levels = self.neck(self.trunk(images), then=then)
        return levels, self.neck.position_encoding(levels[-1])


class SAM2Model(nn.Module):
    """The SAM 2 / 2.1 network. Build with `build_sam2`."""

    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        self.config = config
        c, m = config.hidden_dim, config.mem_dim
        # Parameters are registered in the official order, so state_dict() keys match it.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        if config.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
        else:
            self.no_obj_embed_spatial = None
        self.image_encoder = ImageEncoder(config)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(config)
        self.memory_encoder = MemoryEncoder(config)
        self.sam_prompt_encoder = PromptEncoder(config)
        self.sam_mask_decoder = MaskDecoder(config)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        if config.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(c, m)
        else:
            self.obj_ptr_tpos_proj = None
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            nn.init.trunc_normal_(p, std=0.02)
        if self.no_obj_embed_spatial is not None:
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

    # ---- properties ---------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def dtype(self) -> torch.dtype:
        return self.no_obj_ptr.dtype

    @property
    def device(self) -> torch.device:
        return self.no_obj_ptr.device

    # ---- image --------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """(B, 3, S, S) normalized images -> stride-16 features, their PE, high-res features."""
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(
                f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}"
            )
        dec = self.sam_mask_decoder
        # through the module's call, so that a compiled image encoder is the one that runs
        levels, vision_pos = self.image_encoder(
            images.to(self.dtype), then={0: dec.conv_s0, 1: dec.conv_s1}
        )
        return ImageFeatures(
            vision=levels[-1], vision_pos=vision_pos, high_res=(levels[0], levels[1])
        )

    def add_no_memory_embedding(self, vision: torch.Tensor) -> torch.Tensor:
        """Features of a frame conditioned on nothing: p2 + no_mem_embed."""
        return vision + self.no_mem_embed.reshape(1, -1, 1, 1)

    def attend_to_memory(
        self,
        vision: torch.Tensor,
        vision_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_pointer_tokens: int,
    ) -> torch.Tensor:
        """Condition p2 (B, C, G, G) on a memory sequence (B, n, M) -> (B, C, G, G).

        p2 and its PE may be (1, C, G, G) with B memories: B objects tracked on the same frame,
        conditioned in one call (the frame's share of the work is done once). The memory is
        promoted to the compute dtype (stored bfloat16 features included).
        """
        _, c, h, w = vision.shape
        b = max(vision.shape[0], memory.shape[0])
        x = vision.flatten(2).transpose(1, 2)
        x_pos = vision_pos.flatten(2).transpose(1, 2)
        memory = memory.to(x.dtype)
        memory_pos = memory_pos.to(x.dtype)
        out = self.memory_attention(x, x_pos, memory, memory_pos, int(num_pointer_tokens))
        return out.transpose(1, 2).reshape(b, c, h, w)

    # ---- heads --------------------------------------------------------------------------
    def predict_masks(
        self,
        pix: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> HeadOutput:
        """Run the prompt encoder and mask decoder on conditioned features pix (B, C, G, G).

        point_coords (B, N, 2) (x, y) in model pixels, point_labels (B, N) in {0, 1, 2, 3};
        None for no points. mask_input (B, 1, S/4, S/4) logits or None.
        """
        b = pix.shape[0]
        dtype = pix.dtype
        if point_coords is None:
            # as the reference: one "not a point" token stands in for the missing points
            point_coords = pix.new_zeros(b, 1, 2)
            point_labels = torch.full((b, 1), -1, dtype=torch.int64, device=pix.device)
        elif point_labels is None:
            raise ValueError("point_labels must be given with point_coords")
        point_coords = point_coords.to(device=pix.device, dtype=dtype)
        point_labels = point_labels.to(device=pix.device)
        if point_coords.shape[:2] != point_labels.shape or point_coords.shape[-1] != 2:
            raise ValueError(
                f"point_coords {tuple(point_coords.shape)} must be (B, N, 2) and point_labels "
                f"{tuple(point_labels.shape)} (B, N)"
            )
        if mask_input is not None:
            lr = self.config.low_res_mask_size
            mask_input = mask_input.to(self.dtype)
            if mask_input.shape[-2:] != (lr, lr):
                mask_input = F.interpolate(
                    mask_input, (lr, lr), mode="bilinear", align_corners=False, antialias=True
                )
        pe = self.sam_prompt_encoder
        sparse, dense = pe(point_coords, point_labels, mask_input)
        dec = self.sam_mask_decoder
        out = dec(pix, pe.dense_pe().to(dtype), sparse, dense, high_res)
        chosen, ptr_token = dec.select(out, multimask)
        rows = torch.arange(b, device=pix.device)
        low_res = out.masks[rows, chosen].unsqueeze(1)
        ious = out.ious[rows, chosen].unsqueeze(1)
        token = out.mask_tokens[rows, ptr_token]
        score = out.object_score_logits
        present = score > 0  # (B, 1)
        low_res = torch.where(present[:, :, None, None], low_res, NO_OBJ_SCORE)
        obj_ptr = self.obj_ptr_proj(token)
        obj_ptr = torch.where(present, obj_ptr, self.no_obj_ptr.to(obj_ptr.dtype))
        decision = DecoderDecision(
            {
                "multimask": bool(multimask),
                "selected_token": chosen,
                "pointer_token": ptr_token,
                "iou_all": out.ious.detach(),
                "num_sparse_tokens": int(sparse.shape[1]),
                "object_score_logit": score[:, 0].detach(),
            }
        )
        return HeadOutput(
            low_res=low_res,
            high_res=self.upsample_logits(low_res),
            ious=ious,
            obj_ptr=obj_ptr,
            object_score_logits=score,
            decision=decision,
        )

    def upsample_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, 1, S/4, S/4) -> (B, 1, S, S), bilinear, no antialias."""
        s = self.config.image_size
        return F.interpolate(low_res, (s, s), mode="bilinear", align_corners=False)

    def mask_as_output(
        self,
        vision: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
    ) -> HeadOutput:
        """A mask prompt (B, 1, S, S) in {0, 1} used directly as the output (HYPERPARAMS 10).

        The pointer comes from the decoder run on the raw features with the downsampled mask
        as mask prompt; it is replaced by no_obj_ptr where the mask is empty.
        """
        s = self.config.image_size
        if mask.shape[-2:] != (s, s) or mask.ndim != 4:
            raise ValueError(f"mask must be (B, 1, {s}, {s}), got {tuple(mask.shape)}")
        m = mask.to(self.dtype)  # parameter dtype: antialiasing has no half kernels
        high = m * 20.0 - 10.0
        lr = self.config.low_res_mask_size
        low = F.interpolate(high, (lr, lr), mode="bilinear", align_corners=False, antialias=True)
        present = (m.flatten(1) > 0).any(dim=1, keepdim=True)  # (B, 1)
        head = self.predict_masks(
            vision, high_res, None, None, self.mask_downsample(m), multimask=False
        )
        obj_ptr = torch.where(present, head.obj_ptr, self.no_obj_ptr.to(head.obj_ptr.dtype))
        score = torch.where(present, 10.0, -10.0).to(self.dtype)
        decision = head.decision.with_values(mask_as_output=True)
        return HeadOutput(
            low_res=low,
            high_res=high,
            ious=torch.ones_like(score),
            obj_ptr=obj_ptr,
            object_score_logits=score,
            decision=decision,
        )

    # ---- memory -------------------------------------------------------------------------
    def encode_memory(
        self,
        vision: torch.Tensor,
        high_res_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of a frame from its raw p2 and chosen (B, 1, S, S) logits.

        binarize: prompted frames use logits > 0, tracked frames the sigmoid. p2 may be
        (1, C, G, G) with B masks (objects of one frame: its projection is computed once).
        Returns features (B, M, G, G) (the caller stores them as bfloat16) and their PE.
        """
        logits = high_res_logits.to(vision.dtype)
        mask = (logits > 0).to(logits.dtype) if binarize else torch.sigmoid(logits)
        mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        feats, pos = self.memory_encoder(vision, mask)
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).to(feats.dtype)  # (B, 1)
            feats = feats + absent[:, :, None, None] * self.no_obj_embed_spatial[..., None, None]
        return feats, pos

    def spatial_memory(
        self, mem: torch.Tensor, mem_pos: torch.Tensor, tpos_row: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, G, G) memory and PE -> (B, G*G, M) tokens and PE + maskmem_tpos_enc[row].

        Rows: 6 (num_maskmem - 1) for conditioning frames, k - 1 for the frame k back.
        """
        if not 0 <= tpos_row < self.config.num_maskmem:
            raise ValueError(f"tpos_row must be in [0, {self.config.num_maskmem}), got {tpos_row}")
        tokens = mem.flatten(2).transpose(1, 2)
        pos = mem_pos.flatten(2).transpose(1, 2).to(self.dtype)
        pos = pos + self.maskmem_tpos_enc[tpos_row].reshape(1, 1, -1)
        return tokens, pos

    def pointer_memory(
        self, obj_ptrs: torch.Tensor, distances: torch.Tensor, t_max: int | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers (P, B, C) at signed frame distances (P,) -> (B, P*C/M, M) tokens
        and PE. Pointer j gives tokens j*C/M ... (j+1)*C/M - 1, all with the same PE."""
        p, b, c = obj_ptrs.shape
        m = self.config.mem_dim
        split = c // m
        dtype = self.dtype
        tokens = obj_ptrs.to(dtype).reshape(p, b, split, m).permute(1, 0, 2, 3).reshape(b, -1, m)
        if self.obj_ptr_tpos_proj is not None and self.config.add_tpos_enc_to_obj_ptrs:
            d = torch.as_tensor(distances, device=self.device).to(dtype)
            if not self.config.use_signed_tpos_enc_to_obj_ptrs:
                d = d.abs()
            pe = self.obj_ptr_tpos_proj(sine_1d(d / t_max, c))  # (P, M)
        else:
            pe = tokens.new_zeros(p, m)
        pos = pe.repeat_interleave(split, dim=0).unsqueeze(0).expand(b, -1, -1)
        return tokens, pos
