"""napari-sam2: SAM 2 segmentation and tracking for time-lapses and volumes in napari.

``napari_sam2.track(stack, prompts, model=...)`` runs the whole pipeline headless (see
``docs/cli.md``); ``napari_sam2.track_all(stack, model=...)`` finds and tracks every object by
itself, divisions included; ``napari_sam2.measure(labels, scale=..., units=..., axis="z")``
measures the objects of a label array (volumes and RECIST diameters, or areas per frame);
``napari_sam2.track_batch(manifest, out, ...)`` tracks the stacks of a manifest on
dask.distributed (``docs/batch.md``). They are imported on first use so that napari's plugin
discovery, which imports this package, does not load torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["measure", "track", "track_all", "track_batch"]


def __getattr__(name: str) -> Any:
    if name == "track":
        from napari_sam2.api import track

        return track
    if name == "track_all":
        from napari_sam2.api import track_all

        return track_all
    if name == "track_batch":
        from napari_sam2.batch import run_batch

        return run_batch
    if name == "measure":
        from napari_sam2.outputs.measurements import measure

        return measure
    raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")
