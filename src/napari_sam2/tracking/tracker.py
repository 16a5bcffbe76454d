"""The tracker: prompts, memory bank and propagation over a stack of frames (DESIGN.md).

:class:`Tracker` composes the per-step operations of :class:`napari_sam2.model.SAM2Model`
exactly as the reference video predictor does (``shared/reference/SEMANTICS.md``), with the
project decisions D1-D5 of ``shared/reference/README.md``:

- D1: a prompt on a frame the object was already tracked on makes it a conditioning frame of
  that object (the reference option ``add_all_frames_to_correct_as_cond=True``); the output is
  computed with the memory of the direction the frame was tracked in.
- D2: stored bfloat16 memories are promoted to the compute dtype before attention, also where
  the reference crashes because a frame has spatial memories but no object pointer.
- D3: ``propagate(reverse=True)`` without a start frame starts at the last conditioning frame;
  ``max_frames=k`` processes the start frame and k more.
- D4: ``fill_hole_area`` (off by default) fills small background components of the
  low-resolution logits where the reference's CUDA build does.
- D5: nothing is cleared around corrected frames.

Differences from the reference beyond D1-D5 (issue 4, bounded memory): non-conditioning outputs
farther than the memory window from the frame just tracked are released (see
:mod:`napari_sam2.tracking.state`); per-frame results are handed to the caller and only the
model-resolution outputs the memory bank can still use are kept.

Many objects (issue 12): the objects tracked on one frame whose memory banks have the same layout
(as many spatial memories and object pointers) go through memory attention, mask decoder and
memory encoder as one batch, and what depends on the frame alone (the first memory-attention
layer's self-attention and queries, the memory encoder's projection of the image features) is
computed once for them. Each object's result is that of tracking it alone, up to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.tracking import memory_trim
from napari_sam2.tracking.device import resolve_device
from napari_sam2.tracking.everything import segment_everything_in_features
from napari_sam2.tracking.feature_cache import FeatureCache
from napari_sam2.tracking.frame_order import propagation_frames
from napari_sam2.tracking.frames import FrameSource
from napari_sam2.tracking.holes import fill_holes
from napari_sam2.tracking.memory_bank import (
    MemoryPlan,
    needed_window,
    plan_memory,
    pointer_time_scale,
)
from napari_sam2.tracking.prompt_checks import (
    check_box,
    check_frame,
    check_labels,
    check_mask,
    check_object_id,
    check_points,
)
from napari_sam2.tracking.results import PLACEHOLDER_LOGIT, FrameResult
from napari_sam2.tracking.state import ObjectState, StoredOutput

__all__ = ["Tracker", "FrameResult", "PLACEHOLDER_LOGIT"]

RUNNING_MESSAGE = (
    "a propagation is running: stop it (close the generator / cancel) before changing prompts"
)
ANOTHER_RUN_MESSAGE = (
    "a propagation is running: stop it (close the generator / cancel) before starting another"
)
MASK_PROMPT_CLAMP = 32.0  # previous logits fed back as mask prompt are clamped to +-32
DEFAULT_FEATURE_CACHE_BYTES = 256 * 2**20  # 16 frames of the official models at 1024 px
# ...and never more than 16 frames: in bfloat16 (8 MB a frame) or at 512 px the byte budget
# alone would hold 32 or 64 frames, and the peak would go on rising until it is full.
DEFAULT_FEATURE_CACHE_FRAMES = 16
# Objects tracked on a frame in one batch. On a GPU, larger batches mean fewer, larger kernels.
# On a CPU, batches of 4 tracked 16 objects at 1024 px 11 % faster than one at a time and
# 13 % faster than one batch of 16, whose activations (about 45 MB an object) peaked 0.6 GB
# higher (benchmarks/README.md, "Many objects").
DEFAULT_OBJECT_BATCH = 16
CPU_OBJECT_BATCH = 4


class Tracker:
    """Segment and track objects through a stack of frames with SAM 2.

    Parameters
    ----------
    model
        A :class:`napari_sam2.model.SAM2Model`. The tracker computes in the dtype of its
        parameters (float32, or float64 for parity tests) and never changes them, except that
        ``device`` moves the model.
    frames
        Array-like (T, H, W) or (T, H, W, C), or a :class:`FrameSource` (then
        ``contrast_limits`` and ``channels`` must be None). Frames are read one at a time.
    contrast_limits
        ``(lo, hi)`` intensity range mapped to [0, 1]; None chooses it from the data.
    channels
        For (T, H, W, C) frames: which channels to use, one (grey), two (red, green) or three
        (R, G, B); needed for C other than 1 or 3 (see :class:`FrameSource`).
    device
        Where to run: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
        ``torch.device``; None keeps the model's device. A device that is not available here
        is a ``ValueError`` (see :func:`napari_sam2.tracking.device.resolve_device`).
    fill_hole_area
        Fill background holes of up to this many pixels in the low-resolution masks (D4);
        0 (default) matches the reference on CPU, 8 matches its CUDA build.
    dtype
        None computes in the parameter dtype. ``torch.bfloat16`` or ``torch.float16`` run the
        network under autocast (meant for CUDA) with float32 parameters.
    feature_cache_bytes
        Budget of the least-recently-used cache of image features (default 256 MiB, 16
        frames of the official models at 1024 px in float32, 16 MB each); 0 keeps only the
        latest frame.
    feature_cache_frames
        At most this many frames in that cache (default 16, whatever their size); None
        leaves only the byte budget (to cache a whole short stack, say).
    memory_window
        Non-conditioning outputs this many frames or more away from the frame just tracked are
        released. None uses ``max(num_maskmem - 1, max_obj_ptrs_in_encoder - 1)`` (15 for the
        official models), the most a tracked frame reads; 0 keeps everything like the reference.

    Notes
    -----
    One propagation at a time: a :meth:`propagate` generator counts as running from its first
    ``next()`` until it is exhausted, raises or is closed (``close()``, or dropped). While one runs,
    a second :meth:`propagate` and any change of objects or prompts (``add_points``,
    ``add_box``, ``add_mask``, ``clear_prompts``, ``remove_object``, ``reset``) raise a
    ``RuntimeError``, because the running generator holds the memory bank and would otherwise
    skip or half apply the change. Stop it first (close the generator, or cancel the worker in
    the widget); results already yielded stay valid.

    Object ids are integers from 1 to 65535 (object k becomes label k, 0 is the background,
    label files store uint16; see :data:`napari_sam2.tracking.prompt_checks.MAX_OBJECT_ID`).

    Memory stays bounded on long stacks: conditioning outputs (prompted frames) are kept, but
    tracked (non-conditioning) outputs only within ``memory_window`` frames of the frame last
    tracked for that object; results are handed to the caller and not kept. Propagation results
    are identical to the reference's. Differences appear only for work far (``memory_window``
    frames or more) from where the last propagation was: a prompt on such an already tracked frame
    gets no previous logits as mask prompt and sees only the conditioning memories (and tracked
    ones that are still kept); a propagation started there lacks the old tracked memories behind
    its start; ``add_*`` results show other objects without a kept output there as placeholders
    (``has_output`` False). Stacks of at most ``memory_window`` + 1 frames behave exactly like
    the reference.
    """

    def __init__(
        self,
        model: Any,
        frames: Any,
        contrast_limits: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        fill_hole_area: int = 0,
        *,
        dtype: torch.dtype | str | None = None,
        feature_cache_bytes: int = DEFAULT_FEATURE_CACHE_BYTES,
        feature_cache_frames: int | None = DEFAULT_FEATURE_CACHE_FRAMES,
        memory_window: int | None = None,
        channels: Sequence[int] | int | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        param = next(model.parameters())
        if device is not None:
            # Checked before anything moves: a missing GPU is a clear error, not torch's
            # "Torch not compiled with CUDA enabled" from inside model.to().
            device = resolve_device(device)
        if device is not None and device != param.device:
            model.to(device)
            param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype  # compute and storage dtype of the outputs
        self._autocast_dtype = self._choose_autocast(dtype)

        size = int(self.config.image_size)
        if isinstance(frames, FrameSource):
            for name, value in (("contrast_limits", contrast_limits), ("channels", channels)):
                if value is not None:
                    raise ValueError(
                        f"frames is a FrameSource: set {name} on the FrameSource, not here"
                    )
            if frames.image_size != size:
                raise ValueError(
                    f"the FrameSource prepares {frames.image_size} px inputs but the model "
                    f"takes {size} px; make it with image_size={size}"
                )
            self.frames = frames
        else:
            self.frames = FrameSource(
                frames, size, contrast_limits=contrast_limits, channels=channels
            )
        self.num_frames = len(self.frames)
        self.height = int(self.frames.height)
        self.width = int(self.frames.width)
        self.image_size = size
        self.low_res_size = int(self.config.low_res_mask_size)

        if int(fill_hole_area) < 0:
            raise ValueError(f"fill_hole_area must be >= 0, got {fill_hole_area}")
        self.fill_hole_area = int(fill_hole_area)
        self.num_maskmem = int(self.config.num_maskmem)
        self.max_pointers = int(self.config.max_obj_ptrs_in_encoder)
        self.pointer_t_max = pointer_time_scale(self.num_frames, self.max_pointers)
        if memory_window is None:
            memory_window = needed_window(self.num_maskmem, self.max_pointers)
        if memory_window < 0:
            raise ValueError(
                f"memory_window must be >= 0 (0 keeps everything), got {memory_window}"
            )
        self.memory_window = int(memory_window)

        for name, value in (
            ("feature_cache_bytes", feature_cache_bytes),
            ("feature_cache_frames", feature_cache_frames),
        ):
            if value is not None and int(value) < 0:
                raise ValueError(
                    f"{name} must be >= 0 (0 keeps only the latest frame), got {value}"
                )
        self.features = FeatureCache(feature_cache_bytes, max_frames=feature_cache_frames)
        self._objects: dict[int, ObjectState] = {}
        self._memory_pos: torch.Tensor | None = None  # the sine PE of memories, a constant
        self._vision_pos: torch.Tensor | None = None  # the sine PE of image features, a constant
        # Between frames (see propagate). A trim costs the next frame about 50 ms of page
        # faults: 5 % of a bfloat16 frame at 1024 px on 2 cores, under 2 % of a float32 one,
        # whose larger tensors also fragment the heap faster; float32 trims after every frame.
        self._heap_trimmer = memory_trim.HeapTrimmer(
            every_frames=None if self._autocast_dtype is not None else 1
        )
        # Set to a list to record, per decoder call, the memory used and the decisions.
        self.debug_trace: list[dict[str, Any]] | None = None
        # Objects tracked on one frame with the same memory layout are computed as one batch of
        # at most this many (1 tracks them one at a time; the tests compare both).
        self._object_batch_size = (
            CPU_OBJECT_BATCH if self.device.type == "cpu" else DEFAULT_OBJECT_BATCH
        )
        # Held by the running propagation (see the class notes). A Lock, not a flag: the
        # widget propagates on a worker thread, and a Lock may be released by any thread.
        self._running = threading.Lock()

    # --- public API ------------------------------------------------------------------------

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Object ids in order of first use."""
        return tuple(self._objects)

    def add_points(self, frame_index: int, object_id: int, points: Any, labels: Any) -> FrameResult:
        """Add clicks for an object on a frame and return the frame's result.

        ``points`` (N, 2) are (y, x) in frame pixels, ``labels`` (N,) 1 for foreground and 0 for
        background. They are appended to the object's earlier points on that frame (a mask
        prompt there is dropped).
        """
        self._check_not_running()
        frame = check_frame(frame_index, self.num_frames)
        object_id = check_object_id(object_id)
        yx = check_points(points, self.height, self.width, f"object {object_id} on frame {frame}")
        lab = check_labels(labels, len(yx))
        obj = self._object(object_id, create=True)
        old = obj.points.get(frame)
        if old is not None:
            yx = np.concatenate([old[0], yx])
            lab = np.concatenate([old[1], lab])
        obj.points[frame] = (yx, lab)
        obj.mask_prompts.discard(frame)
        return self._prompt(obj, frame)

    def add_box(self, frame_index: int, object_id: int, box: Any) -> FrameResult:
        """Prompt an object with a box (y0, x0, y1, x1) in frame pixels.

        The box replaces the object's points on that frame; later ``add_points`` calls add
        clicks after it.
        """
        self._check_not_running()
        frame = check_frame(frame_index, self.num_frames)
        object_id = check_object_id(object_id)
        corners = check_box(box, self.height, self.width, f"object {object_id} on frame {frame}")
        obj = self._object(object_id, create=True)
        obj.points[frame] = (corners, np.array([2, 3], dtype=np.int64))
        obj.mask_prompts.discard(frame)
        return self._prompt(obj, frame)

    def add_mask(self, frame_index: int, object_id: int, mask: Any) -> FrameResult:
        """Prompt an object with a mask (H, W) at frame resolution (nonzero = object).

        The mask itself becomes the output (logits +-10 at model resolution); it replaces the
        object's points on that frame. A mask too small to survive the scaling to the model's
        input leaves the object absent there, as in the reference, with a ``UserWarning``.
        """
        self._check_not_running()
        frame = check_frame(frame_index, self.num_frames)
        object_id = check_object_id(object_id)
        m = check_mask(mask, self.height, self.width, f"object {object_id} on frame {frame}")
        obj = self._object(object_id, create=True)
        obj.points.pop(frame, None)
        obj.mask_prompts.add(frame)
        return self._prompt(obj, frame, mask=m)

    def clear_prompts(self, frame_index: int, object_id: int | None = None) -> FrameResult:
        """Forget the prompts on a frame, of one object or of all (SEMANTICS 7.1).

        A conditioning output there is kept as a tracked output until a propagation overwrites
        it; an object left without prompts must get new ones (or be removed) before the next
        propagation. Returns the frame's result.
        """
        self._check_not_running()
        frame = check_frame(frame_index, self.num_frames)
        if object_id is None:
            targets = list(self._objects.values())
        else:
            targets = [self._object(check_object_id(object_id), create=False)]
        for obj in targets:
            obj.clear_frame(frame)
        return self._result(frame, {})

    def remove_object(self, object_id: int) -> None:
        """Forget an object, its prompts and outputs; other objects are unaffected."""
        self._check_not_running()
        obj = self._object(check_object_id(object_id), create=False)
        del self._objects[obj.object_id]

    def reset(self) -> None:
        """Forget all objects, prompts and outputs (cached image features are kept)."""
        self._check_not_running()
        self._objects.clear()

    def close(self) -> None:
        """Stop the frame-reading thread and free objects, outputs and cached features.

        The tracker cannot be used afterwards; closing twice is harmless.
        """
        self.frames.close()
        self._objects.clear()
        self.features.clear()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def propagate(
        self,
        start_frame: int | None = None,
        reverse: bool = False,
        max_frames: int | None = None,
    ) -> Iterator[FrameResult]:
        """Track every object through the frames, yielding one :class:`FrameResult` per frame.

        ``start_frame`` None starts at the first conditioning frame of any object (the last one
        when ``reverse``, D3). ``max_frames=k`` processes the start frame and k more; None goes
        to the end (reverse: to frame 0). A reverse propagation from frame 0 yields nothing, as
        in the reference. Prompts given since the last propagation get their memory first.
        Errors (no prompts, bad arguments, another propagation running) are raised here, before
        iterating. One propagation runs at a time (see the class notes): close this generator
        (or iterate it to the end) before the next one or before changing prompts.
        """
        if self._running.locked():
            raise RuntimeError(ANOTHER_RUN_MESSAGE)
        self._check_prompted()
        if start_frame is not None:
            start_frame = check_frame(start_frame, self.num_frames)
        if max_frames is not None:
            if int(max_frames) != max_frames or max_frames < 0:
                raise ValueError(f"max_frames must be a non-negative integer, got {max_frames}")
            max_frames = int(max_frames)
        return self._one_at_a_time(self._propagate(start_frame, bool(reverse), max_frames))

    def _check_prompted(self) -> None:
        """Raise unless there are objects and each has a prompt on some frame."""
        if not self._objects:
            raise RuntimeError(
                "nothing to propagate: add points, a box or a mask for an object first"
            )
        orphans = [oid for oid, obj in self._objects.items() if not obj.has_conditioning]
        if orphans:
            raise RuntimeError(
                f"object(s) {orphans} have no prompt on any frame: add a prompt for them or "
                "remove them with remove_object"
            )

    def _one_at_a_time(self, results: Iterator[FrameResult]) -> Iterator[FrameResult]:
        """``results`` with the propagation guard held from the first result until the end.

        The guard is taken on the first ``next()`` (a generator that is never started holds
        nothing, as ``close()`` does not run the body of an unstarted generator) and released
        in ``finally``: at the end, on an error, and on ``close()`` or garbage collection.
        """
        if not self._running.acquire(blocking=False):
            raise RuntimeError(ANOTHER_RUN_MESSAGE)
        try:
            yield from results
        finally:
            self._running.release()

    def segment_everything(self, frame_index: int, **options: Any) -> list[dict[str, Any]]:
        """Every object SAM 2 finds on a frame of the stack, as
        :func:`napari_sam2.tracking.segment_everything` records (same options and defaults),
        computed on the frame's cached features: the image encoder runs at most once per frame
        for tracking and segmenting together. Allowed while a propagation runs."""
        frame = check_frame(frame_index, self.num_frames)
        with self._compute():
            feats = self._image_features(frame)
            return segment_everything_in_features(
                self.model, feats, (self.height, self.width), **options
            )

    def stored_output(self, object_id: int, frame_index: int) -> StoredOutput | None:
        """The model-resolution output kept for an object on a frame (None if none is kept)."""
        obj = self._object(check_object_id(object_id), create=False)
        return obj.output_at(check_frame(frame_index, self.num_frames))

    def stored_bytes(self) -> int:
        """Bytes of outputs and memories kept for all objects (image features not counted)."""
        return sum(obj.nbytes() for obj in self._objects.values())

    def num_non_conditioning(self, object_id: int) -> int:
        """How many non-conditioning outputs are kept for an object."""
        return len(self._object(check_object_id(object_id), create=False).non_conditioning)

    # --- propagation ----------------------------------------------------------------------

    def _propagate(
        self, start: int | None, reverse: bool, max_frames: int | None
    ) -> Iterator[FrameResult]:
        # prompts may have changed between propagate() and the first next(): check them again
        self._check_prompted()
        with self._compute():
            self._preflight()
        objects = list(self._objects.values())
        if start is None:
            firsts = [f for obj in objects for f in obj.conditioning]
            start = max(firsts) if reverse else min(firsts)
        order = propagation_frames(self.num_frames, start, reverse, max_frames)
        direction = -1 if reverse else 1
        for frame in order:
            outputs: dict[int, StoredOutput] = {}
            with self._compute():
                feats = None
                to_track = [obj for obj in objects if frame not in obj.conditioning]
                if to_track:
                    feats = self._image_features(frame)
                    for group in self._batches(to_track, frame, direction):
                        tracked = self._track(group, frame, direction, feats)
                        for obj, out in zip(group, tracked, strict=True):
                            outputs[obj.object_id] = out
                for obj in objects:
                    out = obj.conditioning.get(frame)
                    if out is None:
                        out = outputs[obj.object_id]
                        obj.non_conditioning[frame] = out
                    obj.tracked[frame] = direction
                    if self.memory_window > 0:
                        obj.release_far_from(frame, self.memory_window)
                    outputs[obj.object_id] = out
                result = self._result(frame, outputs, object_ids=[o.object_id for o in objects])
            # The frame's temporaries are freed now; hand their heap pages back once they add
            # up, so that the heap's fragmentation does not grow the resident size frame after
            # frame (see memory_trim). Done between frames, not inside the network.
            feats = None
            self._heap_trimmer.after_frame()
            yield result

    def _preflight(self) -> None:
        """Encode the memory of every prompted output (binarized masks, SEMANTICS 3.2)."""
        s = self.image_size
        for obj in self._objects.values():
            for frame, out in obj.pending.items():
                feats = self._image_features(frame)
                high = F.interpolate(
                    out.low_res.to(self.dtype), size=(s, s), mode="bilinear", align_corners=False
                )
                out.memory = self._encode_memory(feats, high, out.score, binarize=True)
                self._trace("preflight", obj.object_id, frame, None, None, False)
            obj.commit_pending()

    def _batches(
        self, objects: list[ObjectState], frame: int, direction: int
    ) -> list[list[ObjectState]]:
        """Objects to track on ``frame``, grouped for batched tracking.

        Objects whose memory banks have the same layout (as many spatial memories and
        pointers, hence the same token count) go through memory attention, mask decoder and
        memory encoder as one batch, at most ``_object_batch_size`` at a time; the others go in
        groups of their own. Groups keep the objects' order.
        """
        size = max(1, int(self._object_batch_size))
        groups: dict[tuple[int, int], list[list[ObjectState]]] = {}
        for obj in objects:
            plan = self._plan(obj, frame, direction)
            chunks = groups.setdefault((len(plan.spatial), len(plan.pointers)), [[]])
            if len(chunks[-1]) == size:
                chunks.append([])
            chunks[-1].append(obj)
        return [group for chunks in groups.values() for group in chunks]

    def _track(
        self, objects: list[ObjectState], frame: int, direction: int, feats: Any
    ) -> list[StoredOutput]:
        """Predict objects on a frame from their memories and encode the frame's memories.

        ``objects`` share a memory layout (see :meth:`_batches`) and are computed as one batch;
        each result is that of the object tracked alone (up to float rounding).
        """
        plans = [self._plan(obj, frame, direction) for obj in objects]
        pix = self._attend(objects, plans, feats)
        head = self.model.predict_masks(pix, feats.high_res, None, None, None, True)
        memory = self._encode_memory(feats, head.high_res, head.object_score_logits, False)
        outs = self._stored_rows(head, memory)
        for obj, plan, out in zip(objects, plans, outs, strict=True):
            self._trace("track", obj.object_id, frame, plan, out.decision, False)
        return outs

    # --- prompts --------------------------------------------------------------------------

    def _prompt(self, obj: ObjectState, frame: int, mask: np.ndarray | None = None) -> FrameResult:
        with self._compute():
            feats = self._image_features(frame)
            if mask is not None:
                model_mask = self._mask_input(mask)
                if not model_mask.any():
                    # as in the reference: the object is absent on its own prompted frame
                    s = self.image_size
                    warnings.warn(
                        f"the mask of object {obj.object_id} on frame {frame} "
                        f"({int(mask.sum())} pixels) vanishes at the model's {s} x {s} input: "
                        "the object is absent there; paint a larger mask, or prompt it with "
                        "points or a box",
                        UserWarning,
                        stacklevel=3,
                    )
                head = self.model.mask_as_output(feats.vision, feats.high_res, model_mask)
                plan = mask_input = None
            else:
                # A frame the object was tracked on is corrected with its memory (SEMANTICS 3.1),
                # unless it has no conditioning frame left to remember (then it starts afresh).
                initial = frame not in obj.tracked or not obj.conditioning
                plan = None
                if initial:
                    pix = self.model.add_no_memory_embedding(feats.vision)
                else:
                    plan = self._plan(obj, frame, obj.tracked[frame])
                    pix = self._attend([obj], [plan], feats)
                previous = obj.output_at(frame)
                mask_input = None
                if previous is not None:
                    mask_input = previous.low_res.to(self.dtype).clamp(
                        -MASK_PROMPT_CLAMP, MASK_PROMPT_CLAMP
                    )
                coords, labels = self._point_inputs(obj.points[frame])
                multimask = labels.shape[1] <= 1
                head = self.model.predict_masks(
                    pix, feats.high_res, coords, labels, mask_input, multimask
                )
            out = self._stored(head, None)
            obj.pending[frame] = out
            mask_prompt = mask is not None or mask_input is not None
            self._trace("prompt", obj.object_id, frame, plan, out.decision, mask_prompt)
            return self._result(frame, {obj.object_id: out})

    def _point_inputs(self, prompt: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, ...]:
        """(y, x) frame pixels -> (1, N, 2) (x, y) model pixels, as x / W * S (SEMANTICS 1.4)."""
        yx, labels = prompt
        dtype = self.dtype
        xy = torch.as_tensor(np.ascontiguousarray(yx[:, ::-1]), dtype=dtype, device=self.device)
        size = torch.tensor([self.width, self.height], dtype=dtype, device=self.device)
        coords = xy / size * self.image_size
        lab = torch.as_tensor(labels, dtype=torch.int32, device=self.device)
        return coords[None], lab[None]

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) bool -> (1, 1, S, S) {0, 1}, antialiased bilinear resize then >= 0.5."""
        s = self.image_size
        m = torch.from_numpy(mask).to(device=self.device, dtype=self.dtype)[None, None]
        if tuple(m.shape[-2:]) != (s, s):
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).to(self.dtype)
        return m

    # --- memory ---------------------------------------------------------------------------

    def _plan(self, obj: ObjectState, frame: int, direction: int) -> MemoryPlan:
        return plan_memory(
            frame,
            direction,
            obj.conditioning,
            obj.non_conditioning,
            self.num_frames,
            self.num_maskmem,
            self.max_pointers,
        )

    def _attend(
        self, objects: list[ObjectState], plans: list[MemoryPlan], feats: Any
    ) -> torch.Tensor:
        """Memory attention of the frame's features over each object's planned memories.

        The plans must have one layout (token count); returns (len(objects), C, G, G).
        """
        sequences = [self._memory_sequence(o, p) for o, p in zip(objects, plans, strict=True)]
        num_pointer_tokens = sequences[0][2]
        if len(sequences) == 1:
            memory, memory_pos = sequences[0][:2]
        else:
            memory = torch.cat([seq[0] for seq in sequences])
            memory_pos = torch.cat([seq[1] for seq in sequences])
        return self.model.attend_to_memory(
            feats.vision, feats.vision_pos, memory, memory_pos, num_pointer_tokens
        )

    def _memory_sequence(
        self, obj: ObjectState, plan: MemoryPlan
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One object's memory tokens (1, n, M), their PE and the number of pointer tokens."""
        tokens: list[torch.Tensor] = []
        positions: list[torch.Tensor] = []
        for frame, row, is_cond in plan.spatial:
            src = obj.conditioning[frame] if is_cond else obj.non_conditioning[frame]
            # D2: bfloat16 storage is promoted to the compute dtype (also without pointers).
            memory = src.memory.to(self.dtype)
            tok, pos = self.model.spatial_memory(memory, self._memory_pos, row)
            tokens.append(tok)
            positions.append(pos)
        num_pointer_tokens = 0
        if plan.pointers:
            ptrs = torch.stack(
                [
                    (obj.conditioning[t] if is_cond else obj.non_conditioning[t]).obj_ptr
                    for t, _, is_cond in plan.pointers
                ]
            )  # (P, 1, C)
            distances = torch.tensor([d for _, d, _ in plan.pointers], device=self.device)
            tok, pos = self.model.pointer_memory(ptrs, distances, self.pointer_t_max)
            tokens.append(tok)
            positions.append(pos)
            num_pointer_tokens = tok.shape[1]
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1), num_pointer_tokens

    def _encode_memory(
        self, feats: Any, high_res: torch.Tensor, score: torch.Tensor, binarize: bool
    ) -> torch.Tensor:
        memory, pos = self.model.encode_memory(feats.vision, high_res, score, binarize)
        if self._memory_pos is None:
            self._memory_pos = pos.to(self.dtype)
        # Stored as bfloat16 like the reference; float64 goes through float32 (two roundings,
        # exactly what torch does in the reference's float64 run).
        return memory.float().to(torch.bfloat16)

    def _stored_rows(self, head: Any, memory: torch.Tensor) -> list[StoredOutput]:
        """One stored output per row of a batched head output and its memories."""
        if head.low_res.shape[0] == 1:
            return [self._stored(head, memory)]
        rows = []
        for i in range(head.low_res.shape[0]):
            row = dataclasses.replace(
                head,
                low_res=head.low_res[i : i + 1].clone(),
                obj_ptr=head.obj_ptr[i : i + 1].clone(),
                object_score_logits=head.object_score_logits[i : i + 1].clone(),
                decision=head.decision.row(i),
            )
            rows.append(self._stored(row, memory[i : i + 1].clone()))
        return rows

    def _stored(self, head: Any, memory: torch.Tensor | None) -> StoredOutput:
        low = head.low_res.to(self.dtype)
        # D4: after the memory of a tracked frame was encoded, like the reference's CUDA build.
        low = fill_holes(low, self.fill_hole_area)
        return StoredOutput(
            low_res=low,
            obj_ptr=head.obj_ptr.to(self.dtype),
            score=head.object_score_logits.to(self.dtype),
            # kept for up to memory_window frames: out of the heap, like the cached features
            # (see memory_trim.off_heap_copy; the small low_res stays, one map per output)
            memory=memory_trim.off_heap_copy(memory),
            decision=getattr(head, "decision", None),
        )

    # --- frames, results and checks --------------------------------------------------------

    def _image_features(self, frame: int) -> Any:
        """The frame's features, from the cache or the image encoder.

        The sine PE of the features depends only on their shape: one copy is shared by all
        frames, and the cache holds only the per-frame tensors.
        """
        cached = self.features.get(frame)
        if cached is not None:
            return dataclasses.replace(cached, vision_pos=self._vision_pos)
        in_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        # a GPU prepares the frame itself instead of waiting for the CPU to (see model_input)
        prepare_on = self.device if self.device.type == "cuda" else None
        image = self.frames.model_input(frame, dtype=in_dtype, device=prepare_on).to(self.device)
        if image.dtype != self.dtype and self._autocast_dtype is None:
            image = image.to(self.dtype)
        feats = self.model.encode_image(image[None])
        if self._vision_pos is None:
            self._vision_pos = feats.vision_pos
        self.features.put(frame, dataclasses.replace(feats, vision_pos=None))
        return feats

    def _result(
        self,
        frame: int,
        outputs: dict[int, StoredOutput],
        object_ids: Sequence[int] | None = None,
    ) -> FrameResult:
        """The frame's result: ``outputs`` where given, else what is stored, else placeholders."""
        ids = tuple(self._objects) if object_ids is None else tuple(object_ids)
        n, low = len(ids), self.low_res_size
        mask_logits = np.full((n, self.height, self.width), PLACEHOLDER_LOGIT, dtype=np.float32)
        scores = np.full(n, PLACEHOLDER_LOGIT, dtype=np.float32)
        has = np.zeros(n, dtype=bool)
        rows, score_rows = [], []
        for i, oid in enumerate(ids):
            out = outputs.get(oid)
            if out is None and oid in self._objects:
                out = self._objects[oid].output_at(frame)
            if out is None:
                continue  # placeholder: exactly -1024 (a resize would round it)
            rows.append(out.low_res.to(self.dtype))
            score_rows.append(out.score.reshape(1))
            has[i] = True
        if rows:
            logits = torch.cat(rows)  # (n_out, 1, S/4, S/4), on the device
            if (self.height, self.width) != (low, low):
                # SEMANTICS 1.5: bilinear from the low-res logits, no antialias
                logits = F.interpolate(
                    logits, size=(self.height, self.width), mode="bilinear", align_corners=False
                )
            # the frame's only reads from the device, after all of its work is queued: on a
            # GPU every read waits for the device
            mask_logits[has] = logits[:, 0].to(device="cpu", dtype=torch.float32).numpy()
            scores[has] = torch.cat(score_rows).to(device="cpu", dtype=torch.float32).numpy()
        return FrameResult(frame, ids, mask_logits, scores, has)

    def _trace(
        self,
        kind: str,
        object_id: int,
        frame: int,
        plan: MemoryPlan | None,
        decision: Mapping[str, Any] | None,
        mask_prompt: bool,
    ) -> None:
        if self.debug_trace is None:
            return
        self.debug_trace.append(
            {
                "kind": kind,
                "object_id": object_id,
                "frame": frame,
                "spatial": None if plan is None else [(t, r) for t, r, _ in plan.spatial],
                "pointers": None if plan is None else [(t, d) for t, d, _ in plan.pointers],
                "decision": None if decision is None else dict(decision),
                "mask_prompt": mask_prompt,
            }
        )

    def _compute(self) -> contextlib.ExitStack:
        moved_to = next(self.model.parameters()).device
        if moved_to != self.device:
            # one model shared by trackers on different devices: torch's own error would be a
            # tensor-type mismatch deep inside a convolution
            raise RuntimeError(
                f"this Tracker runs on {self.device}, but its model has since been moved to "
                f"{moved_to} (another Tracker made with device={str(moved_to)!r}?). Give each "
                "device its own model (build_sam2 twice, or copy.deepcopy(model))."
            )
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self._autocast_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self._autocast_dtype))
        return stack

    def _choose_autocast(self, dtype: torch.dtype | str | None) -> torch.dtype | None:
        if dtype is None:
            return None
        if isinstance(dtype, str):
            name = dtype.removeprefix("torch.")
            dtype = getattr(torch, name, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {name!r}; use 'bfloat16' or 'float16'")
        if dtype == self.dtype:
            return None
        if dtype in (torch.bfloat16, torch.float16):
            if self.dtype != torch.float32:
                raise ValueError(
                    f"autocast to {dtype} needs float32 parameters, the model has {self.dtype}"
                )
            return dtype
        raise ValueError(
            f"dtype {dtype} differs from the model's parameters ({self.dtype}); convert the "
            "model with model.to(dtype) or pass torch.bfloat16 / torch.float16 for autocast"
        )

    def _check_not_running(self) -> None:
        if self._running.locked():
            raise RuntimeError(RUNNING_MESSAGE)

    def _object(self, object_id: int, create: bool) -> ObjectState:
        obj = self._objects.get(object_id)
        if obj is None:
            if not create:
                raise KeyError(
                    f"unknown object id {object_id}; known objects: {list(self._objects)}"
                )
            obj = self._objects[object_id] = ObjectState(object_id)
        return obj
