"""Per object and frame: is it there, how sure is the model, how big is it and where."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.outputs.export import write_atomically

__all__ = ["PresenceRow", "PresenceTable"]


@dataclass(frozen=True)
class PresenceRow:
    """One object in one frame. Area and centroid are those of the object's own mask
    (``mask_logits > 0`` where present), before overlaps with other objects are resolved;
    the centroid is NaN where the mask is empty."""

    object_id: int
    frame: int
    score_logit: float
    present: bool
    area: int
    centroid_y: float
    centroid_x: float


COLUMNS = tuple(f.name for f in fields(PresenceRow))


class PresenceTable:
    """Presence of every tracked object per frame; a later result for the same (object, frame)
    replaces the earlier one (re-propagation after a correction)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[int, int], PresenceRow] = {}

    def record(self, result: Any) -> list[PresenceRow]:
        """Add (or replace) one row per object of ``result`` that has output on the frame;
        returns those rows."""
        t = int(result.frame_index)
        logits = np.asarray(result.mask_logits)
        scores = np.asarray(result.object_score_logits).reshape(-1)
        has_output = getattr(result, "has_output", None)
        added = []
        for i, k in enumerate(result.object_ids):
            if has_output is not None and not bool(np.asarray(has_output).reshape(-1)[i]):
                continue  # a placeholder: the object was not tracked on this frame
            present = bool(scores[i] > 0)
            mask = logits[i] > 0 if present else None
            area = int(mask.sum()) if mask is not None else 0
            if area:
                ys, xs = np.nonzero(mask)
                cy, cx = float(ys.mean()), float(xs.mean())
            else:
                cy = cx = math.nan
            row = PresenceRow(int(k), t, float(scores[i]), present, area, cy, cx)
            self._rows[(int(k), t)] = row
            added.append(row)
        return added

    @property
    def rows(self) -> list[PresenceRow]:
        """All rows, ordered by frame then object id."""
        return [self._rows[key] for key in sorted(self._rows, key=lambda k: (k[1], k[0]))]

    @property
    def object_ids(self) -> list[int]:
        return sorted({k for k, _ in self._rows})

    def __len__(self) -> int:
        return len(self._rows)

    def for_object(self, object_id: int) -> list[PresenceRow]:
        """Rows of one object sorted by frame."""
        return sorted(
            (r for (k, _), r in self._rows.items() if k == object_id), key=lambda r: r.frame
        )

    def segments(self, object_id: int) -> list[tuple[int, int]]:
        """Runs of consecutive frames where the object is present with a non-empty mask, as
        inclusive ``(first, last)`` frame pairs; an absent or unrecorded frame ends a run."""
        runs: list[tuple[int, int]] = []
        for row in self.for_object(object_id):
            if not (row.present and row.area > 0):
                continue
            if runs and runs[-1][1] == row.frame - 1:
                runs[-1] = (runs[-1][0], row.frame)
            else:
                runs.append((row.frame, row.frame))
        return runs

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write all rows (header: ``object_id,frame,score_logit,present,area,centroid_y,
        centroid_x``; ``present`` as 0/1, empty centroids blank) via a temporary file with a
        unique name, renamed when complete (see :func:`.export.write_atomically`)."""

        def write(handle: Any) -> None:
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(COLUMNS)
            for row in self.rows:
                values = list(astuple(row))
                values[3] = int(row.present)
                values[5:] = ["" if math.isnan(v) else f"{v:.3f}" for v in values[5:]]
                writer.writerow(values)
            text.flush()
            text.detach()  # the caller closes the file

        return write_atomically(path, write)
