"""The ``napari-sam2`` command line: track prompted objects through a stack, headless.

    napari-sam2 track STACK --prompts POINTS.csv --out OUT [options]

Everything (stack, axes, channels, prompts, model, device, output paths) is checked before the
model runs; on any error nothing under OUT is touched. Labels are collected in a scratch file
next to OUT and exported when tracking ends. Ctrl-C stops tracking and still writes valid
outputs holding the frames done so far (exit status 130). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("tiff", "ctc", "csv")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to report in one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="Segment and track objects through time-lapses and volumes with SAM 2.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "track",
        help="track prompted objects through a stack and write labels",
        description="Track the objects prompted in PROMPTS through STACK and write labels with "
        "gaps where an object is absent.",
    )
    p.add_argument("stack", help="the stack: .tif/.tiff, .npy or .zarr")
    p.add_argument(
        "--prompts", required=True, help="napari Points CSV (object_id, positive) or JSON"
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (labels.tif, presence.csv, ctc/), or NAME.tif for the label file "
        "(then NAME.csv and NAME_ctc/ beside it)",
    )
    p.add_argument("--model", default="sam2.1_hiera_tiny", help="official model name")
    p.add_argument("--checkpoint", help="checkpoint .pt file (default: official weights)")
    p.add_argument("--config", help="model config JSON (format of mini/config.json)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights (pipeline tests and memory benchmarks only)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
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
    p.add_argument("--direction", choices=("forward", "reverse", "both"), default="both")
    p.add_argument("--start", type=int, help="start frame (default: first / last prompted)")
    p.add_argument("--max-frames", type=int, help="frames after the start frame, per direction")
    p.add_argument(
        "--contrast-limits", type=float, nargs=2, metavar=("LO", "HI"), help="intensity range"
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
        help="fill mask holes up to AREA pixels (default 8, decision D4; 0: off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


@dataclass
class Outputs:
    """Final paths per format, and the folder to create."""

    paths: dict[str, Path]
    folder: Path | None

    @classmethod
    def plan(cls, out: str, formats: Sequence[str]) -> Outputs:
        out_path = Path(out)
        if out_path.suffix.lower() in (".tif", ".tiff"):
            base = out_path.with_suffix("")
            paths = {
                "tiff": out_path,
                "csv": base.with_name(base.name + ".csv"),
                "ctc": base.with_name(base.name + "_ctc"),
            }
            folder = None
            parent = out_path.parent
        else:
            paths = {
                "tiff": out_path / "labels.tif",
                "csv": out_path / "presence.csv",
                "ctc": out_path / "ctc",
            }
            folder = out_path
            parent = out_path.parent
            if out_path.exists() and not out_path.is_dir():
                raise CliError(f"--out {out_path} exists and is not a folder")
        if not parent.resolve().is_dir():
            raise CliError(f"the folder of --out ({parent}) does not exist")
        return cls({f: paths[f] for f in formats}, folder)

    def scratch_dir(self) -> Path:
        return self.folder.parent if self.folder else self.paths[next(iter(self.paths))].parent


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
    """A one-line frame counter on stderr."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done = total, quiet, 0
        self.start = time.perf_counter()

    def step(self, frame: int) -> None:
        self.done += 1
        if self.quiet:
            return
        rate = (time.perf_counter() - self.start) / self.done
        sys.stderr.write(
            f"\rtracking: {self.done}/{self.total} frames (frame {frame}, {rate:.2f} s/frame)"
        )
        sys.stderr.flush()

    def end(self) -> None:
        if not self.quiet and self.done:
            sys.stderr.write("\n")


def _expected_frames(
    num_frames: int, prompted: Sequence[int], direction: str, start: int | None, most: int | None
) -> int:
    most = num_frames if most is None else most
    total = 0
    if direction in ("forward", "both"):
        s = min(prompted) if start is None else start
        total += min(s + most, num_frames - 1) - s + 1
    if direction in ("reverse", "both"):
        s = max(prompted) if start is None else start
        total += 0 if s == 0 else s - max(s - most, 0) + 1
    return total


def _make_tracker(model: Any, frames: Any, fill_hole_area: int, autocast: Any) -> Any:
    """The tracker the CLI drives (tests replace this with a scripted stand-in)."""
    from napari_sam2.tracking.tracker import Tracker

    # A headless run visits each frame once (twice only between prompts with "both"):
    # caching image features would hold memory for little gain.
    return Tracker(
        model, frames, fill_hole_area=fill_hole_area, dtype=autocast, feature_cache_bytes=0
    )


def run_track(args: argparse.Namespace) -> int:
    from napari_sam2.api import load_model, prepare_frames
    from napari_sam2.model import MODEL_NAMES, SAM2Config
    from napari_sam2.outputs import (
        LabelsWriter,
        PresenceTable,
        export_ctc,
        export_labels_tiff,
        propagate_into,
    )
    from napari_sam2.stack_files import ScratchLabels, open_stack
    from napari_sam2.tracking.device import autocast_dtype, resolve_device
    from napari_sam2.tracking.prompts_io import apply_prompts, check_prompts, read_prompts

    formats = list(dict.fromkeys(args.format or ["tiff", "csv"]))
    outputs = Outputs.plan(args.out, formats)
    if args.fill_holes < 0:
        raise CliError(f"--fill-holes must be >= 0, got {args.fill_holes}")
    if args.max_frames is not None and args.max_frames < 0:
        raise CliError(f"--max-frames must be >= 0, got {args.max_frames}")
    if args.config is None and args.model not in MODEL_NAMES:
        raise CliError(f"unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if args.config is not None and args.checkpoint is None and not args.random_weights:
        raise CliError("--config needs --checkpoint (or --random-weights)")
    device = resolve_device(args.device)

    fixed = _parse_fixed(args.fixed)
    opened = open_stack(args.stack)
    channel_axis = args.channel_axis
    if channel_axis is None:
        for letter in ("C", "S"):
            if letter in opened.axes and opened.axes.index(letter) != args.axis % len(opened.axes):
                channel_axis = opened.axes.index(letter)
                break
    if args.config is not None:
        import json

        config = SAM2Config.from_dict(json.loads(Path(args.config).read_text())["values"])
    else:
        config = SAM2Config.from_name(args.model)
    frames = prepare_frames(
        opened.data,
        int(config.image_size),
        frame_axis=args.axis,
        channel_axis=channel_axis,
        channels=args.channel,
        fixed=fixed,
        contrast_limits=args.contrast_limits,
    )
    shape = (len(frames), frames.height, frames.width)
    records = read_prompts(args.prompts, frame_axis=args.axis, fixed=fixed)
    check_prompts(records, *shape)
    if args.start is not None and not 0 <= args.start < shape[0]:
        raise CliError(f"--start {args.start} is beyond the stack's {shape[0]} frames")
    if max(r.object_id for r in records) > 65535:
        raise CliError("object ids above 65535 do not fit 16-bit label files")

    model = load_model(
        config if args.config else args.model,
        args.checkpoint,
        device,
        random_weights=args.random_weights,
    )
    tracker = _make_tracker(model, frames, args.fill_holes, autocast_dtype(device))
    apply_prompts(tracker, records)

    scratch_dir = outputs.scratch_dir()
    handle = tempfile.NamedTemporaryFile(
        prefix=".napari-sam2-", suffix=".labels", dir=scratch_dir, delete=False
    )
    handle.close()
    labels = ScratchLabels(handle.name, shape, np.uint16)
    table = PresenceTable()
    writer = LabelsWriter(labels)
    total = _expected_frames(
        shape[0], [r.frame for r in records], args.direction, args.start, args.max_frames
    )
    progress = Progress(total, args.quiet)
    interrupted = False
    try:
        try:
            for result in propagate_into(
                tracker,
                writer,
                table,
                start_frame=args.start,
                direction=args.direction,
                max_frames=args.max_frames,
            ):
                progress.step(result.frame_index)
        except KeyboardInterrupt:
            interrupted = True
        progress.end()
        if outputs.folder is not None:
            outputs.folder.mkdir(exist_ok=True)
        axes = _frame_letter(opened.axes, args.axis) + "YX"
        scale = None
        if opened.sizes:
            scale = [opened.sizes.get(a, 1.0) for a in axes]
        for fmt, path in outputs.paths.items():
            if fmt == "tiff":
                export_labels_tiff(labels, path, axes=axes, scale=scale, unit=opened.unit)
            elif fmt == "csv":
                table.to_csv(path)
            else:
                export_ctc(labels, path)
    finally:
        labels.close()
        frames.close()
    done = len(writer.frames_written)
    written = ", ".join(str(p) for p in outputs.paths.values())
    if interrupted:
        print(
            f"napari-sam2: interrupted: {done} of {shape[0]} frames tracked and written to "
            f"{written}; the other frames are empty",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"napari-sam2: {done} frames written to {written}", file=sys.stderr)
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-sam2`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    _give_freed_tensors_back()
    try:
        if args.command == "track":
            return run_track(args)
    except KeyboardInterrupt:
        print("napari-sam2: interrupted before tracking started; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CliError, ValueError, TypeError, IndexError, OSError, RuntimeError) as err:
        print(f"napari-sam2: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
