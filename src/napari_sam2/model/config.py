"""Hyperparameters of the SAM 2 / SAM 2.1 networks.

`SAM2Config` holds every number the network needs to be built. The eight official models are
written out here (from the official yaml configs, see HYPERPARAMS.md sections 1-3); sizes only
differ in the Hiera trunk, and SAM 2.0 vs 2.1 only in four memory flags.

Any of them can run at another input resolution (`SAM2Config.from_name(name, image_size=512)`):
no parameter depends on it, only the grids derived from `image_size` (see the derived
properties), so one checkpoint loads at every size. The registered fine-tunes (`FINE_TUNES`)
are official architectures at a fixed resolution, e.g. MedSAM2 = sam2.1_hiera_tiny at 512 px.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

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

DEFAULT_IMAGE_SIZE = 1024
"""Input resolution of the official models (pixels per side)."""


class FineTune(NamedTuple):
    """A registered fine-tune: the official architecture it keeps and its input resolution."""

    base: str
    image_size: int


FINE_TUNES: Mapping[str, FineTune] = MappingProxyType(
    {
        # MedSAM2 (bowang-lab): sam2.1_hiera_tiny trained and run at 512 px, every other
        # hyperparameter as the official tiny.
        "medsam2_latest": FineTune("sam2.1_hiera_tiny", 512),
        "medsam2_2411": FineTune("sam2.1_hiera_tiny", 512),
        "medsam2_ct_lesion": FineTune("sam2.1_hiera_tiny", 512),
        "medsam2_mri_liver_lesion": FineTune("sam2.1_hiera_tiny", 512),
        "medsam2_us_heart": FineTune("sam2.1_hiera_tiny", 512),
        # micro-sam's light-microscopy SAM 2 ("hvit_t"): a Hiera tiny at the official 1024 px.
        # Assumed to be the sam2.1_hiera_tiny schema; a checkpoint of another schema fails the
        # shape check of build_sam2 with a message saying which model it looks like.
        "micro_sam_hvit_t_cells": FineTune("sam2.1_hiera_tiny", 1024),
    }
)
"""Registered fine-tunes by name -> (official architecture, image size)."""

FINE_TUNE_NAMES: tuple[str, ...] = tuple(FINE_TUNES)

SIZE_SEPARATOR = "@"
"""A configuration at a non-default resolution is named ``<model name>@<image size>``."""


def split_sized_name(name: str) -> tuple[str, int | None]:
    """``"sam2.1_hiera_tiny@512"`` -> ``("sam2.1_hiera_tiny", 512)``; no suffix -> (name, None).

    Only the syntax is checked here; whether the size is usable is `SAM2Config`'s business.
    """
    base, sep, size = name.rpartition(SIZE_SEPARATOR)
    if not sep:
        return name, None
    if not size.isdigit():
        raise ValueError(
            f"model name {name!r}: the part after {SIZE_SEPARATOR!r} must be an image size in "
            f"pixels, e.g. {base or 'sam2.1_hiera_tiny'}{SIZE_SEPARATOR}512"
        )
    return base, int(size)


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
    image_size: int = DEFAULT_IMAGE_SIZE
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
        self._check_image_size()
        if self.hidden_dim % self.mem_dim != 0:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} must be a multiple of mem_dim {self.mem_dim} "
                "(object pointers are split into hidden_dim / mem_dim memory tokens)"
            )
        if len(self.stages) != len(self.window_spec):
            raise ValueError("stages and window_spec must have the same length")

    def _check_image_size(self) -> None:
        size = self.image_size
        try:
            if isinstance(size, bool):  # an int to Python, but surely a mistake here
                raise TypeError
            size = operator.index(size)  # numpy integers are fine, floats are not
        except TypeError:
            raise TypeError(
                f"image_size must be an integer, not {type(size).__name__} {size!r}"
            ) from None
        self.image_size = size
        step = self.image_size_step
        if size <= 0 or size % step != 0:
            below = max(step, size // step * step)
            raise ValueError(
                f"image_size {size} is not usable: it must be a positive multiple of {step} "
                f"(the trunk's total stride {self.trunk_stride} and its first window of "
                f"{self.window_spec[0]} tokens at stride 4 must tile the image), "
                f"e.g. {below} or {below + step}"
            )

    # ---- derived quantities -------------------------------------------------------------
    @property
    def trunk_stride(self) -> int:
        """Stride of the trunk's coarsest stage: 4 (patch embedding) times the pooling."""
        pool = self.q_stride[0] ** (len(self.stages) - 1)
        return 4 * pool

    @property
    def image_size_step(self) -> int:
        """`image_size` must be a multiple of this (32 for the official architectures).

        Every stage's token grid must be whole (the trunk stride), the stride-4 grid must hold
        whole copies of the window position embedding (4 * window_spec[0]), and the grid of
        the kept level must be whole (backbone_stride).
        """
        return math.lcm(self.trunk_stride, 4 * self.window_spec[0], self.backbone_stride)

    @property
    def grid_size(self) -> int:
        """Side G of the stride-16 feature map (64 at 1024 px, 32 at 512 px)."""
        return self.image_size // self.backbone_stride

    @property
    def image_embedding_size(self) -> tuple[int, int]:
        """(G, G): the prompt encoder's image embedding size (its dense PE, no-mask embedding)."""
        return (self.grid_size, self.grid_size)

    @property
    def rope_feat_sizes(self) -> tuple[int, int]:
        """(G, G): the RoPE grid of both memory-attention types (self and cross attention).

        The tables are built for the token grid of each call, which is this grid.
        """
        return (self.grid_size, self.grid_size)

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's low-res mask logits, S / 4 (256 at 1024 px, 128 at 512 px)."""
        return self.image_size // 4

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """(S/4, S/4): the size mask prompts are resized to before the prompt encoder."""
        return (self.low_res_mask_size, self.low_res_mask_size)

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
    def from_name(cls, name: str, image_size: int | None = None) -> SAM2Config:
        """The configuration of an official model or a registered fine-tune, at any resolution.

        name: one of `MODEL_NAMES` (1024 px), of `FINE_TUNE_NAMES` (the official architecture
            at the fine-tune's resolution, named after the fine-tune), or either with a size
            suffix as `name` gives it back, e.g. ``"sam2.1_hiera_tiny@512"``.
        image_size: the input resolution; None keeps the model's own. A size other than the
            model's own is part of the configuration's name (``<name>@<size>``), so the names
            of the plain models stay as they are.

        Only the grids derived from the resolution change (see `grid_size`,
        `low_res_mask_size`, `rope_feat_sizes`); the parameters, and so the checkpoints, are
        the same at every size.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        model, suffix_size = split_sized_name(name)
        if suffix_size is not None and image_size is not None and suffix_size != image_size:
            raise ValueError(
                f"model name {name!r} says image size {suffix_size} but image_size={image_size} "
                "was given; give one of them"
            )
        if suffix_size is not None:
            image_size = suffix_size
        if model in FINE_TUNES:
            base, own_size = FINE_TUNES[model]
        elif model in MODEL_NAMES:
            base, own_size = model, DEFAULT_IMAGE_SIZE
        else:
            raise ValueError(
                f"unknown SAM 2 model name {name!r}; valid names: {', '.join(MODEL_NAMES)}, "
                f"and the fine-tunes {', '.join(FINE_TUNE_NAMES)} (any of them with "
                f"'{SIZE_SEPARATOR}<image size>' for another resolution)"
            )
        size = own_size if image_size is None else image_size
        full_name = model if size == own_size else f"{model}{SIZE_SEPARATOR}{size}"
        version = "2.1" if base.startswith("sam2.1") else "2.0"
        trunk = base.split("_hiera_")[1]
        v21 = version == "2.1"
        return cls(
            name=full_name,
            image_size=size,
            sam_version=version,
            no_obj_embed_spatial=v21,
            proj_tpos_enc_in_obj_ptrs=v21,
            add_tpos_enc_to_obj_ptrs=v21,
            use_signed_tpos_enc_to_obj_ptrs=v21,
            **_TRUNKS[trunk],
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
        # sizes the official builder derives from image_size: a dict that states others
        # describes a network this one is not
        "prompt_encoder.image_embedding_size": config.image_embedding_size,
        "prompt_encoder.input_image_size": (config.image_size, config.image_size),
        "prompt_encoder.mask_input_size": config.mask_input_size,
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
