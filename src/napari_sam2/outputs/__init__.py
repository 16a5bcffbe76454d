"""Tracker results to label arrays with gaps, presence tables and files.

The command line and the napari widget both drive the tracker through this package:

>>> writer = LabelsWriter(labels)                 # (T, H, W) integer array, written in place
>>> table = PresenceTable()
>>> for result in propagate_into(tracker, writer, table, direction="both"):
...     pass                                       # report progress here
>>> export_labels_tiff(labels, "labels.tif", axes="TYX"); table.to_csv("presence.csv")
"""

from napari_sam2.outputs.export import (
    OutputWriteError,
    ctc_tracks,
    export_ctc,
    export_labels_tiff,
    write_atomically,
    write_labels_tiff,
    write_text_atomically,
)
from napari_sam2.outputs.labels import LabelsWriter, frame_planes
from napari_sam2.outputs.presence import PresenceRow, PresenceTable
from napari_sam2.outputs.propagate import DIRECTIONS, propagate_into

__all__ = [
    "DIRECTIONS",
    "LabelsWriter",
    "OutputWriteError",
    "PresenceRow",
    "PresenceTable",
    "ctc_tracks",
    "export_ctc",
    "export_labels_tiff",
    "frame_planes",
    "propagate_into",
    "write_atomically",
    "write_labels_tiff",
    "write_text_atomically",
]
