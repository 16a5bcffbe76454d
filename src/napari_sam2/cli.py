"""The ``napari-sam2`` command line: track prompted objects through a stack, headless.

    napari-sam2 track STACK --prompts POINTS.csv --out OUT [options]
    napari-sam2 track STACK --auto [--seeds LABELS.tif] --out OUT [options]   (cli_auto.py)

Nothing the user has is lost: every check that needs no model (options, outputs against every
input, the stack, the prompts, earlier results under OUT, a writable output folder) runs before
the model loads, and on any error nothing under OUT is touched (folders created for OUT are
removed again). Labels are collected in a scratch file inside the output folder, under a name
unique to the run, and exported when tracking ends; every output is written under a temporary
name and renamed when complete, and a run record (``run.json``) is written last. Ctrl-C
(SIGINT) and SIGTERM stop tracking and still write valid outputs holding the frames done (exit
status 130 / 143); so does a frame that cannot be read (exit status 3). See docs/cli.md and
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("tiff", "ctc", "csv")
EXIT_FAILED = 1
"""The outputs could not be written (a full disk, say); the message names the file."""
EXIT_ERROR = 2
"""Refused: bad input or options, or earlier results without --overwrite; nothing written."""
EXIT_PARTIAL = 3
"""Tracking stopped on an error (a frame that cannot be read): the outputs hold the frames
done before it."""
EXIT_INTERRUPTED = 130
"""SIGINT (Ctrl-C); SIGTERM gives 143 and SIGHUP 129 (128 + the signal number, as shells
report a process ended by that signal)."""
RECORD_NAME = "run.json"

SETUP_ERRORS = (ValueError, TypeError, IndexError, OSError, RuntimeError)
"""Errors reported in one line, exit status 2, when they happen before tracking."""
TRACKING_ERRORS = (OSError, ValueError, RuntimeError, MemoryError)
"""Errors that stop tracking with a one-line message; any other one is a bug and its
traceback is printed too (the frames done are written either way)."""


class CliError(Exception):
    """An error to report in one line, without a traceback."""


DEFAULT_MODEL = "sam2.1_hiera_tiny"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

CONFIG_HELP = (
    "model configuration JSON for a network of another size or resolution, used with "
    '--checkpoint: an object (optionally under a key "values") with the keys image_size, '
    "hidden_dim, mem_dim, trunk.embed_dim, trunk.num_heads, trunk.stages, "
    "trunk.global_att_blocks, trunk.window_spec, trunk.window_pos_embed_bkg_spatial_size, "
    "memory_attention.num_layers, memory_attention.dim_feedforward, model.no_obj_embed_spatial, "
    "model.proj_tpos_enc_in_obj_ptrs and model.add_tpos_enc_to_obj_ptrs"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``napari-sam2`` command."""
    from napari_sam2 import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="Segment and track objects through time-lapses and volumes with SAM 2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "track",
        help="track prompted objects through a stack and write labels",
        description="Track the objects prompted in PROMPTS through STACK and write labels with "
        "gaps where an object is absent.",
    )
    p.add_argument(
        "stack",
        help="the stack: .tif/.tiff, .npy, .zarr, NIfTI (.nii, .nii.gz) or DICOM (a folder of "
        "slices, or one .dcm file of the series); NIfTI and DICOM open as (Z, Y, X), axial "
        "slices first",
    )
    p.add_argument(
        "--prompts",
        help="prompt file: a napari Points layer saved as CSV (columns object_id and positive "
        "optional) or a JSON list of points, boxes and masks per frame and object (needed "
        "unless --auto)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (labels.tif, presence.csv, ctc/; labels.nii.gz for a NIfTI or "
        "DICOM stack), or NAME.tif or NAME.nii.gz for the label file (then NAME.csv and "
        "NAME_ctc/ beside it); missing folders are created",
    )
    p.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help=f"a model name (default {DEFAULT_MODEL}; also sam2.1_hiera_small, "
        "sam2.1_hiera_base_plus, sam2.1_hiera_large, sam2_hiera_*, and the registered "
        "fine-tunes medsam2_latest, medsam2_* and micro_sam_hvit_t_cells: `napari-sam2 models` "
        "lists them) or the path of a checkpoint file of one of these architectures",
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="PIXELS",
        help="input size of the network for a --model name or checkpoint file, e.g. 512 for a "
        "MedSAM2-style fine-tune not in the registry (default: the model's own; a multiple "
        "of 32)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint .pt file for the --model name or the --config "
        "(default: the official weights, downloaded once)",
    )
    p.add_argument("--config", metavar="CONFIG.json", help=CONFIG_HELP)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights (pipeline tests and memory benchmarks only)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto (default): bfloat16 autocast on GPUs and on CPUs with AMX or AVX512-BF16, "
        "float32 elsewhere; float32 or bfloat16 forces it",
    )
    p.add_argument("--axis", type=int, default=0, help="axis to propagate along (default 0)")
    p.add_argument("--channel-axis", type=int, help="channel axis of the stack, if any")
    p.add_argument(
        "--channel",
        type=int,
        nargs="+",
        help="channel(s) to use: one (grey), two (red, green) or three (RGB)",
    )
    p.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="AXIS=INDEX",
        help="index for another axis, e.g. --fixed 1=12 (repeatable)",
    )
    p.add_argument(
        "--direction",
        choices=("forward", "reverse", "both"),
        default="both",
        help="forward from the first prompted frame, reverse from the last one, or both "
        "(default; forward first)",
    )
    p.add_argument("--start", type=int, help="start frame (default: first / last prompted)")
    p.add_argument("--max-frames", type=int, help="frames after the start frame, per direction")
    intensity = p.add_mutually_exclusive_group()
    intensity.add_argument(
        "--contrast-limits", type=float, nargs=2, metavar=("LO", "HI"), help="intensity range"
    )
    intensity.add_argument(
        "--window",
        metavar="NAME|W,L",
        help="intensity window instead of --contrast-limits: a CT preset (soft-tissue, "
        "abdomen, lung, brain, mediastinum, bone), WIDTH,LEVEL in the stack's units (e.g. "
        "400,40 for Hounsfield units), or mr (0.5-99.5 percentiles of the non-zero voxels); "
        "default: 0..255 for 8-bit stacks, else robust percentiles",
    )
    p.add_argument(
        "--measure",
        nargs="?",
        const="auto",
        choices=("auto", "z", "t"),
        help="also write measurements.csv: per object its volume, slice range and longest "
        "in-plane diameter (z: a volume), or its area, centroid and mean intensity per frame "
        "(t: a time-lapse); auto (the default) follows the stack's axes (Z: volume)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        nargs="+",
        action="extend",
        help="outputs: tiff (labels), ctc (Cell Tracking Challenge), csv (presence); "
        "default tiff csv",
    )
    p.add_argument(
        "--fill-holes",
        type=int,
        default=8,
        metavar="AREA",
        help="fill mask holes up to AREA pixels (default 8, as SAM 2 does on CUDA; 0: off)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run under --out (without it such a run is "
        "refused before any work)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    from napari_sam2.cli_auto import add_auto_arguments

    add_auto_arguments(p)  # napari-sam2 track --auto
    models = sub.add_parser(
        "models",
        help="list the models --model takes by name",
        description="List the registered models: official SAM 2 checkpoints and fine-tunes, "
        "with download size, weights licence, input size, and whether they are on this machine "
        "(cached, or in a $NAPARI_SAM2_WEIGHTS folder) or need a download.",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    from napari_sam2.batch import add_parser as add_batch_parser

    add_batch_parser(sub)  # napari-sam2 batch: many stacks on dask.distributed
    return parser


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
        return cls({f: paths[f] for f in formats}, record, folder, dest, missing[::-1])

    def files(self) -> list[tuple[str, Path]]:
        """Every path this run writes, with its kind, the record last."""
        return [*self.paths.items(), ("record", self.record)]

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
                folder.mkdir(exist_ok=True)
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


def _input_files(args: argparse.Namespace, model_path: Path | None) -> list[tuple[str, Path]]:
    """Every file the run reads, with what it is: stack, prompts (and the mask files a JSON
    prompt file names), config, checkpoint, --model path."""
    inputs = [("stack", Path(args.stack))]
    if args.prompts:
        inputs.append(("prompt file", Path(args.prompts)))
        inputs += [("mask prompt", path) for path in _mask_files(Path(args.prompts))]
    if getattr(args, "seeds", None):
        inputs.append(("seed labels", Path(args.seeds)))
    if args.config is not None:
        inputs.append(("config", Path(args.config)))
    if args.checkpoint is not None:
        inputs.append(("checkpoint", Path(args.checkpoint)))
    if model_path is not None:
        inputs.append(("--model checkpoint", model_path))
    return inputs


def _mask_files(prompts: Path) -> list[Path]:
    """The mask TIFFs a JSON prompt file refers to (relative to the file); none when it is not
    readable JSON (reading the prompts reports that, with the line)."""
    import json

    if prompts.suffix.lower() != ".json" or not prompts.is_file():
        return []
    try:
        items = json.loads(prompts.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return []
    if isinstance(items, dict):
        items = items.get("prompts", [])
    if not isinstance(items, list):
        return []
    return [
        prompts.parent / item["mask"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("mask"), str)
    ]


class RunStopped(BaseException):
    """A stop signal (SIGINT, SIGTERM) that ends the run at once.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP during a run: Ctrl-C; what ``timeout``, ``kill``, SLURM and
    Kubernetes send; a closed terminal or ssh session.

    Before tracking (``phase == "setup"``) a signal stops the run at once: nothing has been
    written. While tracking, the first signal asks the tracking to stop after the frame in
    progress, so the outputs hold every frame finished; a second one stops it at once. While
    the outputs are written, signals are only noted: the export finishes first (dropping it
    would lose the work done), then the run exits with 128 + the signal number.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.phase = "setup"
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over the signals (only the main thread may; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)  # SIGHUP does not exist on Windows
            # an ignored signal stays ignored: ``nohup`` and background jobs of a shell
            # ignore SIGHUP / SIGINT so that the run outlives the terminal
            if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """Whether a stop signal has arrived (polled between frames)."""
        return self.received is not None

    def _say(self, text: str) -> None:
        # os.write, not print: a signal handler may run while sys.stderr is mid-write
        try:
            os.write(2, f"\nnapari-sam2: {text}\n".encode())
        except OSError:
            pass

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
        name = signal.Signals(signum).name
        if self.phase == "setup":
            raise RunStopped(signum)
        if self.phase == "tracking":
            if not first:
                raise RunStopped(signum)
            self._say(
                f"{name}: stopping after the frame in progress and writing the frames done "
                "(send it again to stop at once)"
            )
        elif self.phase == "export":
            self._say(f"{name}: finishing the outputs first, then stopping")


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _file_facts(path: Path) -> dict[str, Any]:
    """Path, size and modification time of an input, for the run record."""
    facts: dict[str, Any] = {"path": str(path.expanduser().absolute())}
    try:
        stat = path.stat()
    except OSError:
        return facts
    if path.is_file():
        facts["bytes"] = stat.st_size
    facts["modified"] = _iso(stat.st_mtime)
    return facts


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """What a set of outputs came from, written last beside them (``run.json``).

    A set whose record is missing or says ``"complete": false`` is not the finished result of
    one run: the run was stopped, failed while writing, or was killed between two outputs
    (the previous record is removed before the first output is replaced).
    """

    run_id: str
    started: str
    argv: list[str]
    inputs: list[tuple[str, Path]] = field(default_factory=list)

    @classmethod
    def begin(cls, argv: Sequence[str]) -> RunRecord:
        now = time.time()
        run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{os.getpid()}-"
        return cls(run_id + secrets.token_hex(3), _iso(now), list(argv))

    def write(self, outputs: Outputs, args: argparse.Namespace, **state: Any) -> None:
        """Write the record atomically (``state``: frames, frames_written, complete, ...)."""
        from napari_sam2 import __version__
        from napari_sam2.outputs import write_text_atomically

        options = {
            k: v
            for k, v in vars(args).items()
            if k not in ("command", "stack", "prompts", "out", "argv")
        }
        written = {}
        for fmt, path in outputs.paths.items():
            if path.exists():
                # the name only: the set of outputs can be moved as a whole
                written[fmt] = {**_file_facts(path), "path": path.name}
        record = {
            "napari_sam2_run": 1,
            "run_id": self.run_id,
            "version": __version__,
            "started": self.started,
            "finished": _iso(time.time()),
            "command": ["napari-sam2", *self.argv],
            "inputs": [{"role": what, **_file_facts(path)} for what, path in self.inputs],
            "options": options,
            "outputs": written,
            **state,
        }
        write_text_atomically(outputs.record, json.dumps(record, indent=1, default=str) + "\n")


def _parse_fixed(items: Sequence[str]) -> dict[int, int]:
    fixed = {}
    for item in items:
        try:
            axis, index = item.split("=")
            fixed[int(axis)] = int(index)
        except ValueError:
            raise CliError(f"--fixed takes AXIS=INDEX with integers, got {item!r}") from None
    return fixed


def _frame_letter(axes: str, frame_axis: int) -> str:
    letter = axes[frame_axis % len(axes)] if axes else "T"
    return letter if letter in "TZ" else "T"


class Progress:
    """Frame counters on stderr, one line per propagation pass ("forward", "reverse").

    ``passes`` gives each pass's name and the number of results it yields (from
    :func:`napari_sam2.tracking.propagation_frames`), so every count ends at its total. With
    ``--direction both`` the frames between the first and the last prompt are visited by both
    passes; the final message counts distinct frames.
    """

    def __init__(self, passes: Sequence[tuple[str, int]], quiet: bool) -> None:
        # a pass that visits nothing (reverse from frame 0) gets no line
        self.passes = [(name, total) for name, total in passes if total > 0]
        self.quiet = quiet
        self.index, self.done = 0, 0
        self.start = time.perf_counter()
        self.open_line = False

    def step(self, frame: int) -> None:
        """Count one yielded result on ``frame``."""
        if self.index < len(self.passes) - 1 and self.done >= self.passes[self.index][1]:
            self._close_line()
            self.index, self.done = self.index + 1, 0
            self.start = time.perf_counter()
        self.done += 1
        if self.quiet or not self.passes:
            return
        name, total = self.passes[self.index]
        rate = (time.perf_counter() - self.start) / self.done
        sys.stderr.write(
            f"\rtracking {name}: {self.done}/{total} frames (frame {frame}, {rate:.2f} s/frame)"
        )
        sys.stderr.flush()
        self.open_line = True

    def _close_line(self) -> None:
        if self.open_line:
            sys.stderr.write("\n")
            self.open_line = False

    def end(self) -> None:
        """Finish the current line (after the last result or an interruption)."""
        self._close_line()


def propagation_passes(
    num_frames: int,
    prompted: Sequence[int],
    direction: str,
    start: int | None,
    max_frames: int | None,
) -> list[tuple[str, int]]:
    """Each pass of ``direction`` with the number of frames it visits, in order.

    The start frame resolves as the tracker resolves it: ``start``, else the first prompted
    frame forward and the last one in reverse.
    """
    from napari_sam2.tracking import propagation_frames

    passes = []
    if direction in ("forward", "both"):
        s = min(prompted) if start is None else start
        passes.append(("forward", len(propagation_frames(num_frames, s, False, max_frames))))
    if direction in ("reverse", "both"):
        s = max(prompted) if start is None else start
        passes.append(("reverse", len(propagation_frames(num_frames, s, True, max_frames))))
    return passes


def _make_tracker(model: Any, frames: Any, fill_hole_area: int, autocast: Any) -> Any:
    """The tracker the CLI drives (tests replace this with a scripted stand-in)."""
    from napari_sam2.tracking.tracker import Tracker

    # A headless run visits each frame once (twice only between prompts with "both"):
    # caching image features would hold memory for little gain.
    return Tracker(
        model, frames, fill_hole_area=fill_hole_area, dtype=autocast, feature_cache_bytes=0
    )


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


def _model_path(model: str | None) -> Path | None:
    """``--model`` as a checkpoint path, or None when it is a model name."""
    from napari_sam2.model import FINE_TUNE_NAMES, MODEL_NAMES

    if model is None or model in MODEL_NAMES or model in FINE_TUNE_NAMES:
        return None
    path = Path(model)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in model or os.sep in model:
        return path
    return path if path.exists() else None


def _read_config(path: str) -> Any:
    """The ``--config`` file as a SAM2Config; every problem is a one-line CliError."""
    from napari_sam2.model import SAM2Config

    try:
        values = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise CliError(f"--config {path}: file does not exist") from None
    except OSError as err:
        raise CliError(f"--config {path}: cannot read it: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"--config {path} is not valid JSON: {err}") from None
    if isinstance(values, dict) and "values" in values:
        values = values["values"]
    if not isinstance(values, dict):
        raise CliError(
            f"--config {path} must hold a JSON object of configuration values (optionally "
            'under the key "values"); see docs/cli.md, "Model configuration"'
        )
    try:
        return SAM2Config.from_dict(values, name=Path(path).stem)
    except KeyError as err:
        raise CliError(f"--config {path}: {err.args[0]}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise CliError(f"--config {path}: a value has the wrong type or size: {err}") from None


def _load_checkpoint_model(path: Path, device: Any, image_size: int | None = None) -> Any:
    """The network of an official architecture recognised from its checkpoint file, at
    ``image_size`` (None: the official size, or a registered fine-tune's by its file name)."""
    from napari_sam2.api import load_model

    try:
        return load_model(str(path), None, device, image_size=image_size)
    except (ValueError, KeyError, TypeError) as err:
        raise CliError(
            f"--model {path}: {err}. A checkpoint of another size or resolution needs its "
            f"configuration: give --config CONFIG.json --checkpoint {path} instead"
        ) from None


def _stop_text(stop: BaseException | int) -> str:
    """Why tracking stopped early, for the message and the run record."""
    if isinstance(stop, int):
        return _signal_name(stop)
    return str(stop) or type(stop).__name__


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
    axes = _frame_letter(opened.axes, args.axis) + "YX"
    scale, units = _geometry(opened, axes)
    for fmt, path in outputs.paths.items():
        try:
            if auto is not None and auto.write(fmt, path, labels, scale, units):
                continue  # ctc/ with parents, lineage.geff, decisions.json
            if fmt == "tiff" and _is_nifti_name(path):
                _export_labels_nifti(path, labels, opened, args.axis)
            elif fmt == "tiff":
                export_labels_tiff(labels, path, axes=axes, scale=scale, units=units)
            elif fmt == "csv":
                table.to_csv(path)
            elif fmt == "measurements":
                _write_measurements(
                    path, labels, image, axes, scale, units, getattr(args, "measure", "auto")
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
    """``measurements.csv``: a volume's objects (``kind`` z, or auto with a Z frame axis) or
    a time-lapse's objects per frame. The mean intensity is that of the grey stack tracked
    (left empty for colour stacks, whose channels have no single intensity)."""
    from napari_sam2.outputs.measurements import measure

    axis = kind if kind in ("z", "t") else ("z" if axes[0] == "Z" else "t")
    grey = image if image is not None and len(image.shape) == 3 else None
    measure(labels, scale=scale, units=units, image=grey, axis=axis).to_csv(path)


def run_track(args: argparse.Namespace, signals: StopSignals | None = None) -> int:
    """Run ``napari-sam2 track``; returns the exit status.

    Order: every check that needs no model (options, inputs against outputs, stack, prompts,
    earlier results, a writable output folder) first; then the model loads; then tracking
    writes into a scratch file inside the output folder; then the outputs and, last, the run
    record. ``signals`` (installed by :func:`main`) says when a stop signal has arrived.
    """
    from napari_sam2 import cli_auto
    from napari_sam2.api import load_model, prepare_frames
    from napari_sam2.model import FINE_TUNE_NAMES, MODEL_NAMES, SAM2Config
    from napari_sam2.outputs import LabelsWriter, OutputWriteError, PresenceTable, propagate_into
    from napari_sam2.stack_files import open_stack
    from napari_sam2.tracking.device import autocast_dtype, resolve_device
    from napari_sam2.tracking.prompts_io import apply_prompts, check_prompts, read_prompts

    signals = signals or StopSignals()
    record = RunRecord.begin(getattr(args, "argv", None) or sys.argv[1:])
    formats = list(dict.fromkeys(args.format or ["tiff", "csv"]))
    if getattr(args, "measure", None):
        formats.append("measurements")
    cli_auto.check_options(args)
    auto = cli_auto.AutoRun(args) if getattr(args, "auto", False) else None
    if auto is not None:
        formats = list(dict.fromkeys([*formats, *cli_auto.AUTO_FORMATS]))
    outputs = Outputs.plan(args.out, formats, labels_name=_labels_name(args.stack))
    if args.fill_holes < 0:
        raise CliError(f"--fill-holes must be >= 0, got {args.fill_holes}")
    if args.max_frames is not None and args.max_frames < 0:
        raise CliError(f"--max-frames must be >= 0, got {args.max_frames}")
    if getattr(args, "window", None) is not None:
        from napari_sam2.tracking.intensity import parse_window

        try:
            parse_window(args.window)
        except ValueError as err:
            raise CliError(f"--window {args.window}: {err}") from None
    model_path = _model_path(args.model)
    if model_path is not None:
        if args.config is not None or args.checkpoint is not None:
            raise CliError(
                "--model PATH names the checkpoint already: give either --model PATH, or "
                "--config CONFIG.json with --checkpoint PATH"
            )
        if args.random_weights:
            raise CliError("--random-weights takes a model name or --config, not a checkpoint")
        if not model_path.is_file():
            raise CliError(f"--model {model_path}: checkpoint file does not exist")
    elif args.config is not None:
        if args.model is not None:
            raise CliError("give either --model or --config, not both")
        if args.checkpoint is None and not args.random_weights:
            raise CliError("--config needs --checkpoint (or --random-weights)")
    elif (args.model or DEFAULT_MODEL) not in (*MODEL_NAMES, *FINE_TUNE_NAMES):
        raise CliError(
            f"unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}, or a "
            f"fine-tune: {', '.join(FINE_TUNE_NAMES)} (`napari-sam2 models` lists them), or "
            "give the path of a checkpoint file"
        )
    image_size_option = getattr(args, "image_size", None)
    if image_size_option is not None and args.config is not None:
        raise CliError("--config CONFIG.json sets the image size: give image_size there")
    record.inputs = _input_files(args, model_path)
    outputs.check_inputs(record.inputs)
    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_file():
        raise CliError(f"--checkpoint {args.checkpoint}: file does not exist")
    device = resolve_device(args.device)

    fixed = _parse_fixed(args.fixed)
    opened = open_stack(args.stack, frame_axis=args.axis)
    channel_axis = args.channel_axis
    if channel_axis is None:
        for letter in ("C", "S"):
            if letter in opened.axes and opened.axes.index(letter) != args.axis % len(opened.axes):
                channel_axis = opened.axes.index(letter)
                break
    records = read_prompts(args.prompts, frame_axis=args.axis, fixed=fixed) if auto is None else []
    config = _read_config(args.config) if args.config is not None else None
    if config is not None:
        image_size = int(config.image_size)
    else:
        # a --model PATH is one of the official models, which share their input size; it is
        # checked again once the checkpoint is read
        name = DEFAULT_MODEL if model_path is not None else (args.model or DEFAULT_MODEL)
        try:
            image_size = int(SAM2Config.from_name(name, image_size=image_size_option).image_size)
        except (TypeError, ValueError) as err:
            raise CliError(f"--image-size {image_size_option}: {err}") from None

    def frames_of(size: int, limits: Any = None) -> Any:
        return prepare_frames(
            opened.data,
            size,
            frame_axis=args.axis,
            channel_axis=channel_axis,
            channels=args.channel,
            fixed=fixed,
            contrast_limits=limits if limits is not None else args.contrast_limits,
            window=getattr(args, "window", None) if limits is None else None,
        )

    frames = frames_of(image_size)
    labels = None
    try:
        shape = (len(frames), frames.height, frames.width)
        if auto is None:
            check_prompts(records, *shape)
        else:
            auto.check(shape, outputs)  # the start frame, the seeds, lineage.geff
        if args.start is not None and not 0 <= args.start < shape[0]:
            raise CliError(f"--start {args.start} is beyond the stack's {shape[0]} frames")
        if max((r.object_id for r in records), default=0) > 65535:
            raise CliError("object ids above 65535 do not fit 16-bit label files")
        earlier = outputs.existing()
        if earlier and not args.overwrite:
            names = ", ".join(p.name for p in earlier)
            raise CliError(
                f"{outputs.dest} already holds results of an earlier run ({names}); pass "
                "--overwrite to replace them, or choose another --out"
            )
        labels = outputs.prepare(shape)  # the folders and the scratch file: writable?

        if model_path is not None:
            model = _load_checkpoint_model(model_path, device, image_size_option)
        else:
            model = load_model(
                config if config is not None else (args.model or DEFAULT_MODEL),
                args.checkpoint,
                device,
                random_weights=args.random_weights,
                image_size=image_size_option,
            )
        if int(model.config.image_size) != frames.image_size:
            limits = frames.contrast_limits
            frames.close()
            frames = frames_of(int(model.config.image_size), limits)
        tracker = _make_tracker(
            model,
            frames,
            args.fill_holes,
            autocast_dtype(device, getattr(args, "precision", "auto")),
        )
        table = PresenceTable()
        writer = LabelsWriter(labels)
        if auto is None:
            apply_prompts(tracker, records)
            passes = propagation_passes(
                shape[0], [r.frame for r in records], args.direction, args.start, args.max_frames
            )
            planned = _planned_frames(shape[0], records, args)
        else:
            planned = auto.frames(shape[0])
            passes = [("forward", planned)]
        progress = Progress(passes, args.quiet)
        stop: BaseException | int | None = None
        signals.phase = "tracking"
        try:
            if auto is None:
                results = propagate_into(
                    tracker,
                    writer,
                    table,
                    start_frame=args.start,
                    direction=args.direction,
                    max_frames=args.max_frames,
                    should_stop=signals.requested,
                )
            else:  # seeds (segment everything: the model's first work), then frame by frame
                results = auto.run(tracker, writer, table, signals.requested)
            for result in results:
                progress.step(result.frame_index)
        except KeyboardInterrupt:
            stop = signal.SIGINT
        except RunStopped as stopped:
            stop = stopped.signum
        except Exception as err:  # noqa: BLE001 - any failure keeps the frames done
            stop = err
        signals.phase = "export"
        if stop is None and signals.received is not None:
            stop = signals.received
        progress.end()
        if isinstance(stop, Exception) and not isinstance(stop, TRACKING_ERRORS):
            traceback.print_exception(stop, file=sys.stderr)  # a bug: keep its traceback

        done = len(writer.frames_written)
        state = {
            "frames": shape[0],
            "frames_planned": planned,
            "frames_written": done,
            "complete": stop is None,
            "stopped": None if stop is None else _stop_text(stop),
            "contrast_limits": list(frames.contrast_limits),
            **(auto.record_state() if auto is not None else {}),
        }
        try:
            _export(outputs, labels, table, opened, args, image=frames.frames, auto=auto)
        except OSError as err:
            message = str(err) if isinstance(err, OutputWriteError) else f"cannot write: {err}"
            try:  # best effort: say what is there, if the disk lets us
                record.write(outputs, args, **{**state, "complete": False, "error": message})
            except OSError:
                pass
            print(f"napari-sam2: error: {message}", file=sys.stderr)
            if stop is not None:
                print(f"napari-sam2: (tracking had stopped: {_stop_text(stop)})", file=sys.stderr)
            return EXIT_FAILED
        record.write(outputs, args, **state)
        signals.phase = "done"
    except BaseException:
        if labels is not None:
            labels.close()
            labels = None
        outputs.remove_created()
        raise
    finally:
        if labels is not None:
            labels.close()
        frames.close()

    written = ", ".join(str(p) for p in outputs.paths.values())
    if isinstance(stop, int):
        what = "interrupted" if stop == signal.SIGINT else f"stopped by {_signal_name(stop)}"
        print(
            f"napari-sam2: {what}: {done} of {planned} frames tracked and written to {written}; "
            f"the other frames are empty ({outputs.record.name}: complete false)",
            file=sys.stderr,
        )
        return 128 + int(stop)
    if stop is not None:
        print(
            f"napari-sam2: stopped: {_stop_text(stop)}. The {done} of {planned} frames tracked "
            f"before it are written to {written}; the other frames are empty "
            f"({outputs.record.name}: complete false)",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    if signals.received is not None:  # arrived while the outputs were written
        name = _signal_name(signals.received)
        print(
            f"napari-sam2: {name} arrived while the outputs were written; they were finished "
            f"first and are complete: {done} frames in {written}",
            file=sys.stderr,
        )
        return 128 + int(signals.received)
    if not args.quiet:
        print(f"napari-sam2: {done} frames written to {written}", file=sys.stderr)
    return 0


def _planned_frames(num_frames: int, records: Sequence[Any], args: argparse.Namespace) -> int:
    """How many distinct frames the run visits (both directions overlap between prompts)."""
    from napari_sam2.tracking import propagation_frames

    prompted = [r.frame for r in records]
    visited: set[int] = set()
    if args.direction in ("forward", "both"):
        start = min(prompted) if args.start is None else args.start
        visited.update(propagation_frames(num_frames, start, False, args.max_frames))
    if args.direction in ("reverse", "both"):
        start = max(prompted) if args.start is None else args.start
        visited.update(propagation_frames(num_frames, start, True, args.max_frames))
    return len(visited)


def _give_freed_tensors_back() -> None:
    """Let glibc allocate tensors of 1 MB and more with mmap, so that freeing them gives the
    memory back to the system.

    By default glibc raises its mmap threshold after the first large tensor is freed and serves
    later ones from the heap, whose fragmentation grows the resident memory of a long run by
    about a megabyte a frame (benchmarks/README.md). A fixed threshold keeps it flat.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 1 << 20)


def run_models(args: argparse.Namespace) -> int:
    """``napari-sam2 models``: every registered name with its download size, licence, input
    size and state on this machine; a table, or JSON lines with ``--json``."""
    from napari_sam2.weights import CHECKPOINT_NAMES, WeightsError, checkpoint_info
    from napari_sam2.weights import checkpoint_status as status_of

    rows = []
    for name in CHECKPOINT_NAMES:
        info = checkpoint_info(name)
        try:
            state = status_of(name)
        except (WeightsError, OSError) as err:
            state = f"unknown ({err})"
        rows.append(
            {
                "name": name,
                "size_mb": None if info.size_bytes is None else round(info.size_bytes / 1e6),
                "licence": info.licence,
                "image_size": info.image_size,
                "state": state,
                "architecture": info.architecture,
                "source": info.source,
                "description": info.title(),
                "url": info.url,
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("name", "size", "licence", "px", "state", "description")
    table = [
        (
            row["name"],
            "?" if row["size_mb"] is None else f"{row['size_mb']} MB",
            row["licence"],
            str(row["image_size"]),
            row["state"],
            row["description"],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header) - 1)]
    for line in [header, *table]:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-sam2`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _give_freed_tensors_back()
    signals = StopSignals()
    signals.install()
    try:
        if args.command == "track":
            return run_track(args, signals)
        if args.command == "models":
            return run_models(args)
        if args.command == "batch":
            from napari_sam2.batch import run_batch_command

            return run_batch_command(args)
    except (KeyboardInterrupt, RunStopped) as stopped:
        signum = getattr(stopped, "signum", signal.SIGINT)
        print(
            f"napari-sam2: {_signal_name(signum)} before tracking started; nothing written",
            file=sys.stderr,
        )
        return 128 + int(signum)
    except (CliError, *TRACKING_ERRORS) as err:
        print(f"napari-sam2: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signals.restore()
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
