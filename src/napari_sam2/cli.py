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

This module runs the command; beside it: the options (cli_parser.py), the outputs
(cli_outputs.py), the run record (cli_record.py), stop signals (cli_signals.py), the
model options (cli_model.py), progress (cli_progress.py), exit statuses and errors
(cli_errors.py).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_sam2.cli_errors import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_READER_GONE,
    SETUP_ERRORS,
    TRACKING_ERRORS,
    CliError,
)
from napari_sam2.cli_model import (
    CHECKPOINT_SUFFIXES,
    _load_checkpoint_model,
    _model_path,
    _read_config,
)
from napari_sam2.cli_outputs import RECORD_NAME, Outputs, _export, _labels_name, grey_frames
from napari_sam2.cli_parser import CONFIG_HELP, DEFAULT_MODEL, FORMATS, build_parser
from napari_sam2.cli_progress import Progress, _planned_frames, propagation_passes
from napari_sam2.cli_record import RunRecord
from napari_sam2.cli_record import _file_facts as _file_facts  # batch.py takes it from here
from napari_sam2.cli_signals import RunStopped, StopSignals, _signal_name, _stop_text

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONFIG_HELP",
    "DEFAULT_MODEL",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_PARTIAL",
    "FORMATS",
    "RECORD_NAME",
    "SETUP_ERRORS",
    "TRACKING_ERRORS",
    "CliError",
    "Outputs",
    "Progress",
    "RunRecord",
    "RunStopped",
    "StopSignals",
    "build_parser",
    "main",
    "propagation_passes",
    "run_models",
    "run_track",
]


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


def _parse_fixed(items: Sequence[str]) -> dict[int, int]:
    fixed = {}
    for item in items:
        try:
            axis, index = item.split("=")
            fixed[int(axis)] = int(index)
        except ValueError:
            raise CliError(f"--fixed takes AXIS=INDEX with integers, got {item!r}") from None
    return fixed


def _check_numeric(data: Any, stack: str) -> None:
    """Refuse a stack of complex, date, text or structured values as bad input (exit status
    2), before anything is written: the frame source would raise a TypeError for it, which
    the command cannot tell from a bug."""
    import numpy as np

    from napari_sam2.tracking.frames import NUMERIC_KINDS

    dtype = np.dtype(data.dtype)
    if dtype.kind not in NUMERIC_KINDS:
        raise CliError(
            f"{stack} holds values of type {dtype}, which have no intensity to track: give a "
            "stack of integers or floats (e.g. the real part or the magnitude of complex data)"
        )


def _make_tracker(model: Any, frames: Any, fill_hole_area: int, autocast: Any) -> Any:
    """The tracker the CLI drives (tests replace this with a scripted stand-in)."""
    from napari_sam2.tracking.tracker import Tracker

    # A headless run visits each frame once (twice only between prompts with "both"):
    # caching image features would hold memory for little gain.
    return Tracker(
        model, frames, fill_hole_area=fill_hole_area, dtype=autocast, feature_cache_bytes=0
    )


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
    _check_numeric(opened.data, args.stack)
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
            _export(outputs, labels, table, opened, args, image=grey_frames(frames), auto=auto)
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


def _computes_float32_on_cpu(args: argparse.Namespace) -> bool:
    """Whether ``track`` or ``batch`` with these options computes in float32 on the CPU (a
    device that is not there is left to the command to report)."""
    from napari_sam2.tracking.device import autocast_dtype, resolve_device

    try:
        device = resolve_device(args.device)
        return device.type == "cpu" and autocast_dtype(device, args.precision or "auto") is None
    except ValueError:
        return False


def _map_large_tensors() -> None:
    """Let glibc allocate tensors of 1 MB and more with mmap (``mallopt``), so that freeing
    them gives the memory back to the system: for float32 runs on the CPU. Only from
    :func:`main`, which owns its process (a library must not change the allocator of the
    application that imports it).

    By default glibc raises its mmap threshold after the first large tensor is freed and serves
    later ones from the heap, whose fragmentation grows the resident memory of a float32 run
    by 1.6 MB a frame even with the tracker's trim after every frame (benchmarks/README.md).
    A fixed threshold keeps it flat, at the price of page faults on fresh memory for every
    large tensor: bfloat16 frames would be 1.6x slower, and their tracker keeps them flat by
    trimming every few frames (``memory_trim.HeapTrimmer``), so they leave it alone.
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
    if args.command in ("track", "batch") and _computes_float32_on_cpu(args):
        _map_large_tensors()
    signals = StopSignals()
    signals.install()
    try:
        if args.command == "track":
            return run_track(args, signals)
        if args.command == "models":
            status = run_models(args)
            sys.stdout.flush()  # a reader gone shows here, not at exit
            return status
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
    except BrokenPipeError:
        # no error line: what reads the output has its lines and is gone; the output goes
        # nowhere from now on, or Python's last flush at exit reports the pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
    except (CliError, *TRACKING_ERRORS) as err:
        print(f"napari-sam2: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signals.restore()
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
