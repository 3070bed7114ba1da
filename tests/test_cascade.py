"""Pasting crops back: overlaps go to the more probable crop, empty crops are dropped, order is top to bottom.

The stage models are replaced here by tiny deterministic stand-ins whose outputs are known exactly: these
tests check the cascade's geometry and bookkeeping, not any model's quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cervkit.inference.cascade import Cascade, paste_by_probability


def test_overlap_resolved_by_probability_not_order() -> None:
    shape = (40, 40)
    boxes = [(0, 0, 30, 20), (0, 10, 30, 30)]  # rows 10..19 overlap
    upper = np.full((20, 30), 0.6, np.float32)
    lower = np.full((20, 30), 0.9, np.float32)
    for order in ([0, 1], [1, 0]):
        labels, kept, mean_prob = paste_by_probability(shape, [boxes[i] for i in order],
                                                       [[upper, lower][i] for i in order])
        assert (labels[0:10, 0:30] == 1).all() and (labels[10:30, 0:30] == 2).all()
        assert labels[30:].max() == 0 and labels[:, 30:].max() == 0
        assert [order[k] for k in kept] == [0, 1]  # label 1 came from the upper crop
        assert mean_prob == pytest.approx([0.6, 0.9])


def test_threshold_min_area_and_top_to_bottom() -> None:
    shape = (60, 20)
    boxes = [(0, 40, 20, 55), (0, 0, 20, 15), (0, 20, 20, 35)]
    low = np.full((15, 20), 0.3, np.float32)         # under threshold: dropped
    tiny = np.zeros((15, 20), np.float32)
    tiny[0, 0:5] = 0.9                                # 5 px < min_area: dropped
    good = np.full((15, 20), 0.8, np.float32)
    labels, kept, _ = paste_by_probability(shape, boxes, [good, low, tiny], min_area=10)
    assert labels.max() == 1 and kept == [0] and (labels[40:55] == 1).all()
    labels, kept, _ = paste_by_probability(shape, boxes, [good, good[:, :], good])
    assert kept == [1, 2, 0], "labels numbered top to bottom whatever the detector's order"


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        paste_by_probability((10, 10), [(0, 0, 5, 5)], [np.ones((4, 5), np.float32)])
    with pytest.raises(ValueError, match="boxes but"):
        paste_by_probability((10, 10), [(0, 0, 5, 5)], [])


@dataclass
class _Det:
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class _Crop:
    int_box: tuple[int, int, int, int]
    prob: np.ndarray


class _BrightDetector:
    """Boxes are given; the stand-in returns them as detections."""

    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = boxes

    def predict(self, images, conf=0.25):
        n = len(self.boxes)
        return [_Det(self.boxes, np.linspace(0.9, 0.5, n).astype(np.float32), np.zeros(n, np.int64))]


class _ThresholdSegmenter:
    """Probability = image intensity inside the box (so bright squares are 'vertebrae')."""

    def predict_crops(self, image, boxes):
        out = []
        for x0, y0, x1, y1 in np.round(boxes).astype(int):
            out.append(_Crop((x0, y0, x1, y1), image[y0:y1, x0:x1].astype(np.float32)))
        return out


def test_cascade_end_to_end_with_stand_ins() -> None:
    image = np.zeros((64, 48), np.float32)
    image[5:15, 10:30] = 1.0
    image[25:35, 12:32] = 1.0
    boxes = np.array([[8, 23, 34, 37], [8, 3, 34, 17], [40, 50, 47, 60]], np.float32)  # third box: empty
    pred = Cascade(_BrightDetector(boxes), _ThresholdSegmenter()).predict(image)
    assert pred.n_detected == 3 and pred.n_vertebrae == 2
    assert (pred.labels[5:15, 10:30] == 1).all() and (pred.labels[25:35, 12:32] == 2).all()
    assert (pred.labels > 0).sum() == 400
    np.testing.assert_array_equal(pred.boxes, boxes[[1, 0]])
    assert pred.scores[0] == pytest.approx(0.7) and set(pred.seconds) == {"detect", "segment", "paste", "total"}


class _LevelDetector(_BrightDetector):
    names = {0: "T11", 1: "T12"}

    def predict(self, images, conf=0.25):
        return [_Det(self.boxes, np.array([0.9, 0.6, 0.8], np.float32), np.array([0, 0, 1], np.int64))]


def test_per_level_detector_keeps_one_box_per_level() -> None:
    image = np.zeros((64, 48), np.float32)
    image[5:15, 10:30] = 1.0   # the true T11
    image[25:35, 12:32] = 1.0  # the true T12
    image[45:55, 12:32] = 1.0  # a look-alike, also called T11 but less confident
    boxes = np.array([[8, 3, 34, 17], [8, 43, 34, 57], [8, 23, 34, 37]], np.float32)
    pred = Cascade(_LevelDetector(boxes), _ThresholdSegmenter()).predict(image)
    assert pred.n_detected == 2 and pred.n_vertebrae == 2 and list(pred.classes) == [0, 1]
    assert pred.labels[50, 20] == 0 and pred.labels[10, 20] == 1 and pred.labels[30, 20] == 2
    single = Cascade(_LevelDetector(boxes), _ThresholdSegmenter(), one_per_class=False).predict(image)
    assert single.n_vertebrae == 3


def test_a_detection_off_the_spine_is_not_drawn() -> None:
    image = np.zeros((120, 120), np.float32)
    boxes = []
    for i in range(5):  # a column of five bodies, 14 px tall, 20 px apart
        y = 10 + 20 * i
        image[y:y + 14, 60:84] = 1.0
        boxes.append([58, y - 2, 86, y + 16])
    image[8:40, 2:40] = 1.0  # a bright region beside the column (a brain, a bowel loop)
    boxes.append([0, 6, 42, 42])
    boxes = np.array(boxes, np.float32)
    pred = Cascade(_BrightDetector(boxes), _ThresholdSegmenter()).predict(image)
    assert pred.n_vertebrae == 5 and pred.labels[20, 20] == 0 and pred.n_detected == 5
    loose = Cascade(_BrightDetector(boxes), _ThresholdSegmenter(), chain=False).predict(image)
    assert loose.n_vertebrae == 6 and loose.labels[20, 20] > 0
