"""The tests' own small network has the reference mini configuration and loads strictly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from napari_sam2.model import SAM2Config, build_sam2


def test_small_config_is_the_reference_mini_configuration(small_config, mini_dir):
    values = json.loads((mini_dir / "config.json").read_text())["values"]
    mini = SAM2Config.from_dict(values)
    differ = [
        f.name
        for f in dataclasses.fields(SAM2Config)
        if f.name not in ("name", "extras")
        and getattr(small_config, f.name) != getattr(mini, f.name)
    ]
    assert differ == []


def test_small_checkpoint_loads_strictly_and_judges_presence_both_ways(
    small_config, small_checkpoint
):
    from napari_sam2.tracking import Tracker
    from small_model import moving_blob_stack

    model = build_sam2(small_config, checkpoint=small_checkpoint)
    state = torch.load(small_checkpoint, weights_only=True)["model"]
    assert set(state) == set(model.state_dict())
    with Tracker(model, moving_blob_stack(8)) as tracker:
        first = tracker.add_points(0, 1, [[48, 24]], [1])
        scores = [float(first.object_score_logits[0])]
        scores += [float(r.object_score_logits[0]) for r in tracker.propagate()]
    assert scores[0] > 0, "the prompted frame must hold the object"
    assert min(scores) < 0, "some frames must judge the object absent (gaps get exercised)"
    assert np.isfinite(scores).all()
