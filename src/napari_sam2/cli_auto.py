"""``napari-sam2 track STACK --auto``: every object found and tracked by itself.

The run is the one of :func:`napari_sam2.cli.run_track` (the same checks before the model loads,
scratch labels, signals, atomic outputs, run record and exit statuses); this module adds what
differs: the options, the seeds (a label file, or segment everything on the start frame), the
driver (:class:`napari_sam2.tracking.track_all.TrackAll`, forward from ``--start``) and three
outputs beside those of ``track --out``: the CTC folder with each daughter's parent,
``lineage.geff`` and ``decisions.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

__all__ = ["AUTO_FORMATS", "AutoOptionError", "AutoRun", "add_auto_arguments"]

AUTO_FORMATS = ("ctc", "geff", "decisions")
"""Outputs an --auto run writes besides --format's (default tiff csv)."""

SETTING_OPTIONS = (
    "discover_every",
    "end_after",
    "new_min_area",
    "new_max_overlap",
    "division_min_ratio",
    "division_min_part_area",
    "division_frames",
)
"""Options that set the TrackAllSettings field of the same name."""

AUTO_OPTIONS = ("seeds", "no_divisions", "points_per_side", *SETTING_OPTIONS)
"""Options that only apply with --auto (argparse destinations)."""


def add_auto_arguments(parser: argparse.ArgumentParser) -> None:
    """The --auto options of ``napari-sam2 track``."""
    group = parser.add_argument_group(
        "automatic tracking (--auto)",
        "Find every object by itself: seeds on the start frame (--seeds, or segment "
        "everything), new objects every K frames, divisions, ends. Tracks forward from --start "
        "(default 0); also writes ctc/ (with parents), lineage.geff and decisions.json.",
    )
    group.add_argument(
        "--auto",
        action="store_true",
        help="track every object, found by itself; --prompts is then not needed",
    )
    group.add_argument(
        "--seeds",
        metavar="LABELS.tif",
        help="label image of the objects on the start frame ((Y, X), or (T, Y, X) whose "
        "start-frame plane is used); label k becomes object k. Default: segment everything",
    )
    group.add_argument(
        "--discover-every",
        type=int,
        metavar="K",
        help="look for new objects on every K-th frame after the start (default 5; 0: never)",
    )
    group.add_argument(
        "--no-divisions",
        action="store_true",
        help="never divide an object that splits in two",
    )
    group.add_argument(
        "--end-after",
        type=int,
        metavar="M",
        help="an object absent on more than M consecutive frames ends (default 3)",
    )
    group.add_argument(
        "--new-min-area",
        type=int,
        metavar="PIXELS",
        help="smallest area of a new object or segment-everything seed (default 30)",
    )
    group.add_argument(
        "--new-max-overlap",
        type=float,
        metavar="FRACTION",
        help="a found object is new if at most this fraction of it is already labelled "
        "(default 0.2)",
    )
    group.add_argument(
        "--division-min-ratio",
        type=float,
        metavar="RATIO",
        help="a split divides only if the smaller part is at least RATIO of the larger "
        "(default 0.3)",
    )
    group.add_argument(
        "--division-min-part-area",
        type=int,
        metavar="PIXELS",
        help="a split divides only if each part has at least PIXELS (default 15)",
    )
    group.add_argument(
        "--division-frames",
        type=int,
        metavar="N",
        help="a split divides only after it lasted N consecutive frames (default 2)",
    )
    group.add_argument(
        "--points-per-side",
        type=int,
        metavar="N",
        help="segment everything with an N x N grid of point prompts (default 32)",
    )


class AutoOptionError(ValueError):
    """A refused --auto option or seed file: one line, exit status 2, nothing written (the
    command line reports ValueErrors before tracking so; this module does not import it)."""


def _cli_error(message: str) -> Exception:
    return AutoOptionError(message)


def check_options(args: argparse.Namespace) -> None:
    """Refuse auto options without --auto, and --auto with prompts or a reverse direction."""
    auto = bool(getattr(args, "auto", False))
    if not auto:
        given = [
            "--" + name.replace("_", "-")
            for name in AUTO_OPTIONS
            if getattr(args, name, None) not in (None, False)
        ]
        if given:
            raise _cli_error(f"{', '.join(given)} only apply with --auto")
        if not getattr(args, "prompts", None):
            raise _cli_error(
                "nothing to track: give --prompts PROMPTS (the objects to track), or --auto "
                "to find and track every object by itself"
            )
        return
    if getattr(args, "prompts", None):
        raise _cli_error(
            "--auto finds the objects by itself: give --seeds LABELS.tif for objects of your "
            "own on the start frame, not --prompts"
        )
    if args.direction == "reverse":
        raise _cli_error("--auto tracks forward from --start: --direction reverse is not possible")


class AutoRun:
    """The --auto part of one ``napari-sam2 track`` run."""

    def __init__(self, args: argparse.Namespace) -> None:
        from napari_sam2.tracking.track_all import TrackAllSettings

        self.args = args
        self.start = 0 if args.start is None else int(args.start)
        values: dict[str, Any] = {}
        for name in SETTING_OPTIONS:
            if getattr(args, name) is not None:
                values[name] = getattr(args, name)
        if args.no_divisions:
            values["divisions"] = False
        if args.points_per_side is not None:
            if args.points_per_side < 1:
                raise _cli_error(f"--points-per-side must be >= 1, got {args.points_per_side}")
            values["everything"] = {"points_per_side": args.points_per_side}
        try:
            self.settings = replace(TrackAllSettings(), **values)
        except ValueError as err:
            flag = str(err).split(" ", 1)[0].replace("_", "-")
            raise _cli_error(f"--{flag} {str(err).split(' ', 1)[1]}") from None
        self.seeds: Path | None = Path(args.seeds).expanduser() if args.seeds else None
        self.plane: Any = None
        self.driver: Any = None

    def inputs(self) -> list[tuple[str, Path]]:
        """Files the run reads besides the stack and the model."""
        return [("seed labels", self.seeds)] if self.seeds is not None else []

    def check(self, shape: tuple[int, int, int], outputs: Any) -> None:
        """Before the model loads: the start frame, the seeds against the frames, and a
        ``lineage.geff`` path that is not something else."""
        from napari_sam2.api import read_seed_labels
        from napari_sam2.outputs.lineage import _is_geff

        if not 0 <= self.start < shape[0]:
            raise _cli_error(f"--start {self.start} is beyond the stack's {shape[0]} frames")
        if self.seeds is not None:
            if not self.seeds.exists():
                raise _cli_error(f"--seeds {self.seeds}: file does not exist")
            try:
                self.plane = read_seed_labels(self.seeds, self.start, shape[1:])
            except (ValueError, TypeError, OSError) as err:
                raise _cli_error(f"--seeds: {err}") from None
        geff = outputs.paths.get("geff")
        if geff is not None and geff.exists() and not _is_geff(geff):
            raise _cli_error(f"{geff} exists and is not a GEFF folder: choose another --out")

    def frames(self, num_frames: int) -> int:
        """How many frames the run visits."""
        from napari_sam2.tracking import propagation_frames

        return len(propagation_frames(num_frames, self.start, False, self.args.max_frames))

    def run(
        self, tracker: Any, writer: Any, table: Any, should_stop: Callable[[], bool]
    ) -> Iterator:
        """Seed, then track forward; yields each frame once it is written into the labels."""
        from napari_sam2.tracking.track_all import TrackAll

        self.driver = TrackAll(tracker, self.settings, presence=table)
        if self.plane is not None:
            self.driver.seed_from_labels(self.start, self.plane)
        else:
            self.driver.seed_from_everything(self.start)
        steps = self.driver.run(start_frame=self.start, max_frames=self.args.max_frames)
        try:
            for step in steps:
                t = int(step.frame_index)
                writer.labels[writer.index(t)] = step.labels
                writer.frames_written.add(t)
                yield step
                if should_stop():
                    return
        finally:
            steps.close()

    # --- outputs -----------------------------------------------------------------------------

    @property
    def parents(self) -> dict[int, int]:
        if self.driver is None:
            return {}
        spans = self.driver.lineage.spans
        return {k: s.parent_id for k, s in spans.items() if s.parent_id}

    def write(
        self,
        fmt: str,
        path: Path,
        labels: Any,
        scale: Sequence[float] | None,
        units: Sequence[str | None],
    ) -> bool:
        """Write output ``fmt`` if it is one of the auto outputs; returns whether it was."""
        from napari_sam2.outputs import export_ctc, write_geff, write_text_atomically

        if fmt == "ctc":
            export_ctc(labels, path, parents=self.parents)
        elif fmt == "geff":
            lineage = self.driver.lineage if self.driver is not None else None
            if scale is None:
                write_geff(path, labels, lineage)
            else:
                given = list(units)
                if given[0] is None and float(scale[0]) == 1.0:
                    given[0] = "frame"
                write_geff(path, labels, lineage, scale=scale, units=given)
        elif fmt == "decisions":
            write_text_atomically(path, json.dumps(self.summary(), indent=1) + "\n")
        else:
            return False
        return True

    def summary(self) -> dict[str, Any]:
        """What ``decisions.json`` holds: the settings, the seeds, every track and every
        decision with its reason."""
        driver = self.driver
        spans = driver.lineage.spans.values() if driver is not None else []
        return {
            "napari_sam2_decisions": 1,
            "start_frame": self.start,
            "seeds": str(self.seeds) if self.seeds is not None else "segment everything",
            "settings": {**asdict(self.settings), "everything": dict(self.settings.everything)},
            "tracks": [asdict(s) for s in sorted(spans, key=lambda s: s.track_id)],
            "decisions": [d.to_dict() for d in (driver.decisions if driver else [])],
        }

    def record_state(self) -> dict[str, Any]:
        """A short account for ``run.json``."""
        driver = self.driver
        if driver is None:
            return {"auto": {"tracks": 0, "divisions": 0}}
        return {
            "auto": {
                "tracks": len(driver.lineage),
                "divisions": len(driver.lineage.divisions()),
                "decisions": len(driver.decisions),
            }
        }
