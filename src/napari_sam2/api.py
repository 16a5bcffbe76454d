"""Track objects through a stack from Python in one call, headless (what the CLI runs).

>>> from napari_sam2.api import track
>>> result = track("nuclei.tif", "points.csv", model="sam2.1_hiera_tiny")
>>> result.labels.shape, result.table.segments(1)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.outputs import LabelsWriter, PresenceTable, propagate_into
from napari_sam2.tracking.frames import FrameSource, stack_view
from napari_sam2.tracking.prompts_io import (
    PromptRecord,
    apply_prompts,
    check_prompts,
    read_prompts,
)

__all__ = ["TrackResult", "track", "load_model", "prepare_frames", "DEFAULT_FILL_HOLE_AREA"]

DEFAULT_FILL_HOLE_AREA = 8
"""Decision D4: front ends fill holes of up to 8 pixels, like the reference on CUDA."""


@dataclass
class TrackResult:
    """Labels (T, H, W) with object k as label k and gaps where it is absent, the presence
    table, and the frames that were written (all of them unless stopped)."""

    labels: Any
    table: PresenceTable
    frames_written: set[int]


def load_model(
    model: Any = "sam2.1_hiera_tiny",
    checkpoint: str | os.PathLike | None = None,
    device: Any = "cpu",
    random_weights: bool = False,
) -> Any:
    """A SAM 2 network from an official name, a config (``SAM2Config``, a dict of values or the
    path of a JSON file in the format of ``mini/config.json``) or a built model (returned as is).

    A name without ``checkpoint`` loads the official weights (downloaded once, see
    :mod:`napari_sam2.weights`); a config needs ``checkpoint``. ``random_weights=True`` builds
    the network with random weights instead (tests and memory benchmarks; the masks mean
    nothing).
    """
    import torch

    from napari_sam2.model import SAM2Config, build_sam2

    if isinstance(model, torch.nn.Module):
        return model.to(device)
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        values = json.loads(path.read_text())
        model = SAM2Config.from_dict(values.get("values", values), name=path.stem)
    elif isinstance(model, Mapping):
        model = SAM2Config.from_dict(model.get("values", model))
    elif isinstance(model, str):
        model = SAM2Config.from_name(model) if random_weights else model
    if isinstance(model, SAM2Config) and checkpoint is None and not random_weights:
        raise ValueError(
            "a model given as a config needs a checkpoint (or random_weights=True for tests)"
        )
    built = build_sam2(model, checkpoint=None if random_weights else checkpoint, device=device)
    return built


def prepare_frames(
    data: Any,
    image_size: int,
    *,
    frame_axis: int = 0,
    channel_axis: int | None = None,
    channels: Sequence[int] | int | None = None,
    fixed: Mapping[int, int] | None = None,
    contrast_limits: Sequence[float] | None = None,
) -> FrameSource:
    """The :class:`FrameSource` of an N-D array-like: axes chosen as in :func:`stack_view`.

    Like napari's RGB guess, a 4-D stack whose last axis has 3 or 4 entries is taken as
    (T, H, W, C) when no channel axis and no fixed index are given.
    """
    shape = tuple(data.shape)
    if channel_axis is None and not fixed and len(shape) == 4 and shape[-1] in (3, 4):
        channel_axis = 3
    view = stack_view(data, frame_axis=frame_axis, channel_axis=channel_axis, fixed=fixed)
    return FrameSource(view, image_size, contrast_limits=contrast_limits, channels=channels)


def _as_records(prompts: Any, frame_axis: int, fixed: Mapping[int, int] | None) -> list:
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts, frame_axis=frame_axis, fixed=fixed)
    records = list(prompts)
    if not all(isinstance(r, PromptRecord) for r in records):
        raise TypeError("prompts must be a prompt file path or a list of PromptRecord")
    return records


def track(
    stack: Any,
    prompts: Any,
    model: Any = "sam2.1_hiera_tiny",
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    frame_axis: int = 0,
    channel_axis: int | None = None,
    channels: Sequence[int] | int | None = None,
    fixed: Mapping[int, int] | None = None,
    contrast_limits: Sequence[float] | None = None,
    direction: str = "both",
    start_frame: int | None = None,
    max_frames: int | None = None,
    fill_hole_area: int = DEFAULT_FILL_HOLE_AREA,
    labels: Any = None,
    random_weights: bool = False,
    on_frame: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrackResult:
    """Segment and track the prompted objects through ``stack``.

    ``stack``: an array-like (numpy, dask, zarr, ...) or a file path (``.tif``, ``.npy``,
    zarr); ``prompts``: a prompt file (napari Points CSV or JSON, see
    :mod:`napari_sam2.tracking.prompts_io`) or a list of ``PromptRecord``. ``labels``: a
    (T, H, W) integer array to write into (default: a new uint16 numpy array). Everything is
    checked before the model runs; ``direction="both"`` tracks forward from the first prompted
    frame and backward from the last one.
    """
    from napari_sam2.tracking.device import autocast_dtype, resolve_device
    from napari_sam2.tracking.tracker import Tracker

    if isinstance(stack, (str, os.PathLike)):
        from napari_sam2.stack_files import open_stack

        stack = open_stack(stack).data
    records = _as_records(prompts, frame_axis, fixed)
    dev = resolve_device(device)
    net = load_model(model, checkpoint, dev, random_weights=random_weights)
    frames = prepare_frames(
        stack,
        int(net.config.image_size),
        frame_axis=frame_axis,
        channel_axis=channel_axis,
        channels=channels,
        fixed=fixed,
        contrast_limits=contrast_limits,
    )
    shape = (len(frames), frames.height, frames.width)
    check_prompts(records, *shape)
    if labels is None:
        labels = np.zeros(shape, np.uint16)
    elif tuple(labels.shape) != shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the frames {shape}")
    # a headless run visits each frame once (twice only between prompts with "both"):
    # caching image features would hold memory for little gain
    tracker = Tracker(
        net,
        frames,
        fill_hole_area=fill_hole_area,
        dtype=autocast_dtype(dev),
        feature_cache_bytes=0,
    )
    writer, table = LabelsWriter(labels), PresenceTable()
    apply_prompts(tracker, records)
    for result in propagate_into(
        tracker,
        writer,
        table,
        start_frame=start_frame,
        direction=direction,
        max_frames=max_frames,
        should_stop=should_stop,
    ):
        if on_frame is not None:
            on_frame(result)
    frames.close()
    return TrackResult(labels, table, set(writer.frames_written))
