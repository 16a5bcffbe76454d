"""The image to track and how its axes map to the tracked stack, without Qt.

:class:`AxesController` holds the chosen image layer, the axis to track along, the channel
axis and channel, and answers what the Image panel shows (the choices and a summary line),
the :class:`~napari_sam2.tracking.layer_prompts.AxisPlan` of a session, and where the viewer
is along the tracked axis. Other axes than the frame, channel, Y and X axes are fixed at the
viewer's position.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image

from napari_sam2.tracking.layer_prompts import AxisPlan
from napari_sam2.widget import layers as L

__all__ = ["AxesController"]

Choice = tuple[str, Any]
"""(text shown, value) of one entry of a choice list."""


class AxesController:
    """The image, frame axis, channel axis and channel; ``dims`` is the viewer's ``Dims``."""

    def __init__(self, dims: Any) -> None:
        self.dims = dims
        self.image: Image | None = None
        self.frame_axis: int | None = None
        self.channel_axis: int | None = None
        self.channel: int | str | None = None

    # --- the choices ---------------------------------------------------------------------------

    def stack_axes(self) -> list[Choice]:
        """The axes that can be tracked along (or be channels): all but Y, X (and RGB)."""
        image = self.image
        if image is None:
            return []
        shape = L.image_data(image).shape
        spatial = len(shape) - (1 if image.rgb else 0)
        names = self.axis_names(spatial)
        return [(f"{names[axis]} ({shape[axis]})", axis) for axis in range(spatial - 2)]

    def channel_axes(self) -> list[Choice]:
        """Choices of the channel axis: none, or a stack axis (an RGB image has none)."""
        if self.image is None or self.image.rgb:
            return [("none", None)]
        return [("none", None), *self.stack_axes()]

    def channels(self) -> list[Choice]:
        """Choices of the channel along the channel axis (three channels may be RGB)."""
        image = self.image
        if image is not None and image.rgb:
            return [("RGB", "rgb")]
        if image is None or self.channel_axis is None:
            return []
        count = L.image_data(image).shape[self.channel_axis]
        choices: list[Choice] = [(str(c), c) for c in range(count)]
        if count == 3:
            choices.append(("RGB (0, 1, 2)", "rgb"))
        return choices

    def axis_names(self, ndim: int) -> list[str]:
        """How the last ``ndim`` viewer axes are shown: "axis 0: z", or "axis 0" where napari
        only numbers them."""
        labels = list(self.dims.axis_labels)[-ndim:] if self.dims.ndim >= ndim else []
        if len(labels) != ndim:
            labels = [str(i) for i in range(ndim)]
        return [
            f"axis {i}" if str(name).lstrip("-").isdigit() else f"axis {i}: {name}"
            for i, name in enumerate(labels)
        ]

    # --- the plan and the viewer position ------------------------------------------------------

    def plan(self) -> AxisPlan | None:
        """How the image maps to the tracked stack (None without an image).

        Raises ValueError (with what to do) when the image has no axis to track along.
        """
        image = self.image
        if image is None:
            return None
        shape = L.image_data(image).shape
        if self.frame_axis is None:
            raise ValueError(
                f"the image {image.name!r} of shape {shape} has no axis to track along: it "
                "needs a time or Z axis besides Y and X"
            )
        c_axis = None if image.rgb else self.channel_axis
        spatial = len(shape) - (1 if image.rgb else 0)
        others = [a for a in range(spatial - 2) if a not in (self.frame_axis, c_axis)]
        fixed = {a: self.viewer_index(a) for a in others}
        return AxisPlan.from_shape(shape, self.frame_axis, c_axis, fixed, rgb=image.rgb)

    def safe_plan(self) -> AxisPlan | None:
        """:meth:`plan`, or None where there is none."""
        try:
            return self.plan()
        except ValueError:
            return None

    def summary(self) -> str:
        """The Image panel's line: the frame count and the axes fixed at the viewer position
        (or what is missing)."""
        try:
            plan = self.plan()
        except ValueError as exc:
            return str(exc)
        if plan is None:
            return "add an image layer"
        fixed = ", ".join(f"axis {a} = {i}" for a, i in sorted(plan.fixed.items()))
        return f"{plan.num_frames} frames" + (
            f"; fixed at the viewer's position: {fixed}" if fixed else ""
        )

    def viewer_axis(self, axis: int) -> int:
        """The viewer axis showing the image's ``axis``."""
        assert self.image is not None
        return axis + self.dims.ndim - self.image.ndim

    def viewer_index(self, axis: int) -> int:
        """The image's data index along ``axis`` at the viewer's current position."""
        image = self.image
        assert image is not None
        world = self.dims.point[self.viewer_axis(axis)]
        index = int(round((world - image.translate[axis]) / image.scale[axis]))
        return int(np.clip(index, 0, L.image_data(image).shape[axis] - 1))

    def current_frame(self) -> int | None:
        """The frame the viewer shows along the tracked axis (None without a plan)."""
        plan = self.safe_plan()
        return None if plan is None else self.viewer_index(plan.frame_axis)

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer to ``frame`` along the tracked axis."""
        image, plan = self.image, self.safe_plan()
        if image is None or plan is None:
            return
        axis = plan.frame_axis
        world = image.translate[axis] + frame * image.scale[axis]
        self.dims.set_point(self.viewer_axis(axis), world)
