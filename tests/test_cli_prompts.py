"""Prompt files: napari's Points CSV, JSON with points / boxes / masks, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam2.tracking.prompts_io import PromptFileError, check_prompts, read_prompts


def napari_points_csv(path, data, features) -> None:
    """Save a Points layer with napari's builtin writer (the format users produce)."""
    from napari.layers import Points
    from napari_builtins.io._write import napari_write_points

    layer = Points(np.asarray(data, float), features=features)
    layer_data, meta, _ = layer.as_layer_data_tuple()
    assert napari_write_points(str(path), layer_data, meta)


def test_napari_points_csv_with_object_id_and_positive(tmp_path) -> None:
    path = tmp_path / "points.csv"
    napari_points_csv(
        path,
        [[0, 10.5, 20.25], [0, 12, 22], [2, 30, 40]],
        {"object_id": [1, 1, 2], "positive": [True, False, True]},
    )
    assert path.read_text().splitlines()[0] == "index,axis-0,axis-1,axis-2,object_id,positive"
    records = read_prompts(path)
    assert [(r.frame, r.object_id, r.kind) for r in records] == [(0, 1, "points"), (2, 2, "points")]
    points, labels = records[0].data
    np.testing.assert_array_equal(points, [[10.5, 20.25], [12, 22]])
    np.testing.assert_array_equal(labels, [1, 0])
    check_prompts(records, 3, 50, 50)


def test_plain_points_default_to_object_one_and_4d_points_use_fixed_axes(tmp_path) -> None:
    path = tmp_path / "p.csv"
    napari_points_csv(path, [[1, 5, 6]], {})
    (r,) = read_prompts(path)
    assert (r.frame, r.object_id) == (1, 1) and r.data[1].tolist() == [1]
    path4 = tmp_path / "p4.csv"
    napari_points_csv(path4, [[3, 7, 5, 6], [3, 8, 1, 1]], {"object_id": [4, 4]})
    records = read_prompts(path4, frame_axis=1, fixed={0: 3})
    assert [(r.frame, r.object_id) for r in records] == [(7, 4), (8, 4)]
    (r,) = read_prompts(path4, frame_axis=0, fixed={1: 8})
    assert r.frame == 3 and r.data[0].tolist() == [[1, 1]]
    with pytest.raises(PromptFileError, match="fixed index"):
        read_prompts(path4)


def test_named_frame_y_x_columns_are_the_propagated_frames_as_in_json(tmp_path) -> None:
    path = tmp_path / "named.csv"
    path.write_text("frame,y,x,object_id\n200,8,100,2\n")
    for frame_axis, fixed in ((0, None), (1, None), (1, {0: 2}), (2, {5: 1})):
        (r,) = read_prompts(path, frame_axis=frame_axis, fixed=fixed)
        assert (r.frame, r.object_id) == (200, 2)
        assert r.data[0].tolist() == [[8.0, 100.0]]


def test_json_points_box_and_mask(tmp_path) -> None:
    masks = np.zeros((4, 20, 30), np.uint16)
    masks[2, 5:9, 10:15] = 3
    tifffile.imwrite(tmp_path / "m.tif", masks, photometric="minisblack")
    spec = {
        "prompts": [
            {"frame": 0, "object_id": 1, "points": [[3, 4], [5, 6]], "labels": [1, 0]},
            {"frame": 1, "object_id": 2, "box": [2, 3, 10, 12]},
            {"frame": 2, "object_id": 3, "mask": "m.tif", "value": 3},
        ]
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    records = read_prompts(tmp_path / "p.json")
    assert [r.kind for r in records] == ["points", "box", "mask"]
    assert records[1].data == (2.0, 3.0, 10.0, 12.0)
    assert records[2].data.shape == (20, 30) and records[2].data.sum() == 20
    check_prompts(records, 4, 20, 30)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("index,object_id\n0,1\n", "no coordinate columns"),
        ("index,axis-0,axis-1,axis-2\n", "holds no prompts"),
        ("index,axis-0,axis-1,axis-2\n0,0.5,3,3\n", "integer"),
    ],
)
def test_bad_csv(tmp_path, content, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(PromptFileError, match=message):
        read_prompts(path)


def test_prompts_checked_against_the_stack(tmp_path) -> None:
    def check(item, shape=(4, 20, 30)):
        (tmp_path / "p.json").write_text(json.dumps([item]))
        check_prompts(read_prompts(tmp_path / "p.json"), *shape)

    with pytest.raises(PromptFileError, match="outside the 20 x 30 frame"):
        check({"frame": 0, "object_id": 1, "points": [[25, 4]]})
    with pytest.raises(PromptFileError, match="beyond the stack"):
        check({"frame": 4, "object_id": 1, "points": [[2, 4]]})
    with pytest.raises(PromptFileError, match="zero area"):
        check({"frame": 0, "object_id": 1, "box": [2, 3, 2, 12]})
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((20, 30), np.uint8))
    with pytest.raises(PromptFileError, match="mask is empty"):
        check({"frame": 0, "object_id": 1, "mask": "empty.tif"})
    with pytest.raises(PromptFileError, match="does not exist"):
        check({"frame": 0, "object_id": 1, "mask": "missing.tif"})
    with pytest.raises(PromptFileError, match="exactly one of"):
        check({"frame": 0, "object_id": 1})
    with pytest.raises(PromptFileError, match="missing"):
        check({"object_id": 1, "points": [[1, 1]]})
    with pytest.raises(PromptFileError, match=".csv"):
        read_prompts(tmp_path / "empty.tif")
