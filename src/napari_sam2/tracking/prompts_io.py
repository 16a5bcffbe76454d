"""Prompt files for headless runs: napari Points CSV files and a JSON of points, boxes, masks.

CSV (what napari writes when a Points layer is saved, File > Save Selected Layers):

    index,axis-0,axis-1,axis-2,object_id,positive
    0.0,0.0,10.5,20.25,1.0,1.0

The axis columns are the point's data coordinates. With three of them they are (frame, y, x);
with more (a (T, Z, Y, X) layer) the frame is the coordinate on ``frame_axis``, Y and X the last
two other axes, and every other axis must equal its ``fixed`` index (rounded; points elsewhere
are left out). The header ``frame,y,x`` is accepted as well. Optional columns: ``object_id``
(default 1) and ``positive`` (1 foreground, 0 background; ``label`` is a synonym; default 1).

JSON: a list (or ``{"prompts": [...]}``) of records, each with ``frame``, ``object_id`` and
one of

- ``"points": [[y, x], ...]`` with optional ``"labels": [1, 0, ...]`` (default all 1),
- ``"box": [y0, x0, y1, x1]``,
- ``"mask": "path.tif"``: a TIFF, relative to the JSON file, of shape (H, W) or a (T, H, W)
  stack (then its plane ``frame`` is used); the mask is its non-zero pixels, or the pixels equal
  to ``"value"`` when given (so one label image can hold the masks of several objects).

Coordinates are frame pixels as in napari: (y, x), pixel (i, j) covering [i - 0.5, i + 0.5].

Files are read as UTF-8 (a byte-order mark, as Excel writes, is fine). Anything wrong with a
file is a :class:`PromptFileError` whose message names the file, the line (CSV) or the prompt
(JSON, counted from 1), what is wrong and what to do; errors of the libraries used to read it
(json, csv, tifffile, numpy) are caught here and reworded.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.tracking.prompt_checks import MAX_OBJECT_ID

__all__ = ["PromptRecord", "PromptFileError", "read_prompts", "check_prompts", "apply_prompts"]

KINDS = ("points", "box", "mask")


class PromptFileError(ValueError):
    """A prompt file that cannot be used, with what is wrong and how to fix it."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: ``kind`` is ``points`` (data: ``(points (N, 2) yx, labels (N,))``), ``box``
    (data: ``(y0, x0, y1, x1)``) or ``mask`` (data: (H, W) bool)."""

    frame: int
    object_id: int
    kind: str
    data: Any


def read_prompts(
    path: str | os.PathLike,
    *,
    frame_axis: int = 0,
    fixed: Mapping[int, int] | None = None,
) -> list[PromptRecord]:
    """Read a prompt file (``.csv`` or ``.json``) into prompt records, in file order (points of
    the same frame and object are grouped into one record)."""
    path = Path(path)
    if path.is_dir():
        raise PromptFileError(
            f"{path} is a folder, not a prompt file: give the .csv or .json file in it"
        )
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise PromptFileError(
            f"prompt file {path} must be a .csv (napari Points layer) or a .json file"
        )
    text = _read_text(path)
    if suffix == ".csv":
        records = _read_csv(path, text, frame_axis, dict(fixed or {}))
    else:
        records = _read_json(path, text)
    if not records:
        raise PromptFileError(f"prompt file {path} holds no prompts")
    return records


def _read_text(path: Path) -> str:
    """The file's text as UTF-8; "utf-8-sig" drops the byte-order mark Excel puts first."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PromptFileError(
            f"prompt file {path} cannot be read ({err.strerror or err}); check that it is a "
            "file you may read"
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        kind = "UTF-16 text" if utf16 else f"not UTF-8 text (byte 0x{data[err.start]:02x})"
        raise PromptFileError(
            f"{path}, line {line}: the file is {kind}; save it as UTF-8 (in Excel: "
            "'CSV UTF-8'; in a text editor: encoding UTF-8)"
        ) from None


def _truthy(value: str, column: str, where: str) -> int:
    text = value.strip().lower()
    if text in ("1", "1.0", "true", "yes", "positive", "foreground"):
        return 1
    if text in ("0", "0.0", "false", "no", "negative", "background", "-1", "-1.0"):
        return 0
    raise PromptFileError(
        f"{where}: column {column!r} has {value!r}; use 1 (foreground) or 0 (background)"
    )


def _integer(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool):  # JSON true / false are not ids or frames
        raise PromptFileError(f"{where}: {what} must be an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PromptFileError(f"{where}: {what} must be an integer, got {value!r}") from None
    if not np.isfinite(number) or number != round(number):
        raise PromptFileError(f"{where}: {what} must be an integer, got {value!r}")
    return int(round(number))


def _axis_number(name: str) -> int | None:
    """The N of a napari ``axis-N`` column name, None for any other name."""
    head, _, number = name.partition("-")
    return int(number) if head == "axis" and number.isdigit() else None


def _read_csv(path: Path, text: str, frame_axis: int, fixed: dict[int, int]) -> list[PromptRecord]:
    # Rows that are not blank, with the file's line number (as an editor shows it) of each.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except csv.Error as err:
        raise PromptFileError(
            f"{path}, line {reader.line_num}: not a readable CSV file ({err}); save the Points "
            "layer from napari (File > Save Selected Layers) or write 'frame,y,x' rows"
        ) from None
    if not rows:
        raise PromptFileError(f"prompt file {path} is empty")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    axis_cols = sorted((n, i) for i, h in enumerate(header) if (n := _axis_number(h)) is not None)
    if axis_cols:
        columns = [i for _, i in axis_cols]
    elif {"frame", "y", "x"} <= set(header):
        columns = [header.index("frame"), header.index("y"), header.index("x")]
        # named columns are already the frame along the propagated axis and (y, x) in it, as
        # in JSON files: napari's axis-N columns are the stack's axes and need the mapping
        frame_axis, fixed = 0, {}
    else:
        hint = (
            " (the file uses ';' between values: save it with ',' as separator)"
            if len(header) == 1 and ";" in header[0]
            else ""
        )
        raise PromptFileError(
            f"{path}, line 1: no coordinate columns; expected napari's 'axis-0,axis-1,axis-2' "
            f"(as napari saves a Points layer) or 'frame,y,x', found columns {header}{hint}"
        )
    ndim = len(columns)
    if ndim < 3:
        raise PromptFileError(
            f"{path}, line 1: points have {ndim} coordinates; a stack needs (frame, y, x) at least"
        )
    frame_axis %= ndim
    fixed = {a % ndim: v for a, v in fixed.items()}
    rest = [a for a in range(ndim) if a != frame_axis and a not in fixed]
    if len(rest) != 2:
        raise PromptFileError(
            f"{path}: points have {ndim} coordinates: give the frame axis and a fixed index "
            f"for every axis but Y and X (frame_axis={frame_axis}, fixed={fixed})"
        )
    y_axis, x_axis = rest
    obj_col = header.index("object_id") if "object_id" in header else None
    pos_name = next((n for n in ("positive", "label") if n in header), None)
    pos_col = header.index(pos_name) if pos_name else None
    grouped: dict[tuple[int, int], tuple[list, list]] = {}
    for n, row in body:
        where = f"{path}, line {n}"
        if len(row) < len(header):
            missing = header[len(row) :]
            raise PromptFileError(
                f"{where}: {len(row)} values for {len(header)} columns (no value for "
                f"{', '.join(missing)}); give every column a value on every line"
            )
        try:
            coords = [float(row[c]) for c in columns]
        except ValueError:
            raise PromptFileError(
                f"{where}: coordinates must be numbers, got {[row[c] for c in columns]}"
            ) from None
        if not np.isfinite(coords).all():
            raise PromptFileError(
                f"{where}: coordinates must be finite numbers, got {coords}; remove or fix the "
                "point"
            )
        if any(round(coords[a]) != v for a, v in fixed.items()):
            continue  # on another slice than the one being tracked
        frame = _integer(coords[frame_axis], "the frame coordinate", where)
        object_id = _integer(row[obj_col], "object_id", where) if obj_col is not None else 1
        label = _truthy(row[pos_col], pos_name, where) if pos_col is not None else 1
        points, labels = grouped.setdefault((frame, object_id), ([], []))
        points.append((coords[y_axis], coords[x_axis]))
        labels.append(label)
    return [
        PromptRecord(f, k, "points", (np.asarray(p, np.float64), np.asarray(lab, np.int64)))
        for (f, k), (p, lab) in grouped.items()
    ]


def _read_json(path: Path, text: str) -> list[PromptRecord]:
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptFileError(
            f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); fix the "
            "file there (a JSON checker or editor shows the spot)"
        ) from None
    items = content.get("prompts") if isinstance(content, dict) else content
    if not isinstance(items, list):
        raise PromptFileError(
            f"{path}: expected a list of prompts or {{'prompts': [...]}}, e.g. "
            '[{"frame": 0, "object_id": 1, "points": [[y, x]]}]'
        )
    records = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise PromptFileError(
                f"{path}, prompt {n}: each prompt must be an object, got {item!r}"
            )
        label = f"object {item['object_id']!r}, " if "object_id" in item else ""
        where = f"{path}, prompt {n} ({label}frame {item.get('frame', '?')!r})"
        missing = [key for key in ("frame", "object_id") if key not in item]
        if missing:
            raise PromptFileError(f"{where}: missing {missing}; every prompt needs both")
        kinds = [key for key in KINDS if key in item]
        if len(kinds) != 1:
            raise PromptFileError(f"{where}: give exactly one of {KINDS}, found {kinds}")
        frame = _integer(item["frame"], "frame", where)
        object_id = _integer(item["object_id"], "object_id", where)
        kind = kinds[0]
        if kind == "points":
            data: Any = (
                _json_points(item["points"], where),
                _json_labels(item.get("labels"), len(item["points"]), where),
            )
        elif kind == "box":
            data = _json_box(item["box"], where)
        else:
            mask = item["mask"]
            if not isinstance(mask, str) or not mask:
                raise PromptFileError(
                    f"{where}: mask must be the path of a TIFF file (relative to {path.name}), "
                    f"got {mask!r}"
                )
            value = item.get("value")
            if value is not None and (isinstance(value, bool) or not _is_number(value)):
                raise PromptFileError(f"{where}: value must be a number, got {value!r}")
            data = _read_mask(path.parent / mask, frame, value, where)
        records.append(PromptRecord(frame, object_id, kind, data))
    return records


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_points(points: Any, where: str) -> np.ndarray:
    """``[[y, x], ...]`` -> (N, 2) float64; anything else (a box given as points, a flat list,
    strings, NaN or null) is refused: numpy would silently read [[y0, x0, y1, x1]] as two
    points or null as NaN."""
    pairs_hint = 'points are [y, x] pairs, [[y, x], ...] (a box is "box": [y0, x0, y1, x1])'
    if not isinstance(points, list) or not points:
        raise PromptFileError(f"{where}: points must be a non-empty list; {pairs_hint}")
    for k, point in enumerate(points, start=1):
        if not isinstance(point, list) or len(point) != 2:
            raise PromptFileError(f"{where}: point {k} is {point!r}; {pairs_hint}")
        if not all(_is_number(v) and np.isfinite(v) for v in point):
            raise PromptFileError(
                f"{where}: point {k} is {point!r}; coordinates must be finite numbers "
                "(y, x) in frame pixels"
            )
    return np.asarray(points, dtype=np.float64)


def _json_labels(labels: Any, count: int, where: str) -> np.ndarray:
    """Optional ``[1, 0, ...]`` (true / false too), one per point; default all 1."""
    if labels is None:
        return np.ones(count, np.int64)
    if not isinstance(labels, list) or len(labels) != count:
        raise PromptFileError(
            f"{where}: labels must be a list with one label per point ({count}), got {labels!r}"
        )
    bad = [v for v in labels if not (isinstance(v, (bool, int, float)) and v in (0, 1))]
    if bad:
        raise PromptFileError(
            f"{where}: labels must be 1 (foreground) or 0 (background), got {bad}"
        )
    return np.asarray([int(v) for v in labels], np.int64)


def _json_box(box: Any, where: str) -> tuple[float, float, float, float]:
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(_is_number(v) and np.isfinite(v) for v in box)
    ):
        raise PromptFileError(
            f"{where}: box must be 4 finite numbers [y0, x0, y1, x1] in frame pixels, got {box!r}"
        )
    y0, x0, y1, x1 = (float(v) for v in box)
    return (y0, x0, y1, x1)


def _read_mask(path: Path, frame: int, value: Any, where: str) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise PromptFileError(f"{where}: mask file {path} does not exist")
    try:
        image = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise PromptFileError(
            f"{where}: mask file {path} cannot be read as a TIFF ({err}); save the mask as a "
            "TIFF (e.g. napari: File > Save Selected Layers, .tif)"
        ) from None
    if image.ndim == 3:
        if not 0 <= frame < image.shape[0]:
            raise PromptFileError(
                f"{where}: mask stack {path} has {image.shape[0]} planes, no plane {frame}"
            )
        image = image[frame]
    if image.ndim != 2:
        raise PromptFileError(
            f"{where}: mask {path} must be (H, W) or (T, H, W), got {image.shape}"
        )
    return image == value if value is not None else image != 0


def check_prompts(
    records: Sequence[PromptRecord], num_frames: int, height: int, width: int
) -> None:
    """Check every prompt against the stack before anything runs: frames in range, points and
    boxes inside the frame (napari pixels: -0.5 .. size - 0.5), boxes with area, masks of the
    frame's shape and not empty, labels 0 or 1. Raises :class:`PromptFileError`."""
    if not records:
        raise PromptFileError("no prompts given")
    for r in records:
        where = f"prompt for object {r.object_id} on frame {r.frame}"
        if not 0 <= r.frame < num_frames:
            raise PromptFileError(
                f"{where}: frame {r.frame} is beyond the stack, which has {num_frames} frames "
                f"(0..{num_frames - 1})"
            )
        if not 1 <= r.object_id <= MAX_OBJECT_ID:
            raise PromptFileError(
                f"{where}: object ids run from 1 to {MAX_OBJECT_ID} (object k is written as "
                "label k, 0 is the background, label files store uint16)"
            )
        if r.kind == "points":
            yx, labels = r.data
            _check_finite(yx, f"{where}: point")
            _check_inside(yx, height, width, f"{where}: point")
            if not np.isin(labels, (0, 1)).all():
                raise PromptFileError(
                    f"{where}: labels must be 1 or 0, got {np.asarray(labels).tolist()}"
                )
        elif r.kind == "box":
            y0, x0, y1, x1 = r.data
            _check_finite(r.data, f"{where}: box")
            if abs(y1 - y0) == 0 or abs(x1 - x0) == 0:
                raise PromptFileError(f"{where}: box {r.data} (y0, x0, y1, x1) has zero area")
            _check_inside(np.array([[y0, x0], [y1, x1]]), height, width, f"{where}: box corner")
        elif r.kind == "mask":
            mask = np.asarray(r.data)
            if mask.shape != (height, width):
                raise PromptFileError(
                    f"{where}: mask of shape {mask.shape} does not match the frames "
                    f"({height}, {width})"
                )
            if not mask.any():
                raise PromptFileError(f"{where}: the mask is empty (no pixel set)")
        else:
            raise PromptFileError(f"{where}: unknown prompt kind {r.kind!r}")


def _check_finite(values: Any, what: str) -> None:
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise PromptFileError(
            f"{what} {array.tolist()} has NaN or infinite coordinates; give finite (y, x) "
            "frame pixels"
        )


def _check_inside(yx: np.ndarray, height: int, width: int, what: str) -> None:
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    bad = (
        (yx[:, 0] < -0.5) | (yx[:, 0] > height - 0.5) | (yx[:, 1] < -0.5) | (yx[:, 1] > width - 0.5)
    )
    if bad.any():
        raise PromptFileError(
            f"{what} {yx[bad].tolist()} (y, x) lies outside the {height} x {width} frame"
        )


def apply_prompts(tracker: Any, records: Sequence[PromptRecord]) -> list[Any]:
    """Give every record to ``tracker`` (``add_points`` / ``add_box`` / ``add_mask``), in order;
    returns the results."""
    results = []
    for r in records:
        if r.kind == "points":
            results.append(tracker.add_points(r.frame, r.object_id, r.data[0], r.data[1]))
        elif r.kind == "box":
            results.append(tracker.add_box(r.frame, r.object_id, r.data))
        else:
            results.append(tracker.add_mask(r.frame, r.object_id, r.data))
    return results
