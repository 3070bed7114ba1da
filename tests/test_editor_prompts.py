"""Box prompts and click-to-refine: the crop segmenter turns a box into a body, resolved against neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.editor.prompts import box_prompt_labels, crop_segmenter, grown_box
from cervkit.editor.state import EditorState
from cervkit.inference.segmenter import CropPrediction


def _truth() -> np.ndarray:
    labels = np.zeros((120, 60), np.uint8)
    for k, top in enumerate((10, 40, 70), start=1):
        labels[top:top + 22, 15:45] = k
    return labels


class TruthSegmenter:
    """A stand-in crop segmenter: each crop's probability is the true body it is centred on (0.9), plus a
    0.6 leak over whatever else of the truth falls in the window."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = truth
        self.calls = 0

    def predict_crops(self, image: np.ndarray, boxes: np.ndarray) -> list[CropPrediction]:
        self.calls += 1
        out = []
        h, w = self.truth.shape
        for x0, y0, x1, y1 in boxes:
            window = (max(0, int(x0) - 3), max(0, int(y0) - 3), min(w, int(np.ceil(x1)) + 3), min(h, int(np.ceil(y1)) + 3))
            wx0, wy0, wx1, wy1 = window
            part = self.truth[wy0:wy1, wx0:wx1]
            cy, cx = int((y0 + y1) / 2) - wy0, int((x0 + x1) / 2) - wx0
            centre = part[min(max(cy, 0), part.shape[0] - 1), min(max(cx, 0), part.shape[1] - 1)]
            prob = np.where(part > 0, 0.6, 0.0).astype(np.float32)
            prob[(part == centre) & (part > 0)] = 0.9
            out.append(CropPrediction(window, prob))
        return out


def test_a_missed_body_is_drawn_by_one_box_as_one_undoable_step() -> None:
    truth = _truth()
    draft = np.where(truth == 2, 0, truth).astype(np.uint8)  # the middle body was missed
    state = EditorState(np.zeros(truth.shape, np.float32), draft)
    seg = TruthSegmenter(truth)
    result = state.box_prompt(14, 39, 46, 63, seg)
    assert result.label == 2 and not result.replaced  # the lowest free label
    np.testing.assert_array_equal(state.labels, truth)  # the body drawn, the neighbours untouched
    assert state.active_label == 2 and state.can_undo
    state.undo()
    np.testing.assert_array_equal(state.labels, draft)


def test_neighbours_keep_the_pixels_they_are_surer_of() -> None:
    truth = _truth()
    draft = np.where(truth == 2, 0, truth).astype(np.uint8)
    # a sloppy box reaching into both neighbours: their own crops (0.9) beat the prompt's leak (0.6)
    result = box_prompt_labels(np.zeros(truth.shape, np.float32), draft, (10, 25, 50, 78), TruthSegmenter(truth))
    np.testing.assert_array_equal(result.labels == 1, truth == 1)
    np.testing.assert_array_equal(result.labels == 3, truth == 3)
    np.testing.assert_array_equal(result.labels == result.label, truth == 2)


def test_a_box_over_an_existing_body_redraws_it() -> None:
    truth = _truth()
    draft = truth.copy()
    draft[40:62, 15:45] = 0
    draft[45:55, 20:40] = 2  # body 2 drawn too small
    state = EditorState(np.zeros(truth.shape, np.float32), draft)
    result = state.box_prompt(15, 40, 45, 62, TruthSegmenter(truth))
    assert result.replaced and result.label == 2
    np.testing.assert_array_equal(state.labels, truth)


def test_click_to_refine_regrows_a_body_cut_too_tight() -> None:
    truth = _truth()
    draft = truth.copy()
    draft[(truth == 3)] = 0
    draft[74:88, 19:41] = 3  # cut tight on every side
    state = EditorState(np.zeros(truth.shape, np.float32), draft)
    label = state.body_at(30, 80)
    assert label == 3
    box = grown_box(state.labels, label, margin=0.3)
    assert box[0] < 19 and box[2] > 41 and box[1] < 74 and box[3] > 88
    state.refine_body(label, TruthSegmenter(truth), margin=0.3)
    np.testing.assert_array_equal(state.labels, truth)


def test_nothing_found_leaves_no_step_and_bad_boxes_are_refused() -> None:
    truth = _truth()
    state = EditorState(np.zeros(truth.shape, np.float32), truth.copy())
    empty = TruthSegmenter(np.zeros_like(truth))
    result = state.box_prompt(0, 100, 50, 119, empty)
    assert result.label == 0 and not state.can_undo
    with pytest.raises(CervkitInputError, match="too small"):
        state.box_prompt(5, 5, 6, 6, empty)
    with pytest.raises(CervkitInputError, match="no body 9"):
        grown_box(truth, 9)


def test_the_segmenter_is_loaded_once_and_baselines_are_refused() -> None:
    truth = _truth()
    state = EditorState(np.zeros(truth.shape, np.float32), truth.copy())

    class Cascade:
        segmenter = TruthSegmenter(truth)

    cascade = Cascade()
    assert crop_segmenter(cascade) is cascade.segmenter
    state.box_prompt(15, 40, 45, 62, cascade)
    state.box_prompt(15, 10, 45, 32, cascade)
    assert len(state._prompt_models) == 1 and cascade.segmenter.calls == 2

    class WholeImage:
        def predict(self, image):  # no crop segmenter
            return None

    with pytest.raises(CervkitInputError, match="no crop segmenter"):
        crop_segmenter(WholeImage())


def test_auto_segment_never_wipes_manual_edits_without_an_undo_step() -> None:
    from cervkit.editor.widget import MaskEditor

    truth = _truth()
    mine = np.zeros(truth.shape, np.uint8)
    mine[8:34, 12:48] = 1  # the user's own, larger outline of the top body

    class Predictor:
        @staticmethod
        def predict(image):
            return truth

    editor = MaskEditor(np.zeros(truth.shape, np.float32), mine)
    editor.auto_segment(Predictor(), mode="merge")  # the user's pixels stay; new bodies only where it was empty
    assert (editor.labels[mine == 1] == 1).all()
    assert sorted(np.unique(editor.labels)) == [0, 1, 2, 3]
    np.testing.assert_array_equal(editor.labels[truth == 3] > 0, True)
    editor.auto_segment(Predictor())  # replace: one step, and undo brings the user's map back
    np.testing.assert_array_equal(editor.labels, truth)
    editor.undo()
    assert (editor.labels[mine == 1] == 1).all() and editor.labels.max() == 3
    with pytest.raises(CervkitInputError, match="mode"):
        editor.auto_segment(Predictor(), mode="wipe")


def test_box_key_and_auto_key() -> None:
    from cervkit.editor.widget import MaskEditor

    truth = _truth()
    editor = MaskEditor(np.zeros(truth.shape, np.float32), np.zeros_like(truth))

    class Predictor:
        segmenter = TruthSegmenter(truth)

        @staticmethod
        def predict(image):
            return truth

    editor.run = Predictor()
    assert editor.press("x") == "box" and editor.state.tool == "box"
    assert editor.press("a") == "auto"
    np.testing.assert_array_equal(editor.labels, truth)
    assert editor.box_prompt(14, 39, 46, 63) == 2, "a box over body 2 redraws body 2"
