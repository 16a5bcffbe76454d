"""napari layer helpers for the widget: prompt layers, output labels, coordinates, colours.

Only napari (no Qt widgets): creating the prompt and label layers with the image's geometry,
reading their data as :mod:`napari_sam2.tracking.layer_prompts` wants it, and the colours that
tie a point to its object's labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.colormaps import label_colormap

from napari_sam2.tracking.layer_prompts import AxisPlan, PromptSet, collect_prompts

POINTS_NAME = "SAM2 points"
BOXES_NAME = "SAM2 boxes"
MASKS_NAME = "SAM2 mask prompts"
OUTPUT_NAME = "SAM2 labels"
NEGATIVE_BORDER = (1.0, 0.1, 0.1, 1.0)
POSITIVE_BORDER = (1.0, 1.0, 1.0, 1.0)

_DEFAULT_COLORMAP = label_colormap(49, seed=0.5)


def image_data(image: Image) -> Any:
    """The full-resolution array of an image layer (level 0 of a multiscale image)."""
    return image.data[0] if image.multiscale else image.data


def labels_geometry(image: Image, plan: AxisPlan) -> tuple[np.ndarray, np.ndarray]:
    """``scale`` and ``translate`` for label layers of the image.

    A channel axis is kept with size 1 in the labels; its scale is stretched over all channels
    and centred on them so the labels show at every channel position of the viewer.
    """
    scale = np.array(image.scale, dtype=float)
    translate = np.array(image.translate, dtype=float)
    if plan.channel_axis is not None and not plan.rgb:
        count = image_data(image).shape[plan.channel_axis]
        c = plan.channel_axis
        translate[c] += (count - 1) * scale[c] / 2
        scale[c] *= count
    return scale, translate


def axes_metadata(image: Image) -> dict[str, Any]:
    """The image's ``units`` and ``axis_labels`` as layer keyword arguments.

    Layers in one viewer must agree on units (napari warns "Inconsistent units across layers"
    and drops them otherwise), so every layer the widget makes copies them from the image.
    """
    meta: dict[str, Any] = {}
    for name in ("units", "axis_labels"):
        value = getattr(image, name, None)
        if value is not None and len(value) == image.ndim:
            meta[name] = tuple(value)
    return meta


def new_labels_layer(image: Image, plan: AxisPlan, name: str) -> Labels:
    """An empty Labels layer for the image, with its scale, translate, units and axis labels.

    Where the labels have the image's shape, the geometry of a radiology source (NIfTI header,
    DICOM series) is kept in the layer's metadata, so saving them as NIfTI writes the source's
    affine and header and the result overlays the scan in other viewers.
    """
    shape = plan.labels_shape(image_data(image).shape)
    scale, translate = labels_geometry(image, plan)
    source = (image.metadata or {}).get("radiology")
    metadata = {"radiology": source} if source and shape == image_data(image).shape else {}
    return Labels(
        np.zeros(shape, np.uint16),
        name=name,
        scale=scale,
        translate=translate,
        metadata=metadata,
        **axes_metadata(image),
    )


def new_points_layer(image: Image, plan: AxisPlan, object_id: int = 1) -> Points:
    """An empty Points layer for clicks, with ``object_id`` / ``positive`` features."""
    layer = Points(
        np.empty((0, plan.layer_ndim)),
        name=POINTS_NAME,
        ndim=plan.layer_ndim,
        scale=image.scale,
        translate=image.translate,
        **axes_metadata(image),
        features={
            "object_id": np.empty(0, dtype=np.int64),
            "positive": np.empty(0, dtype=bool),
        },
        size=max(3.0, 0.02 * min(image_data(image).shape[a] for a in (plan.y_axis, plan.x_axis))),
        border_width=0.2,
        border_width_is_relative=True,
    )
    layer.feature_defaults = {"object_id": int(object_id), "positive": True}
    return layer


def new_shapes_layer(image: Image, plan: AxisPlan, object_id: int = 1) -> Shapes:
    """An empty Shapes layer for boxes, with an ``object_id`` feature."""
    layer = Shapes(
        ndim=plan.layer_ndim,
        name=BOXES_NAME,
        scale=image.scale,
        translate=image.translate,
        **axes_metadata(image),
        features={"object_id": np.empty(0, dtype=np.int64)},
        face_color="transparent",
        edge_width=2,
    )
    layer.feature_defaults = {"object_id": int(object_id)}
    return layer


def color_of(object_id: int, output: Labels | None = None) -> np.ndarray:
    """RGBA of object ``object_id``: its label colour in ``output`` (or napari's default)."""
    cmap = output.colormap if output is not None else _DEFAULT_COLORMAP
    return np.asarray(cmap.map(np.array([object_id])), dtype=float).reshape(-1, 4)[0]


def style_points(layer: Points, output: Labels | None = None) -> None:
    """Face colour = the object's label colour; negative clicks are crosses with a red border."""
    n = len(layer.data)
    if n == 0:
        return
    ids = _feature(layer, "object_id", n, 1).astype(int)
    positive = _feature(layer, "positive", n, True).astype(bool)
    layer.face_color = np.stack([color_of(int(k), output) for k in ids])
    layer.border_color = np.where(positive[:, None], POSITIVE_BORDER, NEGATIVE_BORDER)
    layer.symbol = np.where(positive, "disc", "x")


def style_shapes(layer: Shapes, output: Labels | None = None) -> None:
    """Box outlines in the object's label colour."""
    n = len(layer.data)
    if n == 0:
        return
    ids = _feature(layer, "object_id", n, 1).astype(int)
    layer.edge_color = np.stack([color_of(int(k), output) for k in ids])


def _feature(layer: Any, name: str, n: int, default: Any) -> np.ndarray:
    features = layer.features
    if name in features:
        return np.asarray(features[name])
    return np.full(n, default)


def to_image_coords(layer: Any, coords: np.ndarray, image: Image) -> np.ndarray:
    """Coordinates of ``layer``'s data in the image's data coordinates (scale and translate)."""
    coords = np.asarray(coords, dtype=float)
    if coords.size == 0:
        return coords.reshape(0, coords.shape[-1] if coords.ndim > 1 else layer.ndim)
    world = coords * np.asarray(layer.scale) + np.asarray(layer.translate)
    return (world - np.asarray(image.translate)) / np.asarray(image.scale)


def read_prompts(
    plan: AxisPlan,
    image: Image,
    points: Points | None,
    shapes: Shapes | None,
    masks: Labels | None,
    current_object: int,
) -> PromptSet:
    """All prompts in the prompt layers, in the frame pixels of the tracked stack."""
    for layer in (points, shapes, masks):
        if layer is not None and layer.ndim != plan.layer_ndim:
            raise ValueError(
                f"prompt layer {layer.name!r} has {layer.ndim} axes but the image "
                f"{image.name!r} has {plan.layer_ndim}: create prompt layers for this image "
                "with 'New prompt layers'"
            )
    point_args = shape_args = mask_data = None
    if points is not None:
        n = len(points.data)
        coords = to_image_coords(points, points.data, image)
        ids = _feature(points, "object_id", n, current_object)
        positive = _feature(points, "positive", n, True)
        point_args = (coords, ids, positive)
    if shapes is not None:
        n = len(shapes.data)
        vertices = [to_image_coords(shapes, v, image) for v in shapes.data]
        ids = _feature(shapes, "object_id", n, current_object)
        shape_args = (vertices, list(shapes.shape_type), ids)
    if masks is not None:
        expected = plan.labels_shape(image_data(image).shape)
        if tuple(masks.data.shape) != tuple(expected):
            raise ValueError(
                f"mask prompt layer {masks.name!r} has shape {tuple(masks.data.shape)}, the "
                f"image needs {tuple(expected)}: create it with 'New prompt layers'"
            )
        mask_data = masks.data
    return collect_prompts(plan, point_args, shape_args, mask_data, current_object)
