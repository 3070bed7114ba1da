"""The scripted annotator of the annotation-cost benchmark: real editor actions, worst body first, counted."""

from __future__ import annotations

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.editor.simulate import annotate, brush_stroke_for
from cervkit.editor.state import EditorState


@pytest.fixture(scope="module")
def phantom():
    from cervkit.data.synth.phantom import make_phantom

    return make_phantom("xray", seed=7, size=(320, 320))


def _without(labels: np.ndarray, k: int) -> np.ndarray:
    return np.where(labels == k, 0, labels).astype(np.uint8)


def test_a_missed_body_takes_one_box_and_many_strokes(phantom) -> None:
    missed = 3
    draft = _without(phantom.labels, missed)
    box = annotate(EditorState(phantom.image, draft), phantom.labels, mode="box", model="xray", max_actions=60)
    assert box.reached and box.kinds.get("box") == 1 and box.model_seconds > 0
    assert min(box.dice_end) >= 0.95 and box.dice_start[missed - 1] == 0.0
    state = EditorState(phantom.image, draft)
    brush = annotate(state, phantom.labels, mode="brush", max_actions=60)
    assert brush.reached and brush.actions > 3 * box.actions, (brush.kinds, box.kinds)
    assert state.history.undo_depth == brush.actions, "every counted action is one editor step"
    np.testing.assert_array_equal(brush.labels[draft > 0], draft[draft > 0])  # other bodies kept


def test_a_right_map_needs_nothing_and_bad_input_is_refused(phantom) -> None:
    done = annotate(EditorState(phantom.image, phantom.labels), phantom.labels, mode="brush")
    assert done.reached and done.actions == 0
    with pytest.raises(CervkitInputError, match="mode"):
        annotate(EditorState(phantom.image), phantom.labels, mode="lasso")
    with pytest.raises(CervkitInputError, match="model"):
        annotate(EditorState(phantom.image), phantom.labels, mode="box")


def test_one_stroke_covers_the_largest_wrong_region(phantom) -> None:
    body = phantom.labels == 2
    cut = phantom.labels.copy()
    rows = np.nonzero(body.any(axis=1))[0]
    cut[rows[: len(rows) // 3]] = np.where(body[rows[: len(rows) // 3]], 0, cut[rows[: len(rows) // 3]])
    points, radius, erase = brush_stroke_for(cut, body, 2)
    assert not erase and len(points) >= 2 and radius >= 0.7
    state = EditorState(phantom.image, cut)
    state.protect_others, state.active_label, state.brush_radius = True, 2, radius
    state.stroke(points)
    missing_before = (body & (cut != 2)).sum()
    assert (body & (state.labels != 2)).sum() < 0.5 * missing_before
