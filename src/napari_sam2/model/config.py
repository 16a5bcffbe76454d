"""Hyperparameters of the SAM 2 / SAM 2.1 networks.

`SAM2Config` holds every number the network needs to be built. The eight official models are
written out here (from the official yaml configs, see HYPERPARAMS.md sections 1-3); sizes only
differ in the Hiera trunk, and SAM 2.0 vs 2.1 only in four memory flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODEL_NAMES: tuple[str, ...] = (
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
    "sam2_hiera_tiny",
    "sam2_hiera_small",
    "sam2_hiera_base_plus",
    "sam2_hiera_large",
)

# Trunk settings per size: embed_dim, heads, stages, global blocks, window spec, bkg pos-embed.
_TRUNKS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_spec=(8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_spec=(8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base_plus": dict(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_spec=(8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "large": dict(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
}


@dataclass(frozen=True)
class BlockSpec:
    """One Hiera block: input/output width, heads, window (0 = global), query pooling."""

    dim: int
    dim_out: int
    heads: int
    window_size: int
    q_pool: bool


@dataclass
class SAM2Config:
    """Every hyperparameter of a SAM 2 network (names follow HYPERPARAMS.md)."""

    name: str = "custom"
    sam_version: str = "2.1"
    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256  # C: neck width, prompt embedding, decoder, memory attention
    mem_dim: int = 64  # M: memory-encoder output
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Hiera trunk
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    q_stride: tuple[int, int] = (2, 2)
    mlp_ratio: float = 4.0
    # FPN neck
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    scalp: int = 1
    # prompt encoder and mask decoder (the last five are hard-coded in the official code)
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    stability_delta: float = 0.05
    stability_thresh: float = 0.98
    # memory attention
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    rope_theta: float = 10000.0
    # memory encoder
    mask_downsampler_channels: tuple[int, ...] = (1, 4, 16, 64, 256)
    fuser_layers: int = 2
    fuser_kernel_size: int = 7
    # memory bank
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    max_obj_ptrs_in_encoder: int = 16
    # SAM 2.0 vs 2.1
    no_obj_embed_spatial: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    extras: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.image_size % (self.backbone_stride * 2) != 0:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of {2 * self.backbone_stride}"
            )
        if self.hidden_dim % self.mem_dim != 0:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} must be a multiple of mem_dim {self.mem_dim} "
                "(object pointers are split into hidden_dim / mem_dim memory tokens)"
            )
        if len(self.stages) != len(self.window_spec):
            raise ValueError("stages and window_spec must have the same length")

    # ---- derived quantities -------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Side G of the stride-16 feature map."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_mask_size(self) -> int:
        return self.image_size // 4

    @property
    def stage_ends(self) -> tuple[int, ...]:
        ends, total = [], 0
        for n in self.stages:
            total += n
            ends.append(total - 1)
        return tuple(ends)

    @property
    def q_pool_blocks(self) -> tuple[int, ...]:
        return tuple(e + 1 for e in self.stage_ends[:-1])

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Trunk output widths, coarsest first (the neck's `backbone_channel_list`)."""
        return tuple(self.embed_dim * 2**i for i in reversed(range(len(self.stages))))

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """Per-block widths and windows; a stage's first (pooling) block keeps the previous
        stage's window size."""
        specs, dim, heads, stage = [], self.embed_dim, self.num_heads, 0
        ends = self.stage_ends
        for i in range(sum(self.stages)):
            window = 0 if i in self.global_att_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in ends:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            specs.append(BlockSpec(dim, dim_out, heads, window, i in self.q_pool_blocks))
            dim = dim_out
        return tuple(specs)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> SAM2Config:
        """The configuration of one of the eight official models (see `MODEL_NAMES`)."""
        if name not in MODEL_NAMES:
            raise ValueError(
                f"unknown SAM 2 model name {name!r}; valid names: {', '.join(MODEL_NAMES)}"
            )
        version = "2.1" if name.startswith("sam2.1") else "2.0"
        size = name.split("_hiera_")[1]
        v21 = version == "2.1"
        return cls(
            name=name,
            sam_version=version,
            no_obj_embed_spatial=v21,
            proj_tpos_enc_in_obj_ptrs=v21,
            add_tpos_enc_to_obj_ptrs=v21,
            use_signed_tpos_enc_to_obj_ptrs=v21,
            **_TRUNKS[size],
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], name: str = "custom") -> SAM2Config:
        """Build from a flat dict as in `mini/config.json -> values` (schema names)."""
        flat = dict(values)
        missing = [k for k in _FROM_DICT if k not in flat]
        if missing:
            raise KeyError(f"configuration dict lacks the keys {missing}")
        kwargs: dict[str, Any] = {}
        for key, (attr, conv) in _FROM_DICT.items():
            kwargs[attr] = conv(flat.pop(key))
        for key, (attr, conv) in _OPTIONAL.items():
            if key in flat:
                kwargs[attr] = conv(flat.pop(key))
        kwargs["sam_version"] = "2.1" if kwargs["no_obj_embed_spatial"] else "2.0"
        channels = tuple(int(c) for c in values.get("memory_encoder.mask_downsampler.channels", ()))
        if channels:
            # the schema lists the final 1x1 projection's width last; it must equal hidden_dim
            kwargs["mask_downsampler_channels"] = channels[:-1]
        config = cls(name=name, extras=flat, **kwargs)
        _check_consistent(config, values)
        return config

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _tuple(v: Any) -> tuple:
    return tuple(v)


def _pair(v: Any) -> tuple[int, int]:
    v = tuple(int(x) for x in v)
    return (v[0], v[1])


_FROM_DICT: dict[str, tuple[str, Any]] = {
    "image_size": ("image_size", int),
    "hidden_dim": ("hidden_dim", int),
    "mem_dim": ("mem_dim", int),
    "trunk.embed_dim": ("embed_dim", int),
    "trunk.num_heads": ("num_heads", int),
    "trunk.stages": ("stages", _tuple),
    "trunk.global_att_blocks": ("global_att_blocks", _tuple),
    "trunk.window_spec": ("window_spec", _tuple),
    "trunk.window_pos_embed_bkg_spatial_size": ("window_pos_embed_bkg_spatial_size", _pair),
    "memory_attention.num_layers": ("memory_attention_layers", int),
    "memory_attention.dim_feedforward": ("memory_attention_ffn_dim", int),
    "model.no_obj_embed_spatial": ("no_obj_embed_spatial", bool),
    "model.proj_tpos_enc_in_obj_ptrs": ("proj_tpos_enc_in_obj_ptrs", bool),
    "model.add_tpos_enc_to_obj_ptrs": ("add_tpos_enc_to_obj_ptrs", bool),
}

_OPTIONAL: dict[str, tuple[str, Any]] = {
    "backbone_stride": ("backbone_stride", int),
    "image_mean": ("image_mean", _tuple),
    "image_std": ("image_std", _tuple),
    "trunk.q_stride": ("q_stride", _pair),
    "trunk.mlp_ratio": ("mlp_ratio", float),
    "neck.fpn_top_down_levels": ("fpn_top_down_levels", _tuple),
    "neck.scalp": ("scalp", int),
    "prompt_encoder.mask_in_chans": ("mask_in_chans", int),
    "mask_decoder.transformer.depth": ("decoder_depth", int),
    "mask_decoder.transformer.num_heads": ("decoder_heads", int),
    "mask_decoder.transformer.mlp_dim": ("decoder_mlp_dim", int),
    "mask_decoder.transformer.attention_downsample_rate": ("attention_downsample_rate", int),
    "mask_decoder.num_multimask_outputs": ("num_multimask_outputs", int),
    "mask_decoder.iou_head_depth": ("iou_head_depth", int),
    "mask_decoder.iou_head_hidden_dim": ("iou_head_hidden_dim", int),
    "mask_decoder.dynamic_multimask_stability_delta": ("stability_delta", float),
    "mask_decoder.dynamic_multimask_stability_thresh": ("stability_thresh", float),
    "memory_encoder.fuser.num_layers": ("fuser_layers", int),
    "memory_encoder.fuser.cxblock.kernel_size": ("fuser_kernel_size", int),
    "model.num_maskmem": ("num_maskmem", int),
    "model.sigmoid_scale_for_mem_enc": ("sigmoid_scale_for_mem_enc", float),
    "model.sigmoid_bias_for_mem_enc": ("sigmoid_bias_for_mem_enc", float),
    "model.max_obj_ptrs_in_encoder": ("max_obj_ptrs_in_encoder", int),
    "model.use_signed_tpos_enc_to_obj_ptrs": ("use_signed_tpos_enc_to_obj_ptrs", bool),
}


def _check_consistent(config: SAM2Config, values: Mapping[str, Any]) -> None:
    """Derived values stated in the dict must agree with what we derive."""
    checks = {
        "trunk.q_pool_blocks": config.q_pool_blocks,
        "neck.backbone_channel_list": config.channel_list,
        "neck.d_model": config.hidden_dim,
        "memory_attention.d_model": config.hidden_dim,
        "memory_encoder.in_dim": config.hidden_dim,
        "memory_encoder.out_dim": config.mem_dim,
        "mask_decoder.transformer_dim": config.hidden_dim,
        "prompt_encoder.embed_dim": config.hidden_dim,
        "low_res_mask_size": config.low_res_mask_size,
    }
    for key, derived in checks.items():
        if key not in values:
            continue
        given = values[key]
        given = tuple(given) if isinstance(given, list) else given
        if given != derived:
            raise ValueError(f"configuration value {key}={given!r} disagrees with {derived!r}")
    channels = values.get("memory_encoder.mask_downsampler.channels")
    if channels is not None and int(channels[-1]) != config.hidden_dim:
        raise ValueError("memory_encoder.mask_downsampler.channels must end with hidden_dim")
