"""Prompt files that are wrong are refused with one line saying where, what and what to do.

Every error is a :class:`PromptFileError` (never a bare json / csv / numpy / tifffile error)
naming the file and the line (CSV) or the prompt (JSON); files from Excel (a byte-order mark)
just work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_sam2.tracking.prompts_io import PromptFileError, check_prompts, read_prompts

HEADER = "index,axis-0,axis-1,axis-2,object_id,positive\n"


def _json(tmp_path: Path, items: object, name: str = "prompts.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def _refused(path: Path, *fragments: str) -> str:
    """Read ``path``, expect a one-line PromptFileError holding every fragment."""
    with pytest.raises(PromptFileError) as info:
        read_prompts(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- JSON ----------------------------------------------------------------------------------


def test_a_box_given_as_points_is_refused_not_read_as_two_points(tmp_path) -> None:
    path = _json(tmp_path, [{"frame": 0, "object_id": 3, "points": [[2, 3, 10, 12]]}])
    _refused(path, "prompt 1", "object 3", "[y, x] pairs", '"box": [y0, x0, y1, x1]')


@pytest.mark.parametrize(
    "points",
    [[2, 3], [[2, 3], [4]], [[2, "3"]], [[2, None]], [[2, [3]]], [], "2,3", [[True, 3]]],
)
def test_points_must_be_a_list_of_number_pairs(tmp_path, points) -> None:
    path = _json(tmp_path, [{"frame": 1, "object_id": 2, "points": points}])
    _refused(path, "prompt 1", "object 2", "frame 1")


def test_nan_and_infinite_coordinates_are_refused(tmp_path) -> None:
    # Python's json writes and reads NaN / Infinity, so such files exist.
    for bad in (float("nan"), float("inf")):
        path = _json(tmp_path, [{"frame": 0, "object_id": 1, "points": [[1, 1], [bad, 2]]}])
        _refused(path, "prompt 1", "point 2", "finite")
        path = _json(tmp_path, [{"frame": 0, "object_id": 1, "box": [0, 0, bad, 2]}])
        _refused(path, "prompt 1", "box must be 4 finite numbers")


@pytest.mark.parametrize(
    "labels, fragment",
    [([1], "one label per point (2)"), ([1, 0.5], "1 (foreground) or 0"), ([1, "x"], "or 0")],
)
def test_labels_must_be_zero_or_one_one_per_point(tmp_path, labels, fragment) -> None:
    item = {"frame": 0, "object_id": 1, "points": [[1, 1], [2, 2]], "labels": labels}
    _refused(_json(tmp_path, [item]), "prompt 1", fragment)


def test_boolean_labels_are_read_as_one_and_zero(tmp_path) -> None:
    item = {"frame": 0, "object_id": 1, "points": [[1, 1], [2, 2]], "labels": [True, False]}
    (record,) = read_prompts(_json(tmp_path, [item]))
    assert record.data[1].tolist() == [1, 0]


def test_malformed_json_names_the_line_and_column(tmp_path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text('[\n  {"frame": 0, "object_id": 1,\n   "points": [[1, 2]],}\n]\n')
    _refused(path, "line 3, column", "not valid JSON")


def test_boolean_ids_and_frames_are_refused(tmp_path) -> None:
    path = _json(tmp_path, [{"frame": 0, "object_id": True, "points": [[1, 2]]}])
    _refused(path, "object_id must be an integer")


@pytest.mark.parametrize("mask", [3, "", None])
def test_mask_must_name_a_file(tmp_path, mask) -> None:
    path = _json(tmp_path, [{"frame": 0, "object_id": 1, "mask": mask}])
    _refused(path, "prompt 1", "mask must be the path of a TIFF file")


def test_a_mask_that_is_not_a_tiff_is_refused(tmp_path) -> None:
    (tmp_path / "mask.tif").write_text("not a tiff", encoding="utf-8")
    path = _json(tmp_path, [{"frame": 0, "object_id": 1, "mask": "mask.tif"}])
    _refused(path, "prompt 1", "cannot be read as a TIFF")


def test_json_with_a_byte_order_mark_is_read(tmp_path) -> None:
    path = tmp_path / "prompts.json"
    text = json.dumps([{"frame": 0, "object_id": 1, "points": [[1, 2]]}])
    path.write_bytes(text.encode("utf-8-sig"))
    (record,) = read_prompts(path)
    assert record.data[0].tolist() == [[1.0, 2.0]]


# --- CSV -----------------------------------------------------------------------------------


def test_excel_csv_with_a_byte_order_mark_just_works(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_bytes((HEADER + "0,0,10.5,20.25,1,1\r\n1,2,3,4,2,0\r\n").encode("utf-8-sig"))
    records = read_prompts(path)
    assert [(r.frame, r.object_id) for r in records] == [(0, 1), (2, 2)]
    assert records[1].data[1].tolist() == [0]


def test_frame_y_x_header_with_a_byte_order_mark_just_works(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_bytes("frame,y,x\n1,5,6\n".encode("utf-8-sig"))
    (record,) = read_prompts(path)
    assert (record.frame, record.data[0].tolist()) == (1, [[5.0, 6.0]])


def test_non_utf8_csv_says_save_it_as_utf8(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_bytes((HEADER + "0,0,1,2,1,1 # Zelle ").encode("utf-8") + "ä\n".encode("latin-1"))
    _refused(path, "line 2", "not UTF-8", "save it as UTF-8")


def test_utf16_csv_says_save_it_as_utf8(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_bytes((HEADER + "0,0,1,2,1,1\n").encode("utf-16"))
    _refused(path, "UTF-16", "save it as UTF-8")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_csv_coordinates_name_the_line(tmp_path, bad) -> None:
    path = tmp_path / "points.csv"
    path.write_text(HEADER + "0,0,1,2,1,1\n\n1,0," + bad + ",3,1,1\n", encoding="utf-8")
    _refused(path, "line 4", "finite numbers")  # line numbers count the blank line too


def test_missing_values_name_the_line_and_the_columns(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_text(HEADER + "0,0,1,2,1,1\n1,0,3\n", encoding="utf-8")
    _refused(path, "line 3", "no value for axis-2, object_id, positive")


def test_a_bad_label_names_the_line(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_text(HEADER + "0,0,1,2,1,maybe\n", encoding="utf-8")
    _refused(path, "line 2", "'positive' has 'maybe'", "use 1 (foreground) or 0")


def test_odd_axis_column_names_are_not_a_crash(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("index,axis-a,axis-,frame,y,x\n0,q,r,1,2,3\n", encoding="utf-8")
    (record,) = read_prompts(path)  # axis-a / axis- are not napari axes: frame,y,x are used
    assert (record.frame, record.data[0].tolist()) == (1, [[2.0, 3.0]])


def test_semicolon_separated_csv_says_to_use_commas(tmp_path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("frame;y;x\n1;2;3\n", encoding="utf-8")
    _refused(path, "line 1", "no coordinate columns", "';'")


def test_a_folder_or_a_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(PromptFileError, match="is a folder, not a prompt file"):
        read_prompts(tmp_path)
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompts(tmp_path / "nothing.json")


# --- checks against the stack --------------------------------------------------------------


def test_object_ids_above_the_label_range_are_refused(tmp_path) -> None:
    path = _json(tmp_path, [{"frame": 0, "object_id": 70000, "points": [[1, 2]]}])
    with pytest.raises(PromptFileError, match="object 70000 .*1 to 65535"):
        check_prompts(read_prompts(path), 2, 10, 10)


def test_nan_in_records_built_in_code_is_refused() -> None:
    from napari_sam2.tracking.prompts_io import PromptRecord

    points = (np.array([[np.nan, 1.0]]), np.array([1]))
    with pytest.raises(PromptFileError, match="object 1 on frame 0: point .* NaN or infinite"):
        check_prompts([PromptRecord(0, 1, "points", points)], 2, 10, 10)
    box = (0.0, 0.0, np.inf, 4.0)
    with pytest.raises(PromptFileError, match="box .* NaN or infinite"):
        check_prompts([PromptRecord(0, 1, "box", box)], 2, 10, 10)
