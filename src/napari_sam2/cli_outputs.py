"""The outputs of ``napari-sam2 track``: where they go (:class:`Outputs`, planned and checked
before the model loads) and how they are written when tracking ends (labels as TIFF or NIfTI,
presence.csv, ctc/, measurements.csv; an --auto run's own through cli_auto.py)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.cli_errors import CliError

RECORD_NAME = "run.json"


@dataclass
class Outputs:
    """Final paths per format, the run record, where they go, and missing folders above them.

    Nothing is created by :meth:`plan` and the checks; :meth:`prepare` creates the folders and
    the scratch file once every input has been checked (and removes them again on failure).
    """

    paths: dict[str, Path]
    record: Path
    """The run record (``run.json`` in the folder, ``NAME.run.json`` beside ``NAME.tif``)."""
    folder: Path | None
    """The output folder of ``--out FOLDER`` (None for ``--out NAME.tif``)."""
    dest: Path
    """The folder the files go into: ``--out FOLDER`` itself, or the folder of ``NAME.tif``."""
    missing: list[Path] = field(default_factory=list)
    """Folders that do not exist yet, outermost first (created by :meth:`prepare`)."""
    created: list[Path] = field(default_factory=list)
    stale: dict[str, Path] = field(default_factory=dict)
    """Outputs of other formats that the earlier run's record lists at this --out: with
    --overwrite they are removed with the rest of that run's results, so that no output of
    another run stays beside this run's record (see :func:`_recorded_elsewhere`)."""

    @classmethod
    def plan(cls, out: str, formats: Sequence[str], labels_name: str = "labels.tif") -> Outputs:
        """Check ``--out`` and plan the output paths; creates nothing. ``labels_name`` is the
        label file's name in an output folder (``labels.nii.gz`` for NIfTI and DICOM stacks)."""
        if not out.strip():
            raise CliError(
                "--out is empty: give an output folder or a NAME.tif file "
                "(an empty name would write into the current folder)"
            )
        out_path = Path(out).expanduser()
        if out_path.suffix.lower() in (".tif", ".tiff") or _is_nifti_name(out_path):
            base = out_path.with_name(_without_label_suffix(out_path.name))
            paths = {
                "tiff": out_path,
                "csv": base.with_name(base.name + ".csv"),
                "ctc": base.with_name(base.name + "_ctc"),
                "measurements": base.with_name(base.name + ".measurements.csv"),
                "geff": base.with_name(base.name + ".geff"),
                "decisions": base.with_name(base.name + ".decisions.json"),
            }
            record = base.with_name(base.name + ".run.json")
            folder = None
            dest = out_path.parent
            if out_path.is_dir():
                raise CliError(f"--out {out_path} is a folder; give a new .tif name or a folder")
        else:
            paths = {
                "tiff": out_path / labels_name,
                "csv": out_path / "presence.csv",
                "ctc": out_path / "ctc",
                "measurements": out_path / "measurements.csv",
                "geff": out_path / "lineage.geff",
                "decisions": out_path / "decisions.json",
            }
            record = out_path / RECORD_NAME
            folder = dest = out_path
            if out_path.exists() and not out_path.is_dir():
                raise CliError(f"--out {out_path} exists and is not a folder")
        missing = []
        existing = dest.absolute()
        while not existing.exists():
            missing.append(existing)
            existing = existing.parent
        if not existing.is_dir():
            raise CliError(f"cannot create the folder of --out: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CliError(
                f"cannot write into {existing}: permission denied; choose an --out you may write"
            )
        if "tiff" in formats and _is_nifti_name(paths["tiff"]):
            _check_nibabel()  # before the model loads, not after tracking
        stale = _recorded_elsewhere(record, {f: p for f, p in paths.items() if f not in formats})
        chosen = {f: paths[f] for f in formats}
        return cls(chosen, record, folder, dest, missing[::-1], stale=stale)

    def files(self) -> list[tuple[str, Path]]:
        """Every path this run writes or, as an earlier run's output, removes, with its kind;
        the record last."""
        earlier = [(f"earlier {fmt}", path) for fmt, path in self.stale.items()]
        return [*self.paths.items(), *earlier, ("record", self.record)]

    def remove_stale(self) -> None:
        """Remove the earlier run's outputs of other formats (:attr:`stale`)."""
        from napari_sam2.outputs.export import write_error

        for path in self.stale.values():
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as err:
                raise write_error(path, err) from err

    def check_inputs(self, inputs: Sequence[tuple[str, Path]]) -> None:
        """Refuse outputs that would replace, or write into, an input; and inputs inside an
        output folder that is replaced (``ctc/``). Paths are compared resolved (symbolic links
        followed) and, where both exist, with ``os.path.samefile`` (hard links)."""
        for what, given in inputs:
            source = given.expanduser().resolve()
            for kind, path in self.files():
                target = path.resolve()
                if target == source or (
                    target.exists() and source.exists() and os.path.samefile(target, source)
                ):
                    raise CliError(
                        f"--out would overwrite the {what} {given} with the {kind} output "
                        f"{path}; choose another --out"
                    )
                if source.is_dir() and target.is_relative_to(source):
                    raise CliError(
                        f"--out would write the {kind} output {path} inside the {what} "
                        f"{given}; choose an --out outside it"
                    )
                if kind.startswith("earlier ") and source.is_relative_to(target):
                    raise CliError(
                        f"the {what} {given} lies in {path}, an output of the earlier run that "
                        "--overwrite removes; move it, or choose another --out"
                    )
                if kind in ("ctc", "geff") and source.is_relative_to(target):
                    raise CliError(
                        f"the {what} {given} lies in the folder {path}, whose files the "
                        f"{kind} output replaces; choose another --out"
                    )

    def existing(self) -> list[Path]:
        """Results of an earlier run that this run would replace."""
        return [path for _, path in self.files() if path.exists()]

    def prepare(self, shape: tuple[int, int, int]) -> Any:
        """Create the missing folders and the scratch label file inside the output folder
        (beside ``NAME.tif``), under a name unique to this run. Creating them is also the
        real test that the folder is writable, done before the model loads."""
        from napari_sam2.stack_files import ScratchLabels

        try:
            for folder in self.missing:
                try:
                    folder.mkdir()
                except FileExistsError:  # made meanwhile by another run: not ours to remove
                    continue
                self.created.append(folder)
            return ScratchLabels.create_in(self.dest, shape, np.uint16)
        except OSError as err:
            self.remove_created()
            reason = err.strerror or str(err)
            raise CliError(
                f"cannot write into {self.dest}: {reason}; choose an --out you may write"
            ) from None

    def remove_created(self) -> None:
        """Remove the folders :meth:`prepare` created, where still empty (after an error,
        so that a failed run leaves the file system as it found it)."""
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:  # not empty or already gone: keep what is there
                return
        self.created.clear()


def _recorded_elsewhere(record: Path, others: dict[str, Path]) -> dict[str, Path]:
    """Of ``others`` (the outputs of formats this run does not write), those the run record at
    ``record`` lists under their own name and that still exist: an earlier run's results."""
    try:
        outputs = json.loads(record.read_text(encoding="utf-8")).get("outputs")
    except (OSError, ValueError, AttributeError):  # no record, not JSON, not an object
        return {}
    if not isinstance(outputs, dict):
        return {}
    found = {}
    for fmt, path in others.items():
        item = outputs.get(fmt)
        if isinstance(item, dict) and item.get("path") == path.name and path.exists():
            found[fmt] = path
    return found


def _frame_letter(axes: str, frame_axis: int) -> str:
    letter = axes[frame_axis % len(axes)] if axes else "T"
    return letter if letter in "TZ" else "T"


def _in_stack_layout(labels: Any, opened: Any, axis: int) -> tuple[np.ndarray, str] | None:
    """The (T, H, W) labels of a 3-D stack propagated along axis 1 or 2, with the frame axis
    moved back to its place, and the letters of that layout (the stack's own: ``ZYX``), so
    that labels.tif overlays the stack and measurements.csv uses its voxel sizes; None where
    the labels are in the stack's layout already (axis 0) or the stack has another rank (a
    4-D stack seen through ``--fixed`` has no 3-D layout of its own to go back to).

    Frames are the stack's planes with the two other axes in their order (``stack_view``), so
    moving axis 0 back to ``axis`` restores the stack's layout exactly."""
    shape = tuple(opened.data.shape)
    if len(shape) != 3 or axis % 3 == 0 or not opened.axes.endswith("YX"):
        return None
    data = np.moveaxis(np.asarray(labels), 0, axis % 3)
    if data.shape != shape:  # not the stack's planes (cannot happen for a 3-D stack): keep
        return None
    # the first letter as axis 0 names it (T or Z; a file's Q, I or C counts as T)
    return data, _frame_letter(opened.axes, 0) + "YX"


def grey_frames(frames: Any) -> Any:
    """The (T, H, W) raw intensities the mean intensity of measurements.csv is taken over: the
    stack tracked when it is grey, or the one channel picked (``--channel k``) of a
    multi-channel stack; None for colour (2 or 3 channels), which has no single intensity."""
    from napari_sam2.tracking.frames import StackView, stack_view

    view = frames.frames
    if len(view.shape) == 3:
        return view
    if frames.channels is None or len(frames.channels) != 1:
        return None
    channel = frames.channels[0]
    if isinstance(view, StackView):  # the channel's plane of the same axes, as the widget does
        fixed = {**view.fixed, view.channel_axis: channel}
        return stack_view(view.data, view.frame_axis, None, fixed)
    return stack_view(view, 0, None, {3: channel})  # a (T, H, W, C) array taken as it is


def _geometry(opened: Any, axes: str) -> tuple[list[float] | None, list[str | None]]:
    """Scale and units of the label file, per letter of ``axes``, from the stack's metadata:
    pixel sizes in the stack's unit, and the frame interval in seconds along T."""
    interval = getattr(opened, "frame_interval", None)
    scale = [interval if a == "T" and interval else opened.sizes.get(a, 1.0) for a in axes]
    units = [
        ("second" if interval else None) if a == "T" else opened.unit if a in "ZYX" else None
        for a in axes
    ]
    if not opened.sizes and not interval:
        return None, units
    return scale, units


def _is_nifti_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _without_label_suffix(name: str) -> str:
    """``NAME`` of ``NAME.tif``, ``NAME.nii`` or ``NAME.nii.gz``."""
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _labels_name(stack: str) -> str:
    """The label file in an output folder: ``labels.nii.gz`` for a NIfTI file or DICOM series
    (written with its geometry, so it overlays the scan in 3D Slicer / ITK-SNAP), else
    ``labels.tif``."""
    from napari_sam2.radiology import is_radiology_path

    return "labels.nii.gz" if is_radiology_path(Path(stack).expanduser()) else "labels.tif"


def _check_nibabel() -> None:
    from napari_sam2.radiology import EXTRA_HINT

    try:
        import nibabel  # noqa: F401
    except ImportError:
        raise CliError(f"NIfTI label files need nibabel: {EXTRA_HINT}") from None


def _export_labels_nifti(path: Path, labels: Any, opened: Any, axis: int) -> None:
    """The (T, H, W) labels along ``axis`` back in the stack's (Z, Y, X) layout, written as
    NIfTI with the stack's geometry (its affine and header for a NIfTI or DICOM stack of that
    shape; else an affine from its voxel size and origin)."""
    from napari_sam2.radiology import write_labels_nifti

    data = np.asarray(labels)
    geometry = getattr(opened, "geometry", None)
    ndim = len(opened.axes)
    if ndim == 3:
        data = np.moveaxis(data, 0, axis % ndim)  # the frame axis back in its place
        letters = opened.axes
    else:
        letters = _frame_letter(opened.axes, axis) + "YX"
    if geometry is not None and list(geometry.get("shape", [])) != list(data.shape):
        geometry = None
    scale = [opened.sizes.get(a, 1.0) for a in letters] if opened.sizes else None
    translate = None
    if geometry is None and getattr(opened, "geometry", None) and letters == "ZYX":
        translate = opened.geometry.get("origin_lps")
    write_labels_nifti(path, data, geometry, scale=scale, translate=translate, units=opened.unit)


def _export(
    outputs: Outputs,
    labels: Any,
    table: Any,
    opened: Any,
    args: argparse.Namespace,
    image: Any = None,
    auto: Any = None,
):
    """Write every output (each atomically); the previous run's record goes first, so that a
    set interrupted half-way carries no record claiming it is complete."""
    from napari_sam2.outputs import export_ctc, export_labels_tiff
    from napari_sam2.outputs.export import write_error

    try:
        outputs.record.unlink(missing_ok=True)
        if outputs.folder is not None:
            outputs.folder.mkdir(exist_ok=True)
    except OSError as err:
        raise write_error(outputs.record, err) from err
    outputs.remove_stale()
    # presence.csv, ctc/ and the --auto outputs count the propagated frames (T, H, W)
    frame_axes = _frame_letter(opened.axes, args.axis) + "YX"
    frame_scale, frame_units = _geometry(opened, frame_axes)
    # labels.tif and measurements.csv follow the stack: for a 3-D stack propagated along
    # axis 1 or 2 they are written in its own layout, measured on the stack itself
    stack_labels, axes, scale, units = labels, frame_axes, frame_scale, frame_units
    restored = None
    if {"tiff", "measurements"} & set(outputs.paths):  # (it reads all the labels)
        restored = _in_stack_layout(labels, opened, args.axis)
    if restored is not None:
        stack_labels, axes = restored
        scale, units = _geometry(opened, axes)
        image = opened.data  # a 3-D stack is grey: its raw intensities in that layout
    for fmt, path in outputs.paths.items():
        try:
            if auto is not None and auto.write(fmt, path, labels, frame_scale, frame_units):
                continue  # ctc/ with parents, lineage.geff, decisions.json
            if fmt == "tiff" and _is_nifti_name(path):
                _export_labels_nifti(path, labels, opened, args.axis)
            elif fmt == "tiff":
                export_labels_tiff(stack_labels, path, axes=axes, scale=scale, units=units)
            elif fmt == "csv":
                table.to_csv(path)
            elif fmt == "measurements":
                _write_measurements(
                    path, stack_labels, image, axes, scale, units, getattr(args, "measure", "auto")
                )
            else:
                export_ctc(labels, path)
        except OSError as err:
            raise write_error(path, err) from err  # names the output, says what to do


def _write_measurements(
    path: Path,
    labels: Any,
    image: Any,
    axes: str,
    scale: Sequence[float] | None,
    units: Sequence[str | None],
    kind: str,
) -> None:
    """``measurements.csv`` of the labels with ``axes``: a volume's objects (``kind`` z, or
    auto with Z first) or a time-lapse's objects per frame. ``image``: the grey intensities
    in the labels' layout (:func:`grey_frames`), or None (colour: the column is left empty)."""
    from napari_sam2.outputs.measurements import measure

    axis = kind if kind in ("z", "t") else ("z" if axes[0] == "Z" else "t")
    grey = image if image is not None and len(image.shape) == 3 else None
    measure(labels, scale=scale, units=units, image=grey, axis=axis).to_csv(path)
