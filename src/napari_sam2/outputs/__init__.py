"""Tracker results to label arrays with gaps, presence tables and files.

The command line and the napari widget both drive the tracker through this package:

>>> writer = LabelsWriter(labels)                 # (T, H, W) integer array, written in place
>>> table = PresenceTable()
>>> for result in propagate_into(tracker, writer, table, direction="both"):
...     pass                                       # report progress here
>>> export_labels_tiff(labels, "labels.tif", axes="TYX"); table.to_csv("presence.csv")
>>> measure(labels, scale=(5.0, 0.7, 0.7), units="mm", axis="z").to_csv("measurements.csv")
>>> write_geff("lineage.geff", labels, lineage)   # automatic tracking: the lineage graph
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
from napari_sam2.outputs.lineage import TrackNode, track_nodes, tracks_layer_data, write_geff
from napari_sam2.outputs.measurements import (
    FrameMeasurement,
    MeasurementTable,
    VolumeMeasurement,
    measure,
    write_measurements_csv,
)
from napari_sam2.outputs.presence import PresenceRow, PresenceTable
from napari_sam2.outputs.propagate import DIRECTIONS, propagate_into

__all__ = [
    "DIRECTIONS",
    "FrameMeasurement",
    "LabelsWriter",
    "MeasurementTable",
    "OutputWriteError",
    "PresenceRow",
    "PresenceTable",
    "TrackNode",
    "VolumeMeasurement",
    "ctc_tracks",
    "export_ctc",
    "export_labels_tiff",
    "frame_planes",
    "measure",
    "propagate_into",
    "track_nodes",
    "tracks_layer_data",
    "write_atomically",
    "write_geff",
    "write_labels_tiff",
    "write_measurements_csv",
    "write_text_atomically",
]
