"""The form sections of the SAM 2 dock widget: controls only, no behaviour.

Each panel is a ``QGroupBox`` that builds its controls and lays them out; the
:class:`~napari_sam2.widget._widget.SAM2Widget` adopts the controls as its own attributes and
connects them. Nothing here knows about layers, sessions or workers.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
)

from napari_sam2.tracking.intensity import CT_WINDOWS
from napari_sam2.widget.session import DIRECTIONS
from napari_sam2.widget.timeline import Timeline

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")  # as napari_sam2.tracking.device.PRECISIONS
WINDOW_PRESETS = tuple(CT_WINDOWS)
"""The CT windows of the Image panel, by name (width / level in CT_WINDOWS)."""
DEFAULT_MODEL = "sam2.1_hiera_tiny"
IMAGE_SIZES = ("auto", "256", "512", "768", "1024")
"""The image size choices: the model's own, or a size for a fine-tune that is not registered."""

__all__ = [
    "DEFAULT_MODEL",
    "DEVICES",
    "IMAGE_SIZES",
    "WINDOW_PRESETS",
    "ExportPanel",
    "ImagePanel",
    "MeasurementsPanel",
    "ModelPanel",
    "PromptsPanel",
    "PropagatePanel",
    "TrackAllPanel",
]


class ImagePanel(QGroupBox):
    """The image to track, the axis to track along and the channel(s) to use."""

    def __init__(self) -> None:
        super().__init__("Image")
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.axis_combo = QComboBox()
        self.channel_axis_combo = QComboBox()
        self.channel_combo = QComboBox()
        self.axes_info = QLabel()
        self.axes_info.setWordWrap(True)
        self.window_combo = QComboBox()
        self.window_combo.addItem("as shown", None)
        for name in WINDOW_PRESETS:
            self.window_combo.addItem(name, name)
        self.window_combo.addItem("MR (0.5-99.5 % of non-zero)", "mr")
        self.window_combo.setToolTip(
            "Sets the image layer's contrast limits to a CT window (width / level in HU) or the "
            "MR percentile rule; the model sees the image as the layer shows it"
        )
        form.addRow("image", self.image_combo)
        form.addRow("track along", self.axis_combo)
        form.addRow("channel axis", self.channel_axis_combo)
        form.addRow("channel", self.channel_combo)
        form.addRow("window", self.window_combo)
        form.addRow(self.axes_info)


class ModelPanel(QGroupBox):
    """The model (a named checkpoint: official or a registered fine-tune, or a checkpoint file),
    the image size it runs at, its download and the device.

    Controls only: :class:`~napari_sam2.widget.model_view.ModelView` connects them to the
    model controller.
    """

    def __init__(self) -> None:
        super().__init__("Model")
        from napari_sam2.weights import CHECKPOINT_NAMES

        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(CHECKPOINT_NAMES))
        self.model_combo.setCurrentText(DEFAULT_MODEL)
        self.model_combo.setToolTip(
            "Official SAM 2 checkpoints and registered fine-tunes (MedSAM2 for medical images, "
            "micro-sam for light microscopy); hover an entry for its source, download size, "
            "licence and image size"
        )
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("optional: a .pt checkpoint file")
        self.checkpoint_edit.setToolTip(
            "A checkpoint file in the official format: its model is recognised from the file "
            "(or give the model in the list). Applied on Return."
        )
        self.image_size_combo = QComboBox()
        self.image_size_combo.addItems(list(IMAGE_SIZES))
        self.image_size_combo.setToolTip(
            "The input size the network runs at. auto: the model's own (1024 px; a registered "
            "fine-tune's, e.g. 512 px for MedSAM2). Choose a size for a fine-tune's checkpoint "
            "file that is not in the list, e.g. 512 for a MedSAM2-style file."
        )
        self.browse_button = QPushButton("...")
        self.browse_button.setMaximumWidth(30)
        self.browse_button.setToolTip("Choose a checkpoint file")
        row = QHBoxLayout()
        row.addWidget(self.checkpoint_edit)
        row.addWidget(self.browse_button)
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)  # long states wrap instead of widening the dock
        self.download_button = QPushButton("Download")
        self.download_bar = QProgressBar()
        self.download_bar.setVisible(False)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISIONS))
        self.precision_combo.setToolTip(
            "auto: bfloat16 autocast on GPUs and on CPUs where it measures faster, such as "
            "those with AMX (about three times as fast there; masks agree with float32 up to a "
            "few edge pixels), float32 on other CPUs. float32 or bfloat16 forces it. A change "
            "starts a new tracking session (as a new device does); the model stays loaded."
        )
        form.addRow("model", self.model_combo)
        form.addRow("checkpoint", row)
        form.addRow("image size", self.image_size_combo)
        # a wrapping label gets its full height only as a row of its own (not inside a box
        # layout), so the state line is never cut off
        form.addRow("state", self.model_status)
        download_row = QHBoxLayout()
        download_row.addWidget(self.download_bar, 1)
        download_row.addWidget(self.download_button)
        form.addRow(download_row)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)


class PromptsPanel(QGroupBox):
    """The prompt layers (clicks, boxes, masks) and the object being prompted."""

    def __init__(self) -> None:
        super().__init__("Prompts")
        form = QFormLayout(self)
        self.points_combo = QComboBox()
        self.shapes_combo = QComboBox()
        self.masks_combo = QComboBox()
        self.new_prompts_button = QPushButton("New prompt layers")
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 65535)
        self.next_object_button = QPushButton("Next object (n)")
        self.polarity_button = QPushButton()
        self.polarity_button.setCheckable(True)
        self.polarity_button.setToolTip("Positive clicks add to the object, negative ones cut")
        self.remove_object_button = QPushButton("Remove object")
        obj_row = QHBoxLayout()
        obj_row.addWidget(self.object_spin)
        obj_row.addWidget(self.next_object_button)
        click_row = QHBoxLayout()
        click_row.addWidget(self.polarity_button)
        click_row.addWidget(self.remove_object_button)
        form.addRow(self.new_prompts_button)
        form.addRow("clicks", self.points_combo)
        form.addRow("boxes", self.shapes_combo)
        form.addRow("masks", self.masks_combo)
        form.addRow("object", obj_row)
        form.addRow(click_row)


class PropagatePanel(QGroupBox):
    """The output layer, the run settings, run / cancel, progress, the status line (the last
    error, its whole message as tooltip) and the per-object timeline."""

    def __init__(self) -> None:
        super().__init__("Propagate")
        form = QFormLayout(self)
        self.output_combo = QComboBox()
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(list(DIRECTIONS))
        self.start_spin = QSpinBox()
        self.start_spin.setRange(-1, 1_000_000)
        self.start_spin.setValue(-1)
        self.start_spin.setSpecialValueText("auto")
        self.start_spin.setToolTip(
            "auto: the first (reverse: last) frame whose prompts changed since the last run, "
            "so a correction re-propagates from its own frame"
        )
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(0, 1_000_000)
        self.frames_spin.setSpecialValueText("all")
        self.frames_spin.setToolTip("how many frames after the start frame (all: to the end)")
        self.propagate_button = QPushButton("Propagate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        run_row = QHBoxLayout()
        run_row.addWidget(self.propagate_button)
        run_row.addWidget(self.cancel_button)
        self.progress_label = QLabel()
        self.progress_label.setToolTip("frames done in the current pass, speed and time left")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("color: #ff7060")
        self.status_label.setVisible(False)
        self.timeline = Timeline()
        form.addRow("output", self.output_combo)
        form.addRow("direction", self.direction_combo)
        form.addRow("start frame", self.start_spin)
        form.addRow("frames", self.frames_spin)
        form.addRow(run_row)
        form.addRow(self.progress_label)
        form.addRow(self.progress_bar)
        form.addRow(self.status_label)
        form.addRow(self.timeline)


class ExportPanel(QGroupBox):
    """Export buttons: label TIFF, Cell Tracking Challenge folder, presence table."""

    def __init__(self) -> None:
        super().__init__("Export")
        row = QHBoxLayout(self)
        self.export_tiff_button = QPushButton("TIFF")
        self.export_ctc_button = QPushButton("CTC")
        self.export_csv_button = QPushButton("CSV")
        for button in (self.export_tiff_button, self.export_ctc_button, self.export_csv_button):
            row.addWidget(button)


class MeasurementsPanel(QGroupBox):
    """The measurements of the output labels: what to measure them as, the Measure button, a
    summary line and a sortable table whose rows lead to their frame when clicked."""

    def __init__(self) -> None:
        super().__init__("Measurements")
        layout = QVBoxLayout(self)
        self.kind_combo = QComboBox()
        for text, kind in (("auto", "auto"), ("volume (z)", "z"), ("time-lapse (t)", "t")):
            self.kind_combo.addItem(text, kind)
        self.kind_combo.setToolTip(
            "volume: per object its volume, slices and longest in-plane diameter (RECIST); "
            "time-lapse: per object and frame its area, centroid and mean intensity; auto: "
            "from the name (or unit) of the tracked axis"
        )
        self.measure_button = QPushButton("Measure")
        row = QHBoxLayout()
        row.addWidget(self.kind_combo, 1)
        row.addWidget(self.measure_button)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(120)
        self.table.verticalHeader().setVisible(False)
        layout.addLayout(row)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table)


class TrackAllPanel(QGroupBox):
    """Automatic tracking: segment everything on the viewer's frame, and track every object
    from there (new objects every k frames, divisions, ends after m absent frames), with run /
    cancel, progress, the status line and the run's one-line summary.

    Controls only: :class:`~napari_sam2.widget.track_all_view.TrackAllView` connects them to
    the :class:`~napari_sam2.widget.track_all_controller.TrackAllController`.
    """

    def __init__(self) -> None:
        super().__init__("Track all")
        form = QFormLayout(self)
        self.segment_button = QPushButton("Segment all on this frame")
        self.segment_button.setToolTip(
            "Segment everything SAM 2 finds on the frame the viewer shows; each object not "
            "labelled there yet becomes a new label in the output layer (other frames and "
            "labels stay)"
        )
        self.discover_check = QCheckBox("find new objects every")
        self.discover_check.setChecked(True)
        self.discover_spin = QSpinBox()
        self.discover_spin.setRange(1, 100_000)
        self.discover_spin.setValue(5)
        self.discover_spin.setSuffix(" frames")
        discover_row = QHBoxLayout()
        discover_row.addWidget(self.discover_check)
        discover_row.addWidget(self.discover_spin)
        self.divisions_check = QCheckBox("divisions")
        self.divisions_check.setChecked(True)
        self.divisions_check.setToolTip(
            "An object that splits into two lasting parts ends, and two daughters start"
        )
        self.end_spin = QSpinBox()
        self.end_spin.setRange(0, 100_000)
        self.end_spin.setValue(3)
        self.end_spin.setSuffix(" absent frames")
        self.end_spin.setToolTip("An object absent on more than this many frames in a row ends")
        self.grid_spin = QSpinBox()
        self.grid_spin.setRange(1, 256)
        self.grid_spin.setValue(32)
        self.grid_spin.setToolTip("Segment-everything prompts a grid of this many points a side")
        self.quality_spin = QDoubleSpinBox()
        self.quality_spin.setRange(0.0, 1.0)
        self.quality_spin.setSingleStep(0.05)
        self.quality_spin.setValue(0.8)
        self.quality_spin.setToolTip("Masks whose predicted IoU is below this are dropped")
        self.stability_spin = QDoubleSpinBox()
        self.stability_spin.setRange(0.0, 1.0)
        self.stability_spin.setSingleStep(0.05)
        self.stability_spin.setValue(0.95)
        self.stability_spin.setToolTip("Masks whose stability score is below this are dropped")
        self.min_area_spin = QSpinBox()
        self.min_area_spin.setRange(0, 10_000_000)
        self.min_area_spin.setValue(30)
        self.min_area_spin.setSuffix(" px")
        self.min_area_spin.setToolTip("Smaller objects are ignored")
        self.seeds_label = QLabel(
            "Starts on the viewer's frame from its labels; where it has none, from everything "
            "SAM 2 finds there."
        )
        self.seeds_label.setWordWrap(True)
        self.track_button = QPushButton("Track all")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        run_row = QHBoxLayout()
        run_row.addWidget(self.track_button)
        run_row.addWidget(self.cancel_button)
        self.progress_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("color: #ff7060")
        self.status_label.setVisible(False)
        form.addRow(self.segment_button)
        form.addRow(discover_row)
        form.addRow(self.divisions_check)
        form.addRow("end after", self.end_spin)
        form.addRow("grid points", self.grid_spin)
        form.addRow("min quality", self.quality_spin)
        form.addRow("min stability", self.stability_spin)
        form.addRow("min area", self.min_area_spin)
        form.addRow(self.seeds_label)
        form.addRow(run_row)
        form.addRow(self.progress_label)
        form.addRow(self.progress_bar)
        form.addRow(self.summary_label)
        form.addRow(self.status_label)
