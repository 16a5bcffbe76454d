"""Frames from any array-like stack, prepared one at a time for the network.

:class:`FrameSource` is a lazy view of a (T, H, W) or (T, H, W, C) array-like (numpy,
``np.memmap``, tifffile memmaps, dask, zarr). Only the frame the tracker asks for is read;
it is scaled to [0, 1] with the contrast limits, made RGB, resized to S x S and normalized with
the ImageNet mean and std. A worker thread prepares the next few frames while the network runs.
Frames much larger than S x S (whole-slide tiles, 6000 x 6000 scans) are scaled and resized
strip by strip: beyond the frame as read, preparing one needs a (C, H, S) float buffer, not
several full-size float copies.

:func:`stack_view` turns an N-D array-like such as (T, Z, Y, X) or (T, C, Y, X) into the
(T, H, W[, C]) view a :class:`FrameSource` takes, given the axis to propagate along, the
channel axis and a fixed index for every other axis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.tracking.intensity import (
    DEFAULT_PERCENTILES,
    choose_contrast_limits,
    scale_to_unit,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NUMERIC_KINDS = "biuf"
"""numpy dtype kinds a stack's values may have: bool, integers and floats (intensities)."""

LARGE_FRAME_FACTOR = 4
"""Frames wider than the model input with more than this many times its pixels (2048 x 2048
for 1024 px models) are scaled and resized in strips: beyond the frame as read, a (C, H, S)
float buffer instead of about 12 times the frame's bytes (for uint16) in float copies. Smaller
frames take the whole-frame path; both give the same input."""

__all__ = [
    "FrameSource",
    "StackView",
    "ResolvedAxes",
    "resolve_axes",
    "stack_view",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUMERIC_KINDS",
]


class StackView:
    """A lazy (T, H, W[, C]) view of an N-D array-like; see :func:`stack_view`."""

    def __init__(
        self,
        data: Any,
        frame_axis: int,
        y_axis: int,
        x_axis: int,
        channel_axis: int | None,
        fixed: Mapping[int, int],
    ) -> None:
        self.data = data
        self.frame_axis = frame_axis
        self.y_axis = y_axis
        self.x_axis = x_axis
        self.channel_axis = channel_axis
        self.fixed = dict(fixed)
        shape = tuple(data.shape)
        out = [shape[frame_axis], shape[y_axis], shape[x_axis]]
        if channel_axis is not None:
            out.append(shape[channel_axis])
        self.shape = tuple(int(s) for s in out)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def source_index(self, t: int) -> tuple:
        """The index into the underlying array of frame ``t`` (slices for Y, X and channels)."""
        index: list[Any] = [slice(None)] * len(self.data.shape)
        for axis, value in self.fixed.items():
            index[axis] = value
        index[self.frame_axis] = t
        return tuple(index)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``view[t]`` or ``view[t, ys, xs]``: one frame (H, W[, C]), optionally sliced."""
        if not isinstance(key, tuple):
            key = (key,)
        t = key[0]
        if not isinstance(t, (int, np.integer)):
            raise TypeError("StackView supports one frame at a time: view[t] or view[t, ys, xs]")
        t = int(t)
        if t < 0:
            t += self.shape[0]
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {key[0]} out of range for {self.shape[0]} frames")
        index = list(self.source_index(t))
        spatial = list(key[1:]) + [slice(None)] * (3 - len(key))
        index[self.y_axis] = spatial[0]
        index[self.x_axis] = spatial[1]
        block = np.asarray(self.data[tuple(index)])
        remaining = [a for a in range(len(index)) if not _is_int(index[a])]
        order = [a for a in (self.y_axis, self.x_axis, self.channel_axis) if a in remaining]
        return np.transpose(block, [remaining.index(a) for a in order])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.stack([self[t] for t in range(len(self))])
        return out if dtype is None else out.astype(dtype)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class ResolvedAxes:
    """A checked choice of axes: every axis index is in ``range(ndim)``, every fixed index in
    ``range(size)``, and Y and X are the two axes left over, in order."""

    frame_axis: int
    channel_axis: int | None
    fixed: Mapping[int, int]
    y_axis: int
    x_axis: int


def resolve_axes(
    shape: Sequence[int],
    frame_axis: int,
    channel_axis: int | None = None,
    fixed: Mapping[int, int] | None = None,
) -> ResolvedAxes:
    """Check a choice of axes for data of ``shape`` and derive the Y and X axes.

    ``frame_axis`` is the axis to propagate along, ``channel_axis`` the axis of channels (or
    None) and ``fixed`` an index for every other axis that is neither Y nor X; the two axes
    left are Y and X. Negative axes and indices count from the end and come back normalized.
    Raises ``ValueError`` saying what is wrong and which axes are still to be chosen.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)

    def norm(axis: int, what: str) -> int:
        if not -ndim <= axis < ndim:
            raise ValueError(f"{what} {axis} is out of range for data of shape {shape}")
        return axis % ndim

    frame_axis = norm(frame_axis, "frame_axis")
    if channel_axis is not None:
        channel_axis = norm(channel_axis, "channel_axis")
        if channel_axis == frame_axis:
            raise ValueError(
                f"channel_axis and frame_axis are both axis {frame_axis}: the channel axis "
                "cannot be the axis to propagate along"
            )
    checked: dict[int, int] = {}
    for axis, index in (fixed or {}).items():
        axis, index = norm(axis, "fixed axis"), int(index)
        if axis in (frame_axis, channel_axis):
            raise ValueError(f"axis {axis} is the frame or channel axis; it cannot be fixed")
        if not -shape[axis] <= index < shape[axis]:
            raise ValueError(f"index {index} for axis {axis} is out of range (size {shape[axis]})")
        checked[axis] = index % shape[axis]
    rest = [a for a in range(ndim) if a not in checked and a not in (frame_axis, channel_axis)]
    if len(rest) < 2:
        raise ValueError(
            f"data of shape {shape} has no two image axes (Y, X) left after choosing "
            f"frame_axis={frame_axis}, channel_axis={channel_axis}, fixed={checked}"
        )
    if len(rest) > 2:
        extra = rest[:-2]
        raise ValueError(
            f"data of shape {shape} needs a fixed index for axes {extra} (the axes that are "
            f"neither propagated along, channels, Y nor X), e.g. fixed={{{extra[0]}: 0}}; the "
            "last two remaining axes are Y and X"
        )
    return ResolvedAxes(frame_axis, channel_axis, checked, rest[0], rest[1])


def stack_view(
    data: Any,
    frame_axis: int = 0,
    channel_axis: int | None = None,
    fixed: Mapping[int, int] | None = None,
) -> Any:
    """A lazy (T, H, W[, C]) view of an N-D array-like.

    ``frame_axis`` is the axis to propagate along (time or z), ``channel_axis`` the axis of
    channels (kept last in the view), and ``fixed`` gives an index for every other axis that
    is neither Y nor X, e.g. ``stack_view(tzyx, frame_axis=0, fixed={1: 12})`` propagates
    over time in slice z = 12 and ``stack_view(tzyx, frame_axis=1, fixed={0: 3})`` propagates
    over z at time 3. The last two remaining axes are Y and X (see :func:`resolve_axes`).
    Nothing is read until a frame is indexed; a (T, H, W) or (T, H, W, C) input with the
    default arguments is returned as is.
    """
    axes = resolve_axes(data.shape, frame_axis, channel_axis, fixed)
    plain = (
        axes.frame_axis == 0
        and not axes.fixed
        and (axes.y_axis, axes.x_axis) == (1, 2)
        and axes.channel_axis in (None, 3)
        and len(data.shape) == (3 if axes.channel_axis is None else 4)
    )
    if plain:
        return data
    return StackView(data, axes.frame_axis, axes.y_axis, axes.x_axis, axes.channel_axis, axes.fixed)


def _in_memory(frames: Any) -> bool:
    """Whether frames (or the array under a StackView) are a numpy array in memory, whose
    frames are views: nothing to gain from reading them ahead. A memory map reads from disk."""
    base = frames.data if isinstance(frames, StackView) else frames
    return isinstance(base, np.ndarray) and not isinstance(base, np.memmap)


class FrameSource:
    """Lazy, normalized network input for each frame of a stack.

    Parameters
    ----------
    frames
        Array-like of shape (T, H, W) or (T, H, W, C); see :func:`stack_view` for other
        layouts. One channel is repeated to grey RGB, three channels are RGB; any other channel
        count needs ``channels``.
    image_size
        S, the network's square input size.
    contrast_limits
        ``(lo, hi)``: intensities map by ``(x - lo) / (hi - lo)`` clipped to [0, 1] (``+inf``
        to 1, ``-inf`` and NaN to 0). None chooses them from the data (uint8: 0..255; other
        dtypes: robust percentiles of a sample, see :mod:`napari_sam2.tracking.intensity`).
    channel_axis
        For a 4-D ``frames``: the channel axis, 1 for (T, C, H, W) or 3 / -1 for (T, H, W, C)
        (the default).
    channels
        Which channels to use: one index (grey), two (red and green, blue empty) or three
        (R, G, B).
    percentiles
        Lower and upper percentiles used when ``contrast_limits`` is None.
    prefetch
        How many frames ahead the worker thread reads (0: none), for stacks that are read from
        somewhere (dask, zarr, memory-mapped files); frames of an array in memory cost nothing
        to read and are not prefetched. Memory stays bounded to that many raw frames.
    """

    def __init__(
        self,
        frames: Any,
        image_size: int,
        contrast_limits: Sequence[float] | None = None,
        channel_axis: int | None = None,
        channels: Sequence[int] | int | None = None,
        *,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        prefetch: int = 2,
    ) -> None:
        if isinstance(frames, FrameSource):
            raise TypeError("frames is already a FrameSource; pass its .frames instead")
        if not hasattr(frames, "shape") or not hasattr(frames, "dtype"):
            frames = np.asarray(frames)
        shape = tuple(int(s) for s in frames.shape)
        if len(shape) == 4 and channel_axis is not None:
            channel_axis = channel_axis % 4
            if channel_axis not in (1, 3):
                raise ValueError(
                    f"channel_axis must be 1 (T, C, H, W) or 3 (T, H, W, C), got {channel_axis}"
                )
            frames = stack_view(frames, frame_axis=0, channel_axis=channel_axis)
            shape = tuple(frames.shape)
        if len(shape) not in (3, 4):
            raise ValueError(
                f"frames must have shape (T, H, W) or (T, H, W, C), got {len(shape)} axes "
                f"{shape}; for (T, Z, Y, X) or other layouts pick the axes with "
                "napari_sam2.tracking.frames.stack_view(data, frame_axis=..., "
                "channel_axis=..., fixed={axis: index})"
            )
        if shape[0] == 0:
            raise ValueError("frames has no frames (T = 0)")
        if np.dtype(frames.dtype).kind not in NUMERIC_KINDS:
            raise TypeError(f"frames must be numeric, got dtype {frames.dtype}")
        self.frames = frames
        self.image_size = int(image_size)
        self.channels = self._choose_channels(shape, channels)
        self.contrast_limits = choose_contrast_limits(
            frames, contrast_limits, percentiles, channels=self.channels
        )
        self._shape = shape
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        # Only reading is done ahead: the worker's torch ops would start a second OpenMP team
        # beside the tracker's and oversubscribe the cores (a 1024 px bfloat16 frame took 5-12 %
        # longer with its preparation on the worker than all on one thread).
        self._prefetch_depth = max(0, int(prefetch)) if not _in_memory(frames) else 0
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._last_index: int | None = None

    @staticmethod
    def _choose_channels(shape: tuple[int, ...], channels: Any) -> tuple[int, ...] | None:
        if channels is not None and not isinstance(channels, Iterable):
            channels = (int(channels),)
        if len(shape) == 3:
            if channels not in (None, (0,), [0]):
                raise ValueError(f"frames of shape {shape} have no channel axis to choose from")
            return None
        count = shape[3]
        if channels is None:
            if count == 1:
                return (0,)
            if count == 3:
                return None
            raise ValueError(
                f"frames have {count} channels (shape {shape}): choose one channel (grey), two "
                "(red, green) or three (R, G, B) with channels=..., e.g. channels=[0]"
            )
        channels = tuple(int(c) for c in channels)
        if len(channels) not in (1, 2, 3):
            raise ValueError(
                "channels must name one channel (grey), two (red, green) or three (R, G, B), "
                f"got {channels}"
            )
        for c in channels:
            if not -count <= c < count:
                raise ValueError(f"channel {c} does not exist: frames have {count} channels")
        return channels

    # --- geometry -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._shape[0]

    @property
    def height(self) -> int:
        return self._shape[1]

    @property
    def width(self) -> int:
        return self._shape[2]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.frames.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    # --- reading --------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}")
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is out of range: the stack has {len(self)} frames")
        return index

    def raw_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as read from the stack: (H, W) or (H, W, C), original dtype."""
        return np.asarray(self.frames[self._check_index(index)])

    def _unit_channels(
        self, raw: np.ndarray, dtype: torch.dtype, device: torch.device | None = None
    ) -> torch.Tensor:
        """(H, W) or (H, W, C) raw pixels -> (c, H, W) in [0, 1] of ``dtype``, c = 1, 2 or 3
        (the chosen channels, not yet made RGB), scaled on ``device`` (default: the CPU)."""
        if raw.ndim == 3 and self.channels is not None:
            raw = raw[..., list(self.channels)]
        # Scale in the input's float type when it is float32 (the exact path of the contract),
        # otherwise in float64 so 32-bit integers and float64 keep their precision.
        work = torch.float32 if raw.dtype == np.float32 and dtype == torch.float32 else None
        raw = np.ascontiguousarray(raw, dtype=np.float64 if work is None else None)
        if not raw.flags.writeable:  # read-only memmaps: torch wants writable memory
            raw = raw.copy()
        x = torch.from_numpy(raw)
        if device is not None:
            x = x.to(device)
        lo, hi = self.contrast_limits
        x = scale_to_unit(x, lo, hi).to(dtype)
        return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)

    def _resize(self, x: torch.Tensor, antialias: bool) -> torch.Tensor:
        """(c, h, w) -> (c, S, S) bicubic."""
        s = self.image_size
        return F.interpolate(
            x.unsqueeze(0).contiguous(),
            size=(s, s),
            mode="bicubic",
            align_corners=False,
            antialias=antialias,
        )[0]

    def _shrink_in_strips(self, raw: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """A large frame scaled and shrunk to (c, S, S) with memory of about (c, H, S).

        The antialiased bicubic resize is separable: a horizontal pass (rows are independent,
        so it runs on strips of rows of about S x S pixels each, scaled to [0, 1] strip by
        strip) into a (c, H, S) buffer, then the vertical pass over that buffer. The full-size
        frame is never converted to float; only a strip is at a time.
        """
        s = self.image_size
        height, width = raw.shape[:2]
        rows = max(1, (s * s) // width)
        wide: torch.Tensor | None = None
        for y0 in range(0, height, rows):
            strip = self._unit_channels(raw[y0 : y0 + rows], dtype)
            shrunk = F.interpolate(
                strip.unsqueeze(0).contiguous(),
                size=(strip.shape[1], s),
                mode="bicubic",
                align_corners=False,
                antialias=True,
            )[0]
            if wide is None:
                wide = torch.empty((strip.shape[0], height, s), dtype=dtype)
            wide[:, y0 : y0 + rows] = shrunk
        assert wide is not None  # height >= 1
        return self._resize(wide, antialias=True)

    def _is_huge(self, raw: np.ndarray) -> bool:
        """Whether a frame is shrunk strip by strip (see `_shrink_in_strips`)."""
        s = self.image_size
        height, width = raw.shape[:2]
        return width > s and height * width > LARGE_FRAME_FACTOR * s * s

    def _read_ahead(self, index: int) -> np.ndarray:
        """Frame ``index`` read into memory: a memory-mapped frame is copied (read from disk
        here), except a huge one, which `_shrink_in_strips` reads a strip at a time."""
        raw = self.raw_frame(index)
        return np.array(raw) if isinstance(raw, np.memmap) and not self._is_huge(raw) else raw

    def _prepare(
        self, raw: np.ndarray, dtype: torch.dtype, device: torch.device | None = None
    ) -> torch.Tensor:
        """Network input (3, S, S) of one raw frame (see `model_input`)."""
        s = self.image_size
        height, width = raw.shape[:2]
        if self._is_huge(raw):
            # Huge frames (a 6000 x 6000 scan): scaled and shrunk strip by strip on the CPU,
            # see _shrink_in_strips, instead of several full-size float64 copies.
            x = self._shrink_in_strips(raw, dtype).clamp_(0.0, 1.0)
            if device is not None:
                x = x.to(device)
        else:
            x = self._unit_channels(raw, dtype, device)
            if (height, width) != (s, s):
                shrinking = height > s or width > s
                x = self._resize(x, antialias=shrinking).clamp_(0.0, 1.0)
        # Grey is repeated and two channels get an empty blue after the resize: each channel
        # is resized on its own, so this equals resizing the RGB image, for a third the work.
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 2:  # a two-colour overlay: red and green, blue empty
            x = torch.cat((x, torch.zeros_like(x[:1])))
        # Constants in the requested dtype (float64 runs must not see float32-rounded ones).
        mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=dtype, device=x.device).view(3, 1, 1)
        # In place after the subtraction: one S x S x 3 buffer instead of two (the worker
        # thread's peak), the same arithmetic.
        return (x - mean).div_(std).contiguous()

    def model_input(
        self,
        index: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Normalized network input (3, S, S) of frame ``index``.

        ``(x - lo) / (hi - lo)``, clip to [0, 1], RGB, bicubic resize to S x S (antialiased
        when shrinking, skipped when the frame is already S x S), then ``(x - mean) / std``.
        Huge frames take the same steps in strips of rows (see ``LARGE_FRAME_FACTOR``).
        Uses the frame read by the worker thread when there is one, and schedules the next
        frames in the direction the tracker is moving.

        device: where the frame is scaled, resized and normalized (default: the CPU); it is
        read on the CPU and moved there first, at its own size. The tracker passes its CUDA
        device, so that a GPU run does not wait for the CPU to prepare every frame. Huge
        frames are shrunk on the CPU.
        """
        index = self._check_index(index)
        with self._lock:
            future = self._pending.pop(index, None)
        raw = None
        if future is not None:
            try:
                raw = future.result()
            except Exception:
                raw = None  # read it again below so the error surfaces in the caller's thread
        device = None if device is None else torch.device(device)
        out = self._prepare(self.raw_frame(index) if raw is None else raw, dtype, device)
        if self._last_index is not None and abs(index - self._last_index) == 1:
            step = index - self._last_index
            self.prefetch(index + step * k for k in range(1, self._prefetch_depth + 1))
        self._last_index = index
        return out

    def prefetch(self, indices: Iterable[int]) -> None:
        """Read these frames on the worker thread (at most ``prefetch`` of them are kept).

        Frames out of range are ignored; pending frames not in ``indices`` are dropped.
        """
        if self._prefetch_depth == 0:
            return
        wanted = [int(i) for i in indices if 0 <= int(i) < len(self)][: self._prefetch_depth]
        with self._lock:
            for i in list(self._pending):
                if i not in wanted:
                    self._pending.pop(i).cancel()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="napari-sam2-frames")
            for i in wanted:
                if i not in self._pending:
                    self._pending[i] = self._executor.submit(self._read_ahead, i)

    @property
    def pending(self) -> tuple[int, ...]:
        """Frames currently read or being read by the worker thread."""
        with self._lock:
            return tuple(sorted(self._pending))

    def close(self) -> None:
        """Stop the worker thread and drop prefetched frames."""
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"FrameSource(shape={self._shape}, dtype={self.dtype}, image_size={self.image_size}, "
            f"contrast_limits={self.contrast_limits}, channels={self.channels})"
        )
