"""The command line as a user meets it: progress counts, --version, --model PATH, --out
folders that do not exist yet, help texts. Runs the real tracker with the small test network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import napari_sam2
from napari_sam2 import cli
from napari_sam2.tracking import propagation_frames
from small_model import config_values, moving_blob_stack

SLICES = 16


@pytest.fixture
def volume(tmp_path) -> tuple[Path, Path]:
    """A 16-slice (Z, Y, X) stack and a point prompt on slice 8."""
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, moving_blob_stack(frames=SLICES, size=32), metadata={"axes": "ZYX"})
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 8, "object_id": 1, "points": [[16, 10]]}]))
    return path, prompts


@pytest.fixture
def small_args(tmp_path, small_config, small_checkpoint) -> list[str]:
    config = tmp_path / "small.json"  # flat: the keys --config documents, no "values" level
    config.write_text(json.dumps(config_values(small_config)))
    return ["--config", str(config), "--checkpoint", str(small_checkpoint), "--device", "cpu"]


def progress_lines(stderr: str) -> dict[str, list[tuple[int, int, int]]]:
    """Each progress pass's updates as (done, total, frame), from the carriage-return lines."""
    passes: dict[str, list[tuple[int, int, int]]] = {}
    for line in re.split(r"[\r\n]", stderr):
        match = re.fullmatch(r"tracking (\w+): (\d+)/(\d+) frames \(frame (\d+), .*\)", line)
        if match:
            name, done, total, frame = match.groups()
            passes.setdefault(name, []).append((int(done), int(total), int(frame)))
    return passes


def recording_tracker(monkeypatch) -> list[int]:
    """Let the CLI use the real tracker, and record the frames its propagation yields."""
    yielded: list[int] = []
    make = cli._make_tracker

    def factory(*args, **kwargs):
        tracker = make(*args, **kwargs)
        propagate = tracker.propagate

        def recorded(*p_args, **p_kwargs):
            for result in propagate(*p_args, **p_kwargs):
                yielded.append(result.frame_index)
                yield result

        tracker.propagate = recorded
        return tracker

    monkeypatch.setattr(cli, "_make_tracker", factory)
    return yielded


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # both: forward 8..15, then reverse 8..0; slice 8 is visited twice, 16 are written
        ([], {"forward": list(range(8, 16)), "reverse": list(range(8, -1, -1))}),
        (["--start", "0"], {"forward": list(range(16))}),  # reverse from 0 visits nothing
        (["--direction", "reverse", "--max-frames", "3"], {"reverse": [8, 7, 6, 5]}),
        (["--direction", "forward", "--max-frames", "2"], {"forward": [8, 9, 10]}),
    ],
)
def test_progress_counts_the_frames_each_pass_yields(
    tmp_path, volume, small_args, monkeypatch, capsys, options, expected
):
    stack, prompts = volume
    yielded = recording_tracker(monkeypatch)
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert cli.main(argv + small_args + options) == 0
    err = capsys.readouterr().err
    passes = progress_lines(err)
    assert list(passes) == list(expected)
    assert yielded == [f for frames in expected.values() for f in frames]
    for name, frames in expected.items():
        updates = passes[name]
        # one update per yielded frame, counting up to a total that is the pass's length
        assert [u[0] for u in updates] == list(range(1, len(frames) + 1))
        assert {u[1] for u in updates} == {len(frames)}
        assert [u[2] for u in updates] == frames
    distinct = len({f for frames in expected.values() for f in frames})
    assert f"napari-sam2: {distinct} frames written" in err


def test_progress_passes_use_propagation_frames():
    assert cli.propagation_passes(SLICES, [8], "both", None, None) == [
        ("forward", len(propagation_frames(SLICES, 8, False, None))),
        ("reverse", len(propagation_frames(SLICES, 8, True, None))),
    ]
    assert cli.propagation_passes(SLICES, [3, 9], "both", None, 2) == [
        ("forward", 3),
        ("reverse", 3),
    ]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-sam2 {napari_sam2.__version__}"


def test_out_in_folders_that_do_not_exist_yet(tmp_path, volume, small_args, capsys):
    stack, prompts = volume
    out = tmp_path / "new" / "deeper" / "x.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    assert cli.main(argv + small_args + ["--max-frames", "1"]) == 0
    assert tifffile.imread(out).shape == (SLICES, 32, 32)
    assert (out.parent / "x.csv").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.csv", "x.run.json", "x.tif"]

    folder = tmp_path / "a" / "b" / "results"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(folder), "--quiet"]
    assert cli.main(argv + small_args + ["--max-frames", "1"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["labels.tif", "presence.csv", "run.json"]


def test_out_folders_are_not_created_when_the_input_is_bad(tmp_path, volume, small_args, capsys):
    stack, _ = volume
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"frame": 99, "object_id": 1, "points": [[1, 1]]}]))
    out = tmp_path / "new" / "x.tif"
    argv = ["track", str(stack), "--prompts", str(bad), "--out", str(out), "--quiet"]
    assert cli.main(argv + small_args) == 2
    assert "beyond the stack" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_out_under_a_file_is_a_clear_error(tmp_path, volume, small_args, capsys):
    stack, prompts = volume
    (tmp_path / "plain").write_text("a file")
    argv = ["track", str(stack), "--prompts", str(prompts), "--quiet"]
    argv += ["--out", str(tmp_path / "plain" / "x.tif")]
    assert cli.main(argv + small_args) == 2
    assert "is a file" in capsys.readouterr().err


def test_config_json_with_or_without_a_values_key(tmp_path, volume, small_args):
    stack, prompts = volume
    config = Path(small_args[1])
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"values": json.loads(config.read_text())}))
    args = ["--config", str(wrapped)] + small_args[2:]
    out = tmp_path / "w.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    assert cli.main(argv + args + ["--max-frames", "0"]) == 0
    assert out.is_file()


def test_model_path_of_a_custom_architecture_asks_for_config(
    tmp_path, volume, small_checkpoint, capsys
):
    stack, prompts = volume
    out = tmp_path / "out"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    assert cli.main(argv + ["--model", str(small_checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2: error: --model ")
    assert "--config CONFIG.json --checkpoint" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "missing/tiny.pt"], "does not exist"),
        (["--model", "sam9_huge"], "unknown model"),
        (["--model", "x.pt", "--checkpoint", "y.pt"], "--model PATH names the checkpoint"),
        (["--model", "sam2.1_hiera_tiny", "--config", "c.json"], "either --model or --config"),
    ],
)
def test_model_option_errors(tmp_path, volume, capsys, extra, message):
    stack, prompts = volume
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    assert cli.main(argv + extra + ["--device", "cpu", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Random weights of the official sam2.1_hiera_tiny architecture (~150 MB, once)."""
    from napari_sam2.model import SAM2Config, SAM2Model

    torch.manual_seed(0)
    model = SAM2Model(SAM2Config.from_name("sam2.1_hiera_tiny"))
    path = tmp_path_factory.mktemp("tiny") / "my_tiny_finetune.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.mark.slow
def test_model_path_of_an_official_architecture(tmp_path, volume, tiny_checkpoint, capsys):
    stack, prompts = volume
    out = tmp_path / "tiny.tif"
    argv = ["track", str(stack), "--prompts", str(prompts), "--out", str(out)]
    argv += ["--model", str(tiny_checkpoint), "--device", "cpu", "--max-frames", "0"]
    argv += ["--direction", "forward"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert tifffile.imread(out).shape == (SLICES, 32, 32)
    assert "tracking forward: 1/1 frames" in capsys.readouterr().err


@pytest.mark.slow
def test_track_api_takes_a_checkpoint_path(volume, tiny_checkpoint):
    stack, prompts = volume
    result = napari_sam2.track(
        stack, prompts, model=str(tiny_checkpoint), device="cpu", max_frames=0, direction="forward"
    )
    assert result.labels.shape == (SLICES, 32, 32) and result.frames_written == {8}
    assert np.issubdtype(result.labels.dtype, np.integer)


def all_help_texts() -> str:
    parser = cli.build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # the subcommands' parsers
        texts += [sub.format_help() for sub in action.choices.values()]
    return "\n".join(texts)


def test_help_texts_stand_on_their_own():
    text = all_help_texts()
    assert "--version" in text and "--model" in text
    for internal in (r"\bdecision\b", r"\bD\d\b", "mini/", "reference/", "SEMANTICS", "DESIGN"):
        assert not re.search(internal, text), internal
    # --config says which keys its JSON holds
    for key in ("image_size", "trunk.embed_dim", "memory_attention.num_layers"):
        assert key in text


def test_cli_docs_mention_no_files_outside_the_repository():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    for outside in ("reference/", "mini/config", "shared/", "decision D"):
        assert outside not in docs
    assert "--version" in docs and "--model PATH" in docs
