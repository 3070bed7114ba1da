"""Weak detections that continue the spine chain (a C7 behind the shoulders, a body cut by the border)."""

from __future__ import annotations

import numpy as np

from cervkit.inference.cascade import Cascade
from cervkit.inference.chain_recall import extend_chain, weak_body_kept
from test_cascade import _Det, _ThresholdSegmenter


def _column(n: int, *, top: int = 10, step: int = 20, size: int = 14) -> list[list[float]]:
    return [[58, top + step * i, 84, top + step * i + size] for i in range(n)]


def test_a_weak_box_where_the_chain_expects_the_next_body_is_added() -> None:
    strong = _column(5)
    weak = [[58, 110, 84, 124],   # the next body down: added
            [0, 110, 26, 124],    # beside the column at that height: not where a body is expected
            [58, -10, 84, 4]]     # above the top: not added (above C2 lies the atlas)
    boxes = np.array(strong + weak, np.float32)
    scores = np.array([0.9] * 5 + [0.1, 0.2, 0.2], np.float32)
    keep = extend_chain(boxes, scores, [0, 1, 2, 3, 4])
    assert keep.tolist() == [0, 1, 2, 3, 4, 5]
    assert extend_chain(boxes, scores, [0, 1]).tolist() == [0, 1]  # two boxes give no usual step


def test_a_gap_is_filled_only_by_a_box_of_body_size() -> None:
    column = _column(6)
    boxes = np.array([column[i] for i in (0, 1, 3, 4, 5)] + [column[2]] + [[50, 50, 92, 72]], np.float32)
    scores = np.array([0.9] * 5 + [0.06, 0.3], np.float32)  # the oversized box scores higher: size rules it out
    assert extend_chain(boxes, scores, [0, 1, 2, 3, 4]).tolist() == [0, 1, 5, 2, 3, 4]
    scores[5] = 0.0
    boxes[5] = [58, 52, 84, 56]  # a flat box at the right place is not a body either
    assert extend_chain(boxes, scores, [0, 1, 2, 3, 4]).tolist() == [0, 1, 2, 3, 4]


def test_the_segmenter_has_the_last_word_on_a_weak_box() -> None:
    prob = np.zeros((20, 20), np.float32)
    assert not weak_body_kept(prob)
    prob[4:16, 4:16] = 0.95
    assert weak_body_kept(prob)
    prob[4:16, 4:16] = 0.6  # a body the segmenter doubts
    assert not weak_body_kept(prob)


class _ConfDetector:
    """Returns the given boxes and scores above the asked confidence."""

    def __init__(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        self.boxes, self.scores = boxes, scores

    def predict(self, images, conf=0.25):
        keep = self.scores >= conf
        return [_Det(self.boxes[keep], self.scores[keep], np.zeros(int(keep.sum()), np.int64))]


def test_the_cascade_keeps_a_weakly_detected_body_below_the_chain_only_where_there_is_one() -> None:
    image = np.zeros((160, 120), np.float32)
    boxes = _column(6)
    for x0, y0, x1, y1 in boxes:
        image[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = 1.0
    boxes = np.array(boxes, np.float32)
    scores = np.array([0.9] * 5 + [0.1], np.float32)  # the sixth body (C7 behind the shoulders) is weak
    found = Cascade(_ConfDetector(boxes, scores), _ThresholdSegmenter()).predict(image)
    assert found.n_vertebrae == 6 and found.labels[116, 70] == 6
    strict = Cascade(_ConfDetector(boxes, scores), _ThresholdSegmenter(), recall_conf=None).predict(image)
    assert strict.n_vertebrae == 5 and strict.labels[116, 70] == 0
    image[110:125] = 0.0  # nothing there: the weak box adds nothing
    assert Cascade(_ConfDetector(boxes, scores), _ThresholdSegmenter()).predict(image).n_vertebrae == 5


def test_a_gap_follows_the_curve_of_the_spine() -> None:
    """Detector output on myosegmentum_17_s39 (unseen Dixon): L5 (box 5) scored 0.05 and the chain stepped
    from L4 to S1. L5 lies 14 pixels off the straight line from L4 to S1 (the lumbosacral angle), beyond
    the tolerance, but near L4 continued by the step from L3; the half L5 (box 6, 0.24) is no body's size."""
    boxes = np.array([[81, 0, 122, 19], [73, 15, 115, 53], [62, 53, 105, 89], [53, 88, 95, 125],
                      [53, 126, 92, 162], [56, 164, 98, 193], [59, 165, 95, 176], [91, 186, 126, 219]],
                     np.float32)
    scores = np.array([0.598, 0.774, 0.79, 0.822, 0.835, 0.051, 0.244, 0.537], np.float32)
    assert extend_chain(boxes, scores, [0, 1, 2, 3, 4, 7]).tolist() == [0, 1, 2, 3, 4, 5, 7]
