"""Ground-truth stand-ins for automatic tracking tests (issue 13), and CTC metric helpers.

- :class:`GroundTruthTracker`: the tracker interface :class:`napari_sam2.tracking.TrackAll`
  uses, answered from a ground-truth label time-lapse. An object prompted with a mask follows
  the ground-truth label it overlaps most. Where that label is absent but has descendants
  (``parents``), the object is the union of the descendants' masks, as SAM 2 keeps following a
  dividing cell as one object. Absent: score logit -10; present: +10; mask logits +10 inside,
  -10 outside.
- :func:`ground_truth_segmenter`: "segment everything" that returns the ground-truth masks.
- :func:`lineage_from_labels`: parents of a label time-lapse whose daughters get new ids.
- :func:`write_ctc_ground_truth`, :func:`ctc_scores`: CTC ``GT`` folders and DET / SEG / TRA
  (and branching correctness) with ``py-ctcmetrics``.

Imported by name (``tests/`` has no packages): ``from ground_truth import ...``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_sam2.tracking import FrameResult

INSIDE, OUTSIDE = 10.0, -10.0


class GroundTruthTracker:
    """The tracker interface of :class:`~napari_sam2.tracking.TrackAll` from ground truth.

    ``gt_labels`` (T, H, W) integer labels; ``parents`` {daughter label: parent label}.
    ``calls`` records ``(name, frame, object_id)`` of every prompt, removal and propagation.
    """

    def __init__(self, gt_labels: np.ndarray, parents: Mapping[int, int] | None = None) -> None:
        self.gt = np.asarray(gt_labels)
        self.num_frames, self.height, self.width = self.gt.shape
        self.children: dict[int, list[int]] = {}
        for child, parent in (parents or {}).items():
            self.children.setdefault(int(parent), []).append(int(child))
        self._follows: dict[int, int] = {}  # object -> ground-truth label (0: none)
        self._prompts: dict[int, dict[int, np.ndarray]] = {}  # object -> frame -> mask
        self.running = False
        self.calls: list[tuple[str, int, int]] = []

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(self._follows)

    def add_mask(self, frame_index: int, object_id: int, mask: Any) -> FrameResult:
        self._check_idle()
        mask = np.asarray(mask).astype(bool)
        under = self.gt[frame_index][mask]
        under = under[under != 0]
        label = int(np.bincount(under).argmax()) if under.size else 0
        if object_id not in self._follows:
            self._follows[object_id] = label
        self._prompts.setdefault(object_id, {})[frame_index] = mask
        self.calls.append(("add_mask", frame_index, object_id))
        return self._result(frame_index)

    def remove_object(self, object_id: int) -> None:
        self._check_idle()
        del self._follows[object_id]
        del self._prompts[object_id]
        self.calls.append(("remove_object", -1, object_id))

    def propagate(
        self, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        self._check_idle()
        if reverse:
            raise NotImplementedError("the ground-truth tracker only goes forward")
        if not self._follows:
            raise RuntimeError("nothing to propagate")
        if start_frame is None:
            start_frame = min(min(p) for p in self._prompts.values())
        stop = self.num_frames if max_frames is None else start_frame + max_frames + 1
        return self._run(start_frame, min(stop, self.num_frames))

    def _run(self, start: int, stop: int) -> Iterator[FrameResult]:
        self.running = True
        try:
            for t in range(start, stop):
                self.calls.append(("propagate", t, 0))
                yield self._result(t)
        finally:
            self.running = False

    def mask_of(self, object_id: int, t: int) -> np.ndarray:
        """The object's mask on frame t (its prompt there, else its label or descendants)."""
        prompt = self._prompts[object_id].get(t)
        if prompt is not None:
            return prompt
        first = min(self._prompts[object_id])
        label = self._follows[object_id]
        if t < first or label == 0:
            return np.zeros((self.height, self.width), bool)
        return np.isin(self.gt[t], self._present_descendants(label, t))

    def _present_descendants(self, label: int, t: int) -> list[int]:
        """``label`` if it is on frame t, else its nearest descendants that are."""
        if np.any(self.gt[t] == label):
            return [label]
        found: list[int] = []
        for child in self.children.get(label, []):
            found += self._present_descendants(child, t)
        return found

    def _result(self, t: int) -> FrameResult:
        ids = self.object_ids
        logits = np.full((len(ids), self.height, self.width), OUTSIDE, np.float32)
        scores = np.full(len(ids), OUTSIDE, np.float32)
        for i, k in enumerate(ids):
            mask = self.mask_of(k, t)
            if mask.any():
                logits[i][mask] = INSIDE
                scores[i] = INSIDE
        return FrameResult(t, ids, logits, scores, np.ones(len(ids), bool))

    def _check_idle(self) -> None:
        if self.running:
            raise RuntimeError("a propagation is running")


def ground_truth_segmenter(gt_labels: np.ndarray) -> Callable[[int], list[np.ndarray]]:
    """segmenter(frame) -> the frame's ground-truth masks, by label."""
    gt = np.asarray(gt_labels)

    def segmenter(frame_index: int) -> list[np.ndarray]:
        plane = gt[frame_index]
        return [plane == k for k in np.unique(plane) if k != 0]

    return segmenter


def lineage_from_labels(gt_labels: np.ndarray) -> dict[int, int]:
    """{daughter: parent} of a label time-lapse whose daughters get new ids.

    A label that first appears on frame f > 0 is the daughter of a label that was last seen on
    frame f - 1 and that it overlaps there (the one it overlaps most), or else of the nearest
    such label within the sum of their equivalent radii times two. Labels that appear with no
    label ending nearby (entering the field) have no parent.
    """
    gt = np.asarray(gt_labels)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in range(gt.shape[0]):
        for k in np.unique(gt[t]):
            if k:
                first.setdefault(int(k), t)
                last[int(k)] = t
    parents: dict[int, int] = {}
    for k, f in sorted(first.items()):
        if f == 0:
            continue
        ended = [p for p, e in last.items() if e == f - 1 and first[p] < f]
        if not ended:
            continue
        mine = gt[f] == k
        under = gt[f - 1][mine]
        counts = {p: int(np.count_nonzero(under == p)) for p in ended}
        best = max(counts, key=lambda p: counts[p])
        if counts[best] > 0:
            parents[k] = best
            continue
        cy, cx = np.argwhere(mine).mean(axis=0)
        distances = {}
        for p in ended:
            theirs = gt[f - 1] == p
            py, px = np.argwhere(theirs).mean(axis=0)
            reach = 2 * (np.sqrt(mine.sum() / np.pi) + np.sqrt(theirs.sum() / np.pi))
            d = float(np.hypot(py - cy, px - cx))
            if d <= reach:
                distances[p] = d
        if distances:
            parents[k] = min(distances, key=lambda p: distances[p])
    return parents


# --- CTC folders and metrics -----------------------------------------------------------------


def write_ctc_ground_truth(labels: np.ndarray, parents: Mapping[int, int], folder: Path) -> Path:
    """A CTC ``XX_GT`` folder: ``TRA/man_trackTTT.tif`` + ``man_track.txt`` and
    ``SEG/man_segTTT.tif`` (every frame segmented)."""
    from napari_sam2.outputs.export import ctc_tracks

    tracks, ids = ctc_tracks(labels, parents)
    (folder / "TRA").mkdir(parents=True, exist_ok=True)
    (folder / "SEG").mkdir(parents=True, exist_ok=True)
    for t in range(labels.shape[0]):
        out = np.zeros(labels.shape[1:], np.uint16)
        for k in np.unique(labels[t]):
            if k:
                out[labels[t] == k] = ids[(int(k), t)]
        tifffile.imwrite(folder / "TRA" / f"man_track{t:03d}.tif", out)
        tifffile.imwrite(folder / "SEG" / f"man_seg{t:03d}.tif", out)
    text = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in tracks)
    (folder / "TRA" / "man_track.txt").write_text(text)
    return folder


def write_ctc_result(labels: np.ndarray, parents: Mapping[int, int], folder: Path) -> Path:
    """A CTC ``XX_RES`` folder written by ``export_ctc`` with the lineage's parents."""
    from napari_sam2.outputs.export import export_ctc

    export_ctc(labels, folder, parents=dict(parents))
    return folder


def ctc_scores(res: Path, gt: Path) -> dict[str, Any]:
    """DET, SEG, TRA and division counts (BC(i): ``tp_div(i)``, ``fn_div(i)``) of a result
    folder against a ground-truth folder, computed by py-ctcmetrics (single-threaded)."""
    from ctc_metrics import evaluate_sequence

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate_sequence(str(res), str(gt), ["DET", "SEG", "TRA", "BC"], threads=1)


def matched_divisions(
    gt_labels: np.ndarray,
    gt_parents: Mapping[int, int],
    labels: np.ndarray,
    lineage_parents: Mapping[int, int],
    tolerance: int = 1,
) -> tuple[list[tuple[int, tuple[int, ...]]], list[tuple[int, tuple[int, ...]]]]:
    """Ground-truth divisions found and missed in a result.

    A ground-truth division P -> {D1, D2} is found when the result has a division p -> {d1, d2}
    whose parent p covers most of P on P's last frame and whose daughters are, one each, the
    labels covering most of D1 and D2 on some frame within ``tolerance`` frames after the
    daughters' first frame. Returns (found, missed) as (P, daughters) pairs.
    """
    gt_children: dict[int, list[int]] = {}
    for child, parent in gt_parents.items():
        gt_children.setdefault(parent, []).append(child)
    res_children: dict[int, set[int]] = {}
    for child, parent in lineage_parents.items():
        if parent:
            res_children.setdefault(parent, set()).add(child)

    def frames_of(stack: np.ndarray, k: int) -> list[int]:
        return [t for t in range(stack.shape[0]) if np.any(stack[t] == k)]

    def cover(t: int, k: int) -> int:
        under = labels[t][gt_labels[t] == k]
        under = under[under != 0]
        return int(np.bincount(under).argmax()) if under.size else 0

    found, missed = [], []
    for parent, daughters in sorted(gt_children.items()):
        key = (parent, tuple(sorted(daughters)))
        p = cover(frames_of(gt_labels, parent)[-1], parent)
        ok = len(daughters) == 2 and p in res_children
        if ok:
            for d in daughters:
                start = frames_of(gt_labels, d)[0]
                window = range(start, min(start + tolerance + 1, gt_labels.shape[0]))
                if not any(cover(t, d) in res_children[p] for t in window):
                    ok = False
            if ok:
                got = {
                    cover(min(frames_of(gt_labels, d)[0] + tolerance, gt_labels.shape[0] - 1), d)
                    for d in daughters
                }
                ok = len(got) == 2
        (found if ok else missed).append(key)
    return found, missed


def _report() -> None:  # pragma: no cover - `python tests/ground_truth.py` prints the metrics
    """CTC metrics of TrackAll (default settings, seeded by segmenting frame 0) with the
    stand-ins on the dividing-cells sample and, where ``../shared`` exists, ctc_sim_nuclei."""
    import tempfile

    from napari_sam2._sample_data import make_dividing_cells
    from napari_sam2.tracking import TrackAll, TrackAllSettings

    sets = {"dividing-cells sample": make_dividing_cells()[1]}
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctc_sim_nuclei"
    if shared.is_dir():
        sets["ctc_sim_nuclei"] = tifffile.imread(shared / "labels_tyx.tif")
    for name, gt in sets.items():
        parents = lineage_from_labels(gt)
        track = TrackAll(
            GroundTruthTracker(gt, parents), TrackAllSettings(), ground_truth_segmenter(gt)
        )
        track.seed_from_everything(0)
        labels = np.stack([f.labels for f in track.run()])
        found_parents = {d: p[0] for d, p in track.lineage.graph().items()}
        with tempfile.TemporaryDirectory() as tmp:
            write_ctc_ground_truth(gt, parents, Path(tmp) / "01_GT")
            write_ctc_result(labels, found_parents, Path(tmp) / "01_RES")
            s = ctc_scores(Path(tmp) / "01_RES", Path(tmp) / "01_GT")
        found, missed = matched_divisions(gt, parents, labels, found_parents, tolerance=1)
        print(
            f"{name}: DET {s['DET']:.4f}  SEG {s['SEG']:.4f}  TRA {s['TRA']:.4f}  "
            f"(AOGM {float(s['AOGM']):.1f}: FN {s['AOGM_FN']}, FP {s['AOGM_FP']}, "
            f"NS {s['AOGM_NS']}, ED {s['AOGM_ED']}, EA {s['AOGM_EA']}, EC {s['AOGM_EC']}); "
            f"GT divisions {s['gt_divisions']}: BC(0) tp {s['tp_div(0)']} fn {s['fn_div(0)']}, "
            f"BC(1) tp {s['tp_div(1)']} fn {s['fn_div(1)']} fp {s['fp_div(1)']}; "
            f"parent->daughters matched {len(found)}, missed {missed}"
        )
        for d in track.decisions:
            if d.kind != "seed":
                print(f"  {d.kind} frame {d.frame} object {d.object_id} {d.related}: {d.reason}")


if __name__ == "__main__":
    _report()
