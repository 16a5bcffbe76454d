"""The widget's Qt-free session controller, with the scripted tracker."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.tracking.layer_prompts import PointPrompt, PromptSet
from napari_sam2.widget.session import FrameState, TrackingSession
from scripted_tracker import ScriptedObject, ScriptedTracker


def make_session():
    tracker = ScriptedTracker(
        (6, 32, 32), [ScriptedObject(1, center=(10, 10), radius=4, absent={3})]
    )
    labels = np.zeros((6, 32, 32), np.uint16)
    return TrackingSession(tracker, labels), tracker, labels


def clicks(*points, labels=None):
    pts = np.array(points, float)
    return PointPrompt(pts, np.array(labels or [1] * len(pts)))


def test_appended_clicks_are_sent_alone_and_moves_resend_all():
    session, tracker, _ = make_session()
    session.apply_prompts(PromptSet(points={(0, 1): clicks((10, 10))}))
    session.apply_prompts(PromptSet(points={(0, 1): clicks((10, 10), (12, 12), labels=[1, 0])}))
    assert [c[0] for c in tracker.calls] == ["add_points", "add_points"]
    np.testing.assert_array_equal(tracker.calls[1][1][2], [[12, 12]])
    session.apply_prompts(PromptSet(points={(0, 1): clicks((11, 10), (12, 12), labels=[1, 0])}))
    assert [c[0] for c in tracker.calls[2:]] == ["clear_prompts", "add_points"]
    assert len(tracker.calls[3][1][2]) == 2


def test_results_are_recorded_with_gaps_and_timeline_states():
    session, tracker, labels = make_session()
    for r in session.apply_prompts(PromptSet(points={(0, 1): clicks((10, 10))})):
        session.record(r)
    for r in session.propagate("forward"):
        session.record(r)
    assert [labels[t].max() for t in range(6)] == [1, 1, 1, 0, 1, 1]
    ids, states = session.timeline()
    assert ids == [1]
    assert states[0, 3] == FrameState.ABSENT and states[0, 2] == FrameState.PRESENT
    assert session.state(1, 2) == FrameState.PRESENT
    session.scores[1][4] = 0.3
    assert session.state(1, 4) == FrameState.UNCERTAIN


def test_start_frame_follows_edits_and_resets_after_a_finished_run():
    session, tracker, _ = make_session()
    session.apply_prompts(PromptSet(points={(2, 1): clicks((10, 10)), (4, 1): clicks((9, 9))}))
    assert session.start_frame("forward") == 2 and session.start_frame("reverse") == 4
    list(session.propagate("both"))
    assert ("propagate", (2, False, None)) in tracker.calls
    assert ("propagate", (4, True, None)) in tracker.calls
    session.propagation_finished()
    assert session.start_frame("forward") is None
    with pytest.raises(ValueError, match="direction"):
        session.start_frame("sideways")


def test_propagate_stops_when_asked_and_objects_without_prompts_are_removed():
    session, tracker, labels = make_session()
    session.apply_prompts(PromptSet(points={(0, 1): clicks((10, 10))}))
    seen = []
    for r in session.propagate(should_stop=lambda: len(seen) >= 2):
        seen.append(r.frame_index)
    assert seen == [0, 1]
    for r in session.apply_prompts(PromptSet()):
        session.record(r)
    assert ("remove_object", (1,)) in tracker.calls
    with pytest.raises(ValueError, match="nothing to propagate"):
        list(session.propagate())


def test_remove_object_keeps_other_labels():
    session, tracker, labels = make_session()
    session.apply_prompts(PromptSet(points={(0, 1): clicks((10, 10))}))
    for r in session.propagate():
        session.record(r)
    labels[:, 30, 30] = 5
    session.remove_object(1)
    assert set(np.unique(labels)) == {0, 5}
    assert session.object_ids() == []


def test_legs_count_the_frames_the_tracker_yields():
    session, tracker, _ = make_session()
    session.apply_prompts(PromptSet(points={(2, 1): clicks((10, 10)), (4, 1): clicks((9, 9))}))
    legs = session.legs("both")
    assert [(leg.name, list(leg.frames)) for leg in legs] == [
        ("forward", [2, 3, 4, 5]),
        ("reverse", [4, 3, 2, 1, 0]),
    ]
    for leg in legs:
        assert [r.frame_index for r in session.propagate_leg(leg)] == list(leg.frames)
    assert len(session.legs("reverse", start_frame=0)[0]) == 0  # nothing before frame 0
    assert list(session.legs("forward", start_frame=1, max_frames=2)[0].frames) == [1, 2, 3]
