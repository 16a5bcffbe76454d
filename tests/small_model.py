"""A small SAM 2.1 network that the tests build themselves (no ``../shared`` needed).

The configuration is the official SAM 2.1 architecture with small sizes (the sizes of the
reference ``mini`` configuration: 256 px, 1.7 M parameters), so a tracked frame takes
milliseconds. Its weights are random but not default-initialised: every tensor is drawn so
that outputs depend on the image and the memory, and the object-score head is scaled so that
an object is judged present on some frames and absent on others. The masks mean nothing; the
tests check behaviour (gaps, ids, files, errors), not segmentation quality.

Imported by name (``tests/`` has no packages): ``from small_model import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from napari_sam2.model import SAM2Config, SAM2Model

SMALL_CONFIG = dict(
    name="small_test",
    image_size=256,
    hidden_dim=64,
    mem_dim=16,
    embed_dim=16,
    num_heads=1,
    stages=(1, 2, 3, 2),
    global_att_blocks=(5,),
    memory_attention_layers=2,
    memory_attention_ffn_dim=256,
)
"""Keyword arguments of :class:`SAM2Config` for the small test network."""


def small_config() -> SAM2Config:
    return SAM2Config(**SMALL_CONFIG)


def random_state_dict(config: SAM2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights in the official format, drawn so that every output depends on its inputs."""
    gen = torch.Generator().manual_seed(seed)
    state = SAM2Model(config).state_dict()
    drawn: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        shape = tensor.shape
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("pos_embed") or name.endswith("pos_embed_window"):
            value = 0.3 * noise
        elif _is_learned_embedding(name):
            value = 0.5 * noise
        elif tensor.ndim >= 2 and ("weight" in name.rsplit(".", 1)[-1]):
            fan_in = int(np.prod(shape[1:]))
            value = noise / fan_in**0.5
        elif name.endswith("bias"):
            value = 0.1 * noise
        elif tensor.ndim == 1 and name.endswith("weight"):  # norms
            value = 1.0 + 0.2 * noise
        elif name.endswith("gamma"):  # ConvNeXt layer scale
            value = 0.5 + 0.2 * noise
        else:  # learned embeddings and tokens
            value = 0.5 * noise
        drawn[name] = value.contiguous()
    drawn["sam_mask_decoder.mask_tokens.weight"] *= 0.2
    drawn["sam_mask_decoder.iou_token.weight"] *= 0.2
    # object scores of a few units, so presence is decided firmly both ways
    drawn["sam_mask_decoder.pred_obj_score_head.layers.2.weight"] *= 10.0
    drawn["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] *= 10.0
    return drawn


def _is_learned_embedding(name: str) -> bool:
    last = name.rsplit(".", 2)
    owner = last[-2] if name.endswith(".weight") else last[-1]
    return "embed" in owner or "token" in owner or owner == "no_obj_ptr"


def write_checkpoint(path: str | os.PathLike, config: SAM2Config | None = None, seed: int = 0):
    """Save random weights as an official checkpoint file (``{"model": state_dict}``)."""
    path = Path(path)
    state = random_state_dict(config or small_config(), seed)
    torch.save({"model": state}, path)
    return path


def moving_blob_stack(
    frames: int = 6, size: int = 96, dtype: type = np.uint8, seed: int = 0
) -> np.ndarray:
    """(T, Y, X) bright disc moving right on a noisy background, as a generated time-lapse."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    top = 200 if info is None or info.max < 1000 else 3000
    stack = np.empty((frames, size, size), np.float64)
    for t in range(frames):
        cy, cx = size // 2, size // 4 + t * size // (2 * max(frames, 1))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2
        stack[t] = 20 + top * disc + rng.normal(0, 5, (size, size))
    if info is not None:
        stack = np.clip(stack, info.min, info.max)
    return stack.astype(dtype)


def config_values(config: SAM2Config | None = None) -> dict:
    """``config`` as the flat dict of official names that ``SAM2Config.from_dict`` reads (the
    ``values`` of a config JSON file, as the CLI's ``--config`` and ``track(model=...)`` take)."""
    c = config or small_config()
    return {
        "image_size": c.image_size,
        "hidden_dim": c.hidden_dim,
        "mem_dim": c.mem_dim,
        "trunk.embed_dim": c.embed_dim,
        "trunk.num_heads": c.num_heads,
        "trunk.stages": list(c.stages),
        "trunk.global_att_blocks": list(c.global_att_blocks),
        "trunk.window_spec": list(c.window_spec),
        "trunk.window_pos_embed_bkg_spatial_size": list(c.window_pos_embed_bkg_spatial_size),
        "trunk.q_pool_blocks": list(c.q_pool_blocks),
        "neck.backbone_channel_list": list(c.channel_list),
        "memory_attention.num_layers": c.memory_attention_layers,
        "memory_attention.dim_feedforward": c.memory_attention_ffn_dim,
        "model.no_obj_embed_spatial": c.no_obj_embed_spatial,
        "model.proj_tpos_enc_in_obj_ptrs": c.proj_tpos_enc_in_obj_ptrs,
        "model.add_tpos_enc_to_obj_ptrs": c.add_tpos_enc_to_obj_ptrs,
        "model.use_signed_tpos_enc_to_obj_ptrs": c.use_signed_tpos_enc_to_obj_ptrs,
    }


def write_config(path: str | os.PathLike, config: SAM2Config | None = None) -> Path:
    """Save ``config`` as a config JSON file (``{"name": ..., "values": {...}}``)."""
    import json

    c = config or small_config()
    path = Path(path)
    path.write_text(json.dumps({"name": c.name, "values": config_values(c)}, indent=1))
    return path
