"""The argument parser of the ``napari-sam2`` command (``track``, ``models``, ``batch``) and
the option values and help texts it needs; ``track --auto``'s options are in cli_auto.py."""

from __future__ import annotations

import argparse

FORMATS = ("tiff", "ctc", "csv")
DEFAULT_MODEL = "sam2.1_hiera_tiny"

CONFIG_HELP = (
    "model configuration JSON for a network of another size or resolution, used with "
    '--checkpoint: an object (optionally under a key "values") with the keys image_size, '
    "hidden_dim, mem_dim, trunk.embed_dim, trunk.num_heads, trunk.stages, "
    "trunk.global_att_blocks, trunk.window_spec, trunk.window_pos_embed_bkg_spatial_size, "
    "memory_attention.num_layers, memory_attention.dim_feedforward, model.no_obj_embed_spatial, "
    "model.proj_tpos_enc_in_obj_ptrs and model.add_tpos_enc_to_obj_ptrs"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``napari-sam2`` command."""
    from napari_sam2 import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="Segment and track objects through time-lapses and volumes with SAM 2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "track",
        help="track prompted objects through a stack and write labels",
        description="Track the objects prompted in PROMPTS through STACK and write labels with "
        "gaps where an object is absent.",
    )
    p.add_argument(
        "stack",
        help="the stack: .tif/.tiff, .npy, .zarr, NIfTI (.nii, .nii.gz) or DICOM (a folder of "
        "slices, or one .dcm file of the series); NIfTI and DICOM open as (Z, Y, X), axial "
        "slices first",
    )
    p.add_argument(
        "--prompts",
        help="prompt file: a napari Points layer saved as CSV (columns object_id and positive "
        "optional) or a JSON list of points, boxes and masks per frame and object (needed "
        "unless --auto)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (labels.tif, presence.csv, ctc/; labels.nii.gz for a NIfTI or "
        "DICOM stack), or NAME.tif or NAME.nii.gz for the label file (then NAME.csv and "
        "NAME_ctc/ beside it); missing folders are created",
    )
    p.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help=f"a model name (default {DEFAULT_MODEL}; also sam2.1_hiera_small, "
        "sam2.1_hiera_base_plus, sam2.1_hiera_large, sam2_hiera_*, and the registered "
        "fine-tunes medsam2_latest, medsam2_* and micro_sam_hvit_t_cells: `napari-sam2 models` "
        "lists them) or the path of a checkpoint file of one of these architectures",
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="PIXELS",
        help="input size of the network for a --model name or checkpoint file, e.g. 512 for a "
        "MedSAM2-style fine-tune not in the registry (default: the model's own; a multiple "
        "of 32)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint .pt file for the --model name or the --config "
        "(default: the official weights, downloaded once)",
    )
    p.add_argument("--config", metavar="CONFIG.json", help=CONFIG_HELP)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights (pipeline tests and memory benchmarks only)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto (default): bfloat16 autocast on GPUs and on CPUs where a bfloat16 matrix "
        "product measures clearly faster than float32 (AMX), float32 elsewhere; float32 or "
        "bfloat16 forces it",
    )
    p.add_argument("--axis", type=int, default=0, help="axis to propagate along (default 0)")
    p.add_argument("--channel-axis", type=int, help="channel axis of the stack, if any")
    p.add_argument(
        "--channel",
        type=int,
        nargs="+",
        help="channel(s) to use: one (grey), two (red, green) or three (RGB)",
    )
    p.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="AXIS=INDEX",
        help="index for another axis, e.g. --fixed 1=12 (repeatable)",
    )
    p.add_argument(
        "--direction",
        choices=("forward", "reverse", "both"),
        default="both",
        help="forward from the first prompted frame, reverse from the last one, or both "
        "(default; forward first)",
    )
    p.add_argument("--start", type=int, help="start frame (default: first / last prompted)")
    p.add_argument("--max-frames", type=int, help="frames after the start frame, per direction")
    intensity = p.add_mutually_exclusive_group()
    intensity.add_argument(
        "--contrast-limits", type=float, nargs=2, metavar=("LO", "HI"), help="intensity range"
    )
    intensity.add_argument(
        "--window",
        metavar="NAME|W,L",
        help="intensity window instead of --contrast-limits: a CT preset (soft-tissue, "
        "abdomen, lung, brain, mediastinum, bone), WIDTH,LEVEL in the stack's units (e.g. "
        "400,40 for Hounsfield units), or mr (0.5-99.5 percentiles of the non-zero voxels); "
        "default: 0..255 for 8-bit stacks, else robust percentiles",
    )
    p.add_argument(
        "--measure",
        nargs="?",
        const="auto",
        choices=("auto", "z", "t"),
        help="also write measurements.csv: per object its volume, slice range and longest "
        "in-plane diameter (z: a volume), or its area, centroid and mean intensity per frame "
        "(t: a time-lapse); auto (the default) follows the stack's axes (Z: volume)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        nargs="+",
        action="extend",
        help="outputs: tiff (labels), ctc (Cell Tracking Challenge), csv (presence); "
        "default tiff csv",
    )
    p.add_argument(
        "--fill-holes",
        type=int,
        default=8,
        metavar="AREA",
        help="fill mask holes up to AREA pixels (default 8, as SAM 2 does on CUDA; 0: off)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run under --out (without it such a run is "
        "refused before any work)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    from napari_sam2.cli_auto import add_auto_arguments

    add_auto_arguments(p)  # napari-sam2 track --auto
    models = sub.add_parser(
        "models",
        help="list the models --model takes by name",
        description="List the registered models: official SAM 2 checkpoints and fine-tunes, "
        "with download size, weights licence, input size, and whether they are on this machine "
        "(cached, or in a $NAPARI_SAM2_WEIGHTS folder) or need a download.",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    from napari_sam2.batch import add_parser as add_batch_parser

    add_batch_parser(sub)  # napari-sam2 batch: many stacks on dask.distributed
    return parser
