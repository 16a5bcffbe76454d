"""Track objects through a stack from Python in one call, headless (what the CLI runs).

>>> from napari_sam2.api import track
>>> result = track("nuclei.tif", "points.csv", model="sam2.1_hiera_tiny")
>>> result.labels.shape, result.table.segments(1)

Every object, found by itself (seeds, new objects, divisions, ends):

>>> from napari_sam2.api import track_all
>>> auto = track_all("nuclei.tif", model="sam2.1_hiera_tiny")
>>> auto.labels.shape, auto.lineage.divisions(), auto.decisions[:3]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.outputs import LabelsWriter, PresenceTable, propagate_into
from napari_sam2.outputs.measurements import measure
from napari_sam2.tracking.frames import FrameSource, stack_view
from napari_sam2.tracking.prompts_io import (
    PromptRecord,
    apply_prompts,
    check_prompts,
    read_prompts,
)

__all__ = [
    "AutoTrackResult",
    "TrackResult",
    "track",
    "track_all",
    "load_model",
    "measure",
    "prepare_frames",
    "DEFAULT_FILL_HOLE_AREA",
]

DEFAULT_FILL_HOLE_AREA = 8
"""Decision D4: front ends fill holes of up to 8 pixels, like the reference on CUDA."""


@dataclass
class TrackResult:
    """Labels (T, H, W) with object k as label k and gaps where it is absent, the presence
    table, and the frames that were written (all of them unless stopped)."""

    labels: Any
    table: PresenceTable
    frames_written: set[int]


@dataclass
class AutoTrackResult:
    """The result of :func:`track_all`: labels (T, H, W) uint16 with track k as label k (gaps
    where it is absent; frames before the start frame, or not reached, are empty), the
    :class:`~napari_sam2.tracking.lineage.Lineage` (tracks, parents), the presence table and
    every decision taken (:class:`~napari_sam2.tracking.lineage.Decision`, with its reason)."""

    labels: Any
    lineage: Any
    table: PresenceTable
    decisions: list
    frames_written: set[int] = field(default_factory=set)

    @property
    def parents(self) -> dict[int, int]:
        """``{track id: parent id}`` of the tracks that have a parent (divisions)."""
        return {k: s.parent_id for k, s in self.lineage.spans.items() if s.parent_id}


def load_model(
    model: Any = "sam2.1_hiera_tiny",
    checkpoint: str | os.PathLike | Mapping[str, Any] | None = None,
    device: Any = "cpu",
    random_weights: bool = False,
    image_size: int | None = None,
) -> Any:
    """A SAM 2 network in eval mode on ``device``.

    ``model`` is one of:

    - an official name (``napari_sam2.model.MODEL_NAMES``) or a registered fine-tune
      (``napari_sam2.model.FINE_TUNE_NAMES``, e.g. ``"medsam2_latest"``, which runs at its own
      512 px): without ``checkpoint`` its weights are loaded from the weights store (downloaded
      once, or found offline, see :mod:`napari_sam2.weights`); with ``checkpoint`` the file
      must hold weights of that architecture, else a ``ValueError`` names both (e.g. a SAM 2.0
      file given for a SAM 2.1 name);
    - the path of a checkpoint file (``.pt`` / ``.pth``, the official format
      ``{"model": state_dict}``, other entries beside ``"model"`` allowed): the architecture is
      recognised from the file's parameter shapes
      (:func:`napari_sam2.model.identify_checkpoint`). A file named as a registered fine-tune
      publishes it (``MedSAM2_latest.pt``) runs at that fine-tune's size; any other file at
      ``image_size`` (default 1024, the official size): ``load_model("my_medsam.pt",
      image_size=512)``. A file of another architecture cannot be recognised and needs its
      model: ``load_model(CONFIG, checkpoint=PATH)``;
    - a config (``SAM2Config``, a dict of values or the path of a JSON file in the format of
      ``mini/config.json``), which needs ``checkpoint`` and carries its own image size;
    - a built ``torch.nn.Module``, returned as is (moved to ``device``).

    ``checkpoint`` is a file path or a state dict. ``image_size`` runs a name or a checkpoint
    file at another input resolution (a multiple of 32; the parameters are the same at every
    size). A missing file raises ``FileNotFoundError`` naming it. ``random_weights=True`` builds
    the network with random weights instead (tests and memory benchmarks; the masks mean
    nothing).
    """
    import torch

    from napari_sam2.model import (
        FINE_TUNE_NAMES,
        MODEL_NAMES,
        SAM2Config,
        build_sam2,
        describe_state_dict,
        identify_checkpoint,
        load_checkpoint,
        state_dict_mismatch,
    )

    def read(source: Any) -> tuple[str, Mapping[str, Any]]:
        """(how to name it in messages, its state dict) of a file path or a state dict."""
        if isinstance(source, Mapping):
            return "the given state dict", source
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} does not exist")
        from napari_sam2.weights import ensure_checkpoint

        ensure_checkpoint(path)  # catches damaged copies of official files by their checksum
        return f"the file {path}", load_checkpoint(path)

    def is_checkpoint_path(value: Any) -> bool:
        if not isinstance(value, (str, os.PathLike)) or str(value).lower().endswith(".json"):
            return False  # a config file
        if isinstance(value, os.PathLike):
            return True
        if value in MODEL_NAMES or value in FINE_TUNE_NAMES:
            return False
        if value.lower().endswith((".pt", ".pth")) or "/" in value or os.sep in value:
            return True
        return Path(value).is_file()

    def file_config(path: Any, architecture: str) -> SAM2Config:
        """The configuration a checkpoint file of ``architecture`` runs in: ``image_size`` if
        given, else the size of the fine-tune whose published file name it has, else the
        official one."""
        if image_size is None and not isinstance(path, Mapping):
            from napari_sam2.weights import registered_file

            entry = registered_file(path)
            if entry is not None and entry.architecture == architecture:
                return SAM2Config.from_name(entry.name)
        return SAM2Config.from_name(architecture, image_size=image_size)

    if image_size is not None and (
        isinstance(model, (torch.nn.Module, SAM2Config, Mapping))
        or (isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".json"))
    ):
        size = getattr(getattr(model, "config", None), "image_size", None)
        if not (isinstance(model, torch.nn.Module) and size == image_size):
            raise ValueError(
                f"image_size={image_size} applies to a model name or a checkpoint file; a "
                "built model or a config has its own image size (set image_size in the config)"
            )
    if isinstance(model, torch.nn.Module):
        return model.to(device)
    if is_checkpoint_path(model):
        if checkpoint is not None:
            raise ValueError(
                f"the model is given as the checkpoint file {model} and a checkpoint "
                f"({checkpoint}) is given too: give the model's name or config with checkpoint="
            )
        where, state = read(model)
        name = identify_checkpoint(state)
        if name is None:
            raise ValueError(
                f"cannot tell which model {where} holds: it looks like "
                f"{describe_state_dict(state)}, which is none of the official models. Give "
                "the model it belongs to (a name or a config) with this file as its checkpoint="
            )
        config = file_config(Path(model).expanduser(), name)
        if random_weights:
            return build_sam2(config, device=device)
        return build_sam2(config, checkpoint=state, device=device)
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        values = json.loads(path.read_text())
        model = SAM2Config.from_dict(values.get("values", values), name=path.stem)
    elif isinstance(model, Mapping):
        model = SAM2Config.from_dict(model.get("values", model))
    elif isinstance(model, str):
        # an unknown name fails here, before any file
        config = SAM2Config.from_name(model, image_size=image_size)
        if random_weights:
            model = config
        elif checkpoint is not None:
            where, state = read(checkpoint)
            problem = state_dict_mismatch(state, config)
            found = identify_checkpoint(state) if problem is not None else model
            if found is not None and found != model:
                raise ValueError(
                    f"{where} holds the weights of {describe_state_dict(state)}, not {model}: "
                    f"choose {found} or another file"
                )
            if problem is not None:
                raise ValueError(f"{where} does not hold the weights of {model}: {problem}")
            return build_sam2(config, checkpoint=state, device=device)
        else:
            # the name as configured ("<name>@<size>" at another size): the store's weights
            return build_sam2(config.name, device=device)
    if isinstance(model, SAM2Config) and checkpoint is None and not random_weights:
        raise ValueError(
            "a model given as a config needs a checkpoint (or random_weights=True for tests)"
        )
    if checkpoint is not None and not random_weights:
        checkpoint = read(checkpoint)[1]
    return build_sam2(model, checkpoint=None if random_weights else checkpoint, device=device)


def prepare_frames(
    data: Any,
    image_size: int,
    *,
    frame_axis: int = 0,
    channel_axis: int | None = None,
    channels: Sequence[int] | int | None = None,
    fixed: Mapping[int, int] | None = None,
    contrast_limits: Sequence[float] | None = None,
    window: str | Sequence[float] | None = None,
) -> FrameSource:
    """The :class:`FrameSource` of an N-D array-like: axes chosen as in :func:`stack_view`.

    Like napari's RGB guess, a 4-D stack whose last axis has at most 4 entries (no image is
    that narrow) is taken as (T, H, W, C) when no channel axis and no fixed index are given;
    one channel is grey, counts other than 1 or 3 need ``channels``. ``window`` chooses the
    contrast limits by name instead (:func:`napari_sam2.tracking.intensity.resolve_window`:
    a CT preset such as ``"lung"``, ``(width, level)``, or ``"mr"`` for the percentiles of the
    non-zero voxels); it excludes ``contrast_limits``.
    """
    if not hasattr(data, "shape"):  # nested lists, as Tracker takes them
        data = np.asarray(data)
    shape = tuple(data.shape)
    if channel_axis is None and not fixed and len(shape) == 4 and shape[-1] <= 4:
        channel_axis = 3
    view = stack_view(data, frame_axis=frame_axis, channel_axis=channel_axis, fixed=fixed)
    if window is not None:
        from napari_sam2.tracking.intensity import resolve_window

        if contrast_limits is not None:
            raise ValueError("give either contrast_limits or window, not both")
        picked = FrameSource._choose_channels(tuple(view.shape), channels)
        contrast_limits = resolve_window(view, window, channels=picked)
    return FrameSource(view, image_size, contrast_limits=contrast_limits, channels=channels)


def _as_records(prompts: Any, frame_axis: int, fixed: Mapping[int, int] | None) -> list:
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts, frame_axis=frame_axis, fixed=fixed)
    if isinstance(prompts, PromptRecord):
        prompts = [prompts]
    records = list(prompts) if isinstance(prompts, Iterable) else None
    if records is None or not all(isinstance(r, PromptRecord) for r in records):
        raise TypeError("prompts must be a prompt file path or a list of PromptRecord")
    return records


def track(
    stack: Any,
    prompts: Any,
    model: Any = "sam2.1_hiera_tiny",
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    frame_axis: int = 0,
    channel_axis: int | None = None,
    channels: Sequence[int] | int | None = None,
    fixed: Mapping[int, int] | None = None,
    contrast_limits: Sequence[float] | None = None,
    window: str | Sequence[float] | None = None,
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
    :mod:`napari_sam2.tracking.prompts_io`) or a list of ``PromptRecord``. ``model``: an
    official name, the path of a checkpoint file of an official architecture, a config (with
    ``checkpoint``) or a built network, as :func:`load_model` takes it. ``labels``: a
    (T, H, W) integer array to write into (default: a new uint16 numpy array). Everything is
    checked before the model loads (prompts against the frames, NaN coordinates, object ids
    against the labels' dtype, a read-only ``labels``); ``direction="both"`` tracks forward
    from the first prompted frame and backward from the last one. A stack file with a frame
    that cannot be read raises :class:`napari_sam2.stack_files.StackReadError` naming the file
    and the frame. ``window`` sets the contrast limits by name instead of ``contrast_limits``
    (a CT preset: ``"soft tissue"``, ``"abdomen"``, ``"lung"``, ``"brain"``,
    ``"mediastinum"``, ``"bone"``; ``(width, level)``; or ``"mr"``: see
    :func:`prepare_frames`); without either, uint8 stacks use 0..255 and others robust
    percentiles. ``precision``: ``"auto"`` (bfloat16 autocast on GPUs and on CPUs where it
    measures faster, such as those with AMX; float32 elsewhere), ``"float32"`` or
    ``"bfloat16"``; see :func:`napari_sam2.tracking.device.autocast_dtype`.
    """
    from napari_sam2.tracking.device import autocast_dtype, resolve_device
    from napari_sam2.tracking.tracker import Tracker

    if isinstance(stack, (str, os.PathLike)):
        from napari_sam2.stack_files import open_stack

        stack = open_stack(stack, frame_axis=frame_axis).data
    records = _as_records(prompts, frame_axis, fixed)
    dev = resolve_device(device)
    # an unknown precision fails here, before the model loads
    dtype = autocast_dtype(dev, precision)

    frames_of = _frames_factory(stack, frame_axis, channel_axis, channels, fixed)

    # Every check that needs no network runs before it loads (a large model takes seconds to
    # minutes): the frames' size, the prompts, the label array.
    frames = frames_of(_image_size_hint(model), contrast_limits, window)
    try:
        shape = (len(frames), frames.height, frames.width)
        check_prompts(records, *shape)
        labels = _checked_labels(labels, shape, records)
        net = load_model(model, checkpoint, dev, random_weights=random_weights)
        if int(net.config.image_size) != frames.image_size:
            limits = frames.contrast_limits
            frames.close()
            frames = frames_of(int(net.config.image_size), limits)
        # a headless run visits each frame once (twice only between prompts with "both"):
        # caching image features would hold memory for little gain
        tracker = Tracker(
            net,
            frames,
            fill_hole_area=fill_hole_area,
            dtype=dtype,
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
    finally:
        frames.close()
    return TrackResult(labels, table, set(writer.frames_written))


def _image_size_hint(model: Any) -> int:
    """The input size of ``model`` as far as it is known without loading it (the official
    size where it is not: a checkpoint path of an official model, or something
    :func:`load_model` will refuse anyway); checked again once the network is built."""
    from napari_sam2.model import FINE_TUNE_NAMES, MODEL_NAMES, SAM2Config

    default = int(SAM2Config.from_name("sam2.1_hiera_tiny").image_size)
    config = getattr(model, "config", model)
    if isinstance(config, SAM2Config):
        return int(config.image_size)
    if isinstance(model, str) and (model in MODEL_NAMES or model in FINE_TUNE_NAMES):
        return int(SAM2Config.from_name(model).image_size)
    values: Any = model
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".json"):
        try:
            values = json.loads(Path(model).read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            return default
    if isinstance(values, Mapping):
        values = values.get("values", values)
        if isinstance(values, Mapping) and isinstance(values.get("image_size"), int):
            return int(values["image_size"])
    return default


def _checked_labels(labels: Any, shape: tuple[int, int, int], records: Sequence[Any]) -> Any:
    """``labels`` (or a new uint16 array) after checking it can take every prompted object:
    its shape, an integer dtype wide enough for the largest object id, and writable."""
    if labels is None:
        return np.zeros(shape, np.uint16)
    if tuple(labels.shape) != shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the frames {shape}")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, got {dtype}")
    top = max((int(r.object_id) for r in records), default=0)
    if top > np.iinfo(dtype).max:
        raise ValueError(
            f"object id {top} does not fit labels of dtype {dtype} (largest label "
            f"{np.iinfo(dtype).max}): pass uint16 or uint32 labels, or smaller object ids"
        )
    flags = getattr(labels, "flags", None)
    if (flags is not None and not flags.writeable) or getattr(labels, "read_only", False):
        raise ValueError(
            "labels is read-only: pass a writable array (e.g. labels.copy(), or a zarr array "
            "opened with mode='r+')"
        )
    return labels


def read_seed_labels(seeds: Any, start_frame: int, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) seed label plane of ``seeds``: an (H, W) integer array, a (T, H, W) one
    (its plane ``start_frame``) or the path of a label file (TIFF, ``.npy``, zarr: read as
    :func:`napari_sam2.stack_files.open_stack` reads stacks). Checked against the frames'
    ``shape`` (H, W); labels must be integers in 0..65535 with at least one object."""
    from napari_sam2.tracking.prompt_checks import MAX_OBJECT_ID

    where = "seed labels"
    if isinstance(seeds, (str, os.PathLike)):
        from napari_sam2.stack_files import open_stack

        where = f"seed labels {seeds}"
        opened = open_stack(seeds)
        try:
            data = opened.data
            if len(data.shape) == 3:
                if not 0 <= start_frame < data.shape[0]:
                    raise ValueError(
                        f"{where} hold {data.shape[0]} frames: no frame {start_frame} to seed from"
                    )
                data = data[start_frame]
            plane = np.asarray(data)
        finally:
            close = getattr(opened.data, "close", None)
            if close is not None:
                close()
    else:
        plane = np.asarray(seeds)
        if plane.ndim == 3:
            if not 0 <= start_frame < plane.shape[0]:
                raise ValueError(
                    f"{where} hold {plane.shape[0]} frames: no frame {start_frame} to seed from"
                )
            plane = plane[start_frame]
    if plane.ndim != 2:
        raise ValueError(f"{where} must be (H, W) or (T, H, W), got shape {plane.shape}")
    if plane.dtype.kind not in "iub":
        raise TypeError(f"{where} must hold integer labels, got {plane.dtype}")
    if tuple(plane.shape) != tuple(shape):
        raise ValueError(
            f"{where} of shape {plane.shape} do not match the frames {tuple(shape)} (H, W)"
        )
    top, low = (int(plane.max()), int(plane.min())) if plane.size else (0, 0)
    if low < 0 or top > MAX_OBJECT_ID:
        raise ValueError(f"{where} must lie in 0..{MAX_OBJECT_ID}, found {low}..{top}")
    if top == 0:
        raise ValueError(
            f"{where} hold no object on frame {start_frame} (all 0); give labels with the "
            "objects to track, or no seeds to segment everything"
        )
    return plane


def track_all(
    stack: Any,
    model: Any = "sam2.1_hiera_tiny",
    seeds: Any = None,
    start_frame: int = 0,
    settings: Any = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    frame_axis: int = 0,
    channel_axis: int | None = None,
    channels: Sequence[int] | int | None = None,
    fixed: Mapping[int, int] | None = None,
    contrast_limits: Sequence[float] | None = None,
    window: str | Sequence[float] | None = None,
    max_frames: int | None = None,
    fill_hole_area: int = DEFAULT_FILL_HOLE_AREA,
    labels: Any = None,
    random_weights: bool = False,
    segmenter: Callable[[int], Sequence[np.ndarray]] | None = None,
    on_frame: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AutoTrackResult:
    """Find and track every object of ``stack`` by itself, forward from ``start_frame``.

    Seeds: ``seeds=None`` segments everything on ``start_frame`` (SAM 2's automatic mask
    generator; its options in ``settings.everything``, e.g. ``{"points_per_side": 16}``);
    otherwise ``seeds`` is a label image, (H, W) or (T, H, W) (then its plane ``start_frame``),
    or the path of a label file, and each nonzero label becomes an object with that id. Then
    every frame is tracked in turn (:class:`napari_sam2.tracking.track_all.TrackAll`): every
    ``settings.discover_every``-th frame new objects are looked for, an object that splits
    in two divides into two daughters (new ids, the parent in the lineage), and one absent on
    more than ``settings.end_after`` frames ends. ``settings`` is a
    :class:`~napari_sam2.tracking.track_all.TrackAllSettings` (or a dict of its fields).

    ``stack``, ``model`` and the device, precision, axis, channel and intensity options are
    those of :func:`track`. ``max_frames``: the start frame and this many more. ``labels``: a
    writable (T, H, W) integer array to write into (default a new uint16 array). ``segmenter``
    replaces segment-everything (``segmenter(frame) -> list of (H, W) bool masks``).
    ``on_frame(auto_frame)`` is called with each
    :class:`~napari_sam2.tracking.track_all.AutoFrame` as it is written (frames come in order,
    ``settings.division_frames - 1`` frames late); ``should_stop()`` is polled after each, and
    True stops the run, keeping the frames written. Seeds and options are checked before the
    model loads.
    """
    from napari_sam2.tracking.device import autocast_dtype, resolve_device
    from napari_sam2.tracking.track_all import TrackAll, TrackAllSettings
    from napari_sam2.tracking.tracker import Tracker

    if settings is None:
        settings = TrackAllSettings()
    elif isinstance(settings, Mapping):
        settings = TrackAllSettings(**settings)
    if isinstance(stack, (str, os.PathLike)):
        from napari_sam2.stack_files import open_stack

        stack = open_stack(stack, frame_axis=frame_axis).data
    dev = resolve_device(device)
    dtype = autocast_dtype(dev, precision)  # an unknown precision fails before the model loads

    frames_of = _frames_factory(stack, frame_axis, channel_axis, channels, fixed)

    frames = frames_of(_image_size_hint(model), contrast_limits, window)
    try:
        shape = (len(frames), frames.height, frames.width)
        if int(start_frame) != start_frame or not 0 <= start_frame < shape[0]:
            raise ValueError(f"start_frame {start_frame} is outside the stack (0..{shape[0] - 1})")
        if max_frames is not None and (int(max_frames) != max_frames or max_frames < 0):
            raise ValueError(f"max_frames must be a non-negative integer, got {max_frames}")
        plane = None if seeds is None else read_seed_labels(seeds, start_frame, shape[1:])
        labels = _checked_labels(labels, shape, [])
        if np.iinfo(np.dtype(labels.dtype)).max < 65535:
            raise ValueError(
                f"labels of dtype {labels.dtype} cannot hold the ids automatic tracking gives "
                "(up to 65535): pass uint16 or wider labels"
            )
        net = load_model(model, checkpoint, dev, random_weights=random_weights)
        if int(net.config.image_size) != frames.image_size:
            limits = frames.contrast_limits
            frames.close()
            frames = frames_of(int(net.config.image_size), limits)
        # segment-everything and tracking share each frame's features: only the frame in
        # progress is needed, so the cache holds just that one
        tracker = Tracker(
            net, frames, fill_hole_area=fill_hole_area, dtype=dtype, feature_cache_bytes=0
        )
        table = PresenceTable()
        auto = TrackAll(tracker, settings, segmenter, presence=table)
        if plane is None:
            auto.seed_from_everything(start_frame)
        else:
            auto.seed_from_labels(start_frame, plane)
        written: set[int] = set()
        run = auto.run(start_frame=start_frame, max_frames=max_frames)
        try:
            for step in run:
                labels[step.frame_index] = step.labels
                written.add(step.frame_index)
                if on_frame is not None:
                    on_frame(step)
                if should_stop is not None and should_stop():
                    break
        finally:
            run.close()
    finally:
        frames.close()
    return AutoTrackResult(labels, auto.lineage, table, auto.decisions, written)


def _frames_factory(
    stack: Any, frame_axis: Any, channel_axis: Any, channels: Any, fixed: Any
) -> Callable[..., FrameSource]:
    """``frames_of(size, contrast_limits, window=None)``: the stack's frames at a model size
    (the size is known only once the model is, and a window may replace the limits)."""

    def frames_of(size: int, limits: Sequence[float] | None, win: Any = None) -> FrameSource:
        return prepare_frames(
            stack,
            size,
            frame_axis=frame_axis,
            channel_axis=channel_axis,
            channels=channels,
            fixed=fixed,
            contrast_limits=limits,
            window=win,
        )

    return frames_of
