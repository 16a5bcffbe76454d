"""Lineages of automatically tracked objects to a napari Tracks layer and to GEFF.

Both outputs are built from the label time-lapse (object k is label k, gaps where it is absent)
and the :class:`napari_sam2.tracking.lineage.Lineage` of the run (who is whose daughter):

- :func:`tracks_layer_data`: the ``data``, ``graph`` and ``properties`` of a napari Tracks
  layer: one vertex per track and frame where the track is present, at its centroid;
- :func:`write_geff`: the same graph as a GEFF file (the Graph Exchange File Format for
  tracking, https://liveimagetrackingtools.org/geff/), one node per track and frame present,
  edges along each track (across its gaps too) and from a parent's last node to the first
  node of each daughter. It is written whole or not at all.

Labels are read one (Y, X) plane at a time, so memmaps and zarr arrays are never loaded whole.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.outputs.export import write_error

__all__ = ["TrackNode", "track_nodes", "tracks_layer_data", "write_geff", "GEFF_NODE_PROPS"]

GEFF_NODE_PROPS = ("t", "y", "x", "frame", "area", "track_id", "lineage_id")
"""The node properties :func:`write_geff` writes (with the default axis names)."""


@dataclass(frozen=True)
class TrackNode:
    """A track on one frame: its area in pixels and its centroid in pixels (y, x)."""

    track_id: int
    frame: int
    area: int
    y: float
    x: float


def _frame_stats(plane: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(label, area, centroid y, centroid x) of every nonzero label of a (Y, X) plane."""
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"label planes must be (Y, X), got shape {plane.shape}")
    flat = plane.ravel()
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return []
    ids, inverse = np.unique(flat[nonzero], return_inverse=True)
    ys, xs = np.divmod(nonzero, plane.shape[1])
    areas = np.bincount(inverse, minlength=ids.size)
    cy = np.bincount(inverse, weights=ys, minlength=ids.size) / areas
    cx = np.bincount(inverse, weights=xs, minlength=ids.size) / areas
    return [
        (int(k), int(a), float(y), float(x)) for k, a, y, x in zip(ids, areas, cy, cx, strict=True)
    ]


def track_nodes(labels: Any) -> dict[int, list[TrackNode]]:
    """Every track of a (T, Y, X) label array with one :class:`TrackNode` per frame where it
    is present, by track id (sorted), each list in frame order."""
    shape = tuple(labels.shape)
    if len(shape) != 3:
        raise ValueError(f"lineage outputs take (T, Y, X) labels, got shape {shape}")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iub":
        raise TypeError(f"labels must have an integer dtype, got {dtype}")
    nodes: dict[int, list[TrackNode]] = {}
    for t in range(shape[0]):
        for k, area, y, x in _frame_stats(np.asarray(labels[t])):
            if k < 0:
                raise ValueError(f"labels must not be negative, got {k} on frame {t}")
            nodes.setdefault(k, []).append(TrackNode(k, t, area, y, x))
    return dict(sorted(nodes.items()))


def _parents(lineage: Any, present: Any) -> dict[int, int]:
    """Daughter -> parent for the tracks of ``lineage`` (a Lineage, a ``{daughter: parent}``
    map, or None) whose daughter and parent are both in ``present``."""
    if lineage is None:
        return {}
    if hasattr(lineage, "spans"):
        pairs = {int(k): int(s.parent_id) for k, s in lineage.spans.items()}
    else:
        pairs = {
            int(k): int(p[0] if isinstance(p, (list, tuple)) else p) for k, p in lineage.items()
        }
    return {k: p for k, p in sorted(pairs.items()) if p and k in present and p in present}


def _scale3(scale: Sequence[float] | None) -> tuple[float, float, float]:
    if scale is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in scale)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"scale must give three positive sizes (t, y, x), got {tuple(scale)}")
    return values  # type: ignore[return-value]


def tracks_layer_data(
    labels: Any, lineage: Any = None, scale: Sequence[float] | None = None
) -> tuple[np.ndarray, dict[int, list[int]], dict[str, np.ndarray]]:
    """The ``data``, ``graph`` and ``properties`` of a napari Tracks layer for ``labels``.

    ``data`` is (N, 4) float: ``[track_id, t, y, x]``, one row per track and frame where the
    track is present (its centroid), sorted by track id, then time. ``graph`` is
    ``{daughter: [parent]}`` from ``lineage`` (a :class:`~napari_sam2.tracking.lineage.Lineage`
    or its ``graph()``), limited to tracks present in ``labels`` (napari refuses graph nodes
    without vertices). ``properties`` holds ``area`` (pixels) and ``frame`` per row. ``scale``
    ``(t, y, x)`` multiplies the coordinates; leave it None and give the Labels layer's scale
    to the Tracks layer instead, so both line up.
    """
    st, sy, sx = _scale3(scale)
    nodes = track_nodes(labels)
    rows = [(n.track_id, n.frame * st, n.y * sy, n.x * sx) for ns in nodes.values() for n in ns]
    data = np.array(rows, dtype=float).reshape(-1, 4)
    area = np.array([n.area for ns in nodes.values() for n in ns], dtype=np.int64)
    frame = np.array([n.frame for ns in nodes.values() for n in ns], dtype=np.int64)
    graph = {k: [p] for k, p in _parents(lineage, nodes).items()}
    return data, graph, {"area": area, "frame": frame}


def _lineage_roots(parents: dict[int, int], tracks: Sequence[int]) -> dict[int, int]:
    """Each track's root ancestor (itself when it has no parent)."""
    roots: dict[int, int] = {}
    for k in tracks:
        seen, root = {k}, k
        while root in parents and parents[root] not in seen:
            root = parents[root]
            seen.add(root)
        roots[k] = root
    return roots


def _geff_unit(unit: Any) -> str | None:
    if unit is None:
        return None
    from napari_sam2.tiff_meta import napari_unit

    text = str(unit).strip()
    if text.lower() in ("frame", "pixel"):
        return text.lower()
    return napari_unit(text) or text


def write_geff(
    path: str | os.PathLike,
    labels: Any,
    lineage: Any,
    scale: Sequence[float] | None = None,
    axis_names: Sequence[str] = ("t", "y", "x"),
    units: Sequence[Any] | None = None,
) -> Path:
    """Write the tracks of (T, Y, X) ``labels`` and the parents in ``lineage`` as a GEFF
    (a zarr folder, usually named ``*.geff``); returns ``path``.

    One node per track and frame where the track is present, with the properties named by
    ``axis_names`` (time, then the centroid's y and x, multiplied by ``scale`` ``(t, y, x)``
    where given), ``frame`` (the frame index), ``area`` (pixels), ``track_id`` (the label) and
    ``lineage_id`` (the track id of its root ancestor). Edges are directed: from each node to
    the track's next node (across a gap too) and from a parent's last node to the first node of
    each daughter. ``units`` gives a unit per axis (napari's names or spellings such as
    ``"um"``); without ``scale``, axes without a unit are in ``"frame"`` and ``"pixel"``. The
    metadata names ``track_id`` as the tracklet property (where every track is one maximal
    path, i.e. no parent has exactly one daughter) and ``lineage_id`` as the lineage property.

    The graph is written to a temporary folder beside ``path`` and renamed into place when
    complete, so ``path`` holds either the earlier GEFF or the whole new one. An existing
    ``path`` that is not a GEFF folder is refused (``FileExistsError``), never replaced. An
    ``OSError`` becomes an :class:`~napari_sam2.outputs.OutputWriteError` naming ``path``.
    """
    import geff
    from geff.core_io import write_arrays

    path = Path(path)
    names = tuple(str(n) for n in axis_names)
    if len(names) != 3 or len(set(names)) != 3:
        raise ValueError(f"axis_names must name three distinct axes (t, y, x), got {names}")
    clash = set(names) & set(GEFF_NODE_PROPS[3:])
    if clash:
        raise ValueError(f"axis_names must not reuse the property names {sorted(clash)}")
    if units is not None and len(tuple(units)) != 3:
        raise ValueError(f"units must give one unit per axis (t, y, x), got {units}")
    st, sy, sx = _scale3(scale)
    if path.exists() and not _is_geff(path):
        raise FileExistsError(f"{path} exists and is not a GEFF folder; it is not replaced")

    nodes = track_nodes(labels)
    parents = _parents(lineage, nodes)
    roots = _lineage_roots(parents, list(nodes))
    flat = [n for ns in nodes.values() for n in ns]
    node_ids = np.arange(len(flat), dtype=np.uint64)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    index = 0
    for k, ns in nodes.items():
        first[k] = index
        edges += [(index + i, index + i + 1) for i in range(len(ns) - 1)]
        index += len(ns)
        last[k] = index - 1
    edges += [(last[p], first[d]) for d, p in parents.items()]
    edge_ids = np.array(edges, dtype=np.uint64).reshape(-1, 2)

    def prop(values: Any, dtype: Any) -> dict[str, Any]:
        return {"values": np.asarray(values, dtype=dtype).reshape(-1), "missing": None}

    node_props = {
        names[0]: prop([n.frame * st for n in flat], np.float64),
        names[1]: prop([n.y * sy for n in flat], np.float64),
        names[2]: prop([n.x * sx for n in flat], np.float64),
        "frame": prop([n.frame for n in flat], np.int64),
        "area": prop([n.area for n in flat], np.int64),
        "track_id": prop([n.track_id for n in flat], np.int64),
        "lineage_id": prop([roots[n.track_id] for n in flat], np.int64),
    }
    given = [None, None, None] if units is None else list(units)
    found = [_geff_unit(u) for u in given]
    if scale is None:  # unscaled: frames and pixels
        found = [
            u or default for u, default in zip(found, ("frame", "pixel", "pixel"), strict=True)
        ]
    axes = [
        _axis(names[0], "time", found[0]),
        _axis(names[1], "space", found[1]),
        _axis(names[2], "space", found[2]),
    ]
    daughters: dict[int, int] = {}
    for p in parents.values():
        daughters[p] = daughters.get(p, 0) + 1
    track_props = {"lineage": "lineage_id"}
    if all(n != 1 for n in daughters.values()):
        track_props["tracklet"] = "track_id"
    from napari_sam2 import __version__

    metadata = geff.GeffMetadata(
        directed=True,
        axes=axes,
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props=track_props,
        extra={
            "napari_sam2": {
                "version": __version__,
                "labels_shape": [int(s) for s in labels.shape],
                "scale": [st, sy, sx],
            }
        },
    )

    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:  # a unique temporary folder beside the result: two writers never share it
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            break
        written = tmp / path.name  # geff writes into a folder that does not exist yet
        write_arrays(str(written), node_ids, node_props, edge_ids, None, metadata)
        if path.exists():
            old = tmp / f"{path.name}.old"
            os.replace(path, old)
            try:
                os.replace(written, path)
            except OSError:
                os.replace(old, path)  # put the earlier GEFF back
                raise
        else:
            os.replace(written, path)
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _axis(name: str, kind: str, unit: str | None) -> Any:
    from geff_spec import Axis

    return Axis(name=name, type=kind, unit=unit)


def _is_geff(path: Path) -> bool:
    """Whether ``path`` is a folder holding GEFF metadata (zarr v2 or v3 attributes)."""
    if not path.is_dir():
        return False
    for name in (".zattrs", "zarr.json"):
        try:
            text = (path / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if '"geff"' in text:
            return True
    return False
