"""One box per level from classes and order: duplicates, neighbours named alike, gaps and extra bodies."""

from __future__ import annotations

import numpy as np
import pytest

from cervkit.inference.level_boxes import (
    chain_positions,
    merge_parts,
    select_level_boxes,
    spine_chain,
)


def _column(n: int, *, pitch: float = 30.0, height: float = 24.0, top: float = 10.0) -> np.ndarray:
    """``n`` boxes stacked down a straight spine, one per body."""
    y0 = top + pitch * np.arange(n)
    return np.stack([np.full(n, 40.0), y0, np.full(n, 80.0), y0 + height], axis=1)


def test_positions_count_missing_levels_and_merge_split_bodies() -> None:
    boxes = _column(6)
    np.testing.assert_array_equal(chain_positions(boxes), [0, 1, 2, 3, 4, 5])
    gap = np.delete(boxes, 2, axis=0)                     # the third body was not found
    np.testing.assert_array_equal(chain_positions(gap), [0, 1, 3, 4, 5])
    two_gone = np.delete(boxes, [2, 3], axis=0)
    np.testing.assert_array_equal(chain_positions(two_gone), [0, 1, 4, 5])
    split = np.insert(boxes, 2, boxes[1] + [0, 6, 0, 6], axis=0)  # a second box on body 2
    np.testing.assert_array_equal(chain_positions(split), [0, 1, 1, 2, 3, 4, 5])
    assert chain_positions(boxes[:1]).tolist() == [0] and chain_positions(boxes[:0]).tolist() == []


def test_real_case_neighbour_named_alike_is_kept_and_extra_top_body_dropped() -> None:
    """Detector output seen on a real MRI slice (zukic2014_17_s31) under a T1-like contrast.

    Seven levels are annotated; the detector also found the partly visible body above them and
    called bodies 3 and 4 both level 2. Keeping the best box per class lost body 4.
    """
    boxes = np.array([[200, 1, 232, 22], [199, 1, 234, 23], [196, 23, 230, 51], [197, 23, 230, 51],
                      [189, 49, 224, 81], [189, 49, 224, 81], [179, 80, 218, 113], [168, 112, 208, 146],
                      [161, 147, 198, 180], [156, 184, 194, 220], [159, 219, 201, 262]], np.float32)
    scores = np.array([0.36, 0.52, 0.76, 0.45, 0.59, 0.44, 0.52, 0.77, 0.66, 0.73, 0.83], np.float32)
    classes = np.array([1, 0, 1, 0, 2, 1, 2, 3, 4, 5, 6])
    keep = select_level_boxes(boxes, scores, classes, 7)
    np.testing.assert_array_equal(keep, [2, 4, 6, 7, 8, 9, 10])


def test_boxes_off_the_column_are_not_part_of_the_spine() -> None:
    boxes = _column(6)
    off = np.array([[95.0, 55.0, 125.0, 79.0]])          # beside bodies 2 and 3, e.g. a posterior element
    both = np.concatenate([boxes, off])
    scores = np.array([0.6] * 6 + [0.9])
    np.testing.assert_array_equal(spine_chain(both, scores), np.arange(6))
    keep = select_level_boxes(both, scores, np.array([0, 1, 2, 3, 4, 5, 2]), 6)
    np.testing.assert_array_equal(keep, np.arange(6))
    assert spine_chain(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_real_case_false_boxes_beside_the_spine() -> None:
    """Detector output on zukic2014_17_s40 under a T1-like contrast: two boxes beside the column."""
    boxes = np.array([[197, 1, 230, 23], [192, 22, 227, 51], [192, 22, 226, 51], [184, 49, 221, 80],
                      [185, 49, 220, 80], [177, 79, 214, 112], [224, 103, 253, 132], [168, 111, 204, 144],
                      [159, 146, 197, 181], [156, 183, 194, 219], [213, 199, 244, 228], [160, 220, 199, 261]],
                     np.float32)
    scores = np.array([0.5, 0.41, 0.6, 0.44, 0.67, 0.58, 0.26, 0.77, 0.67, 0.62, 0.49, 0.88], np.float32)
    classes = np.array([0, 0, 1, 2, 1, 2, 3, 3, 4, 5, 5, 6])
    np.testing.assert_array_equal(select_level_boxes(boxes, scores, classes, 7), [2, 4, 5, 7, 8, 9, 11])


def test_one_box_per_body_whatever_its_class() -> None:
    boxes = _column(3)
    dup = np.concatenate([boxes, boxes[1:2] + 1.0])      # body 2 found twice, as level 1 and level 0
    keep = select_level_boxes(dup, np.array([0.9, 0.8, 0.9, 0.6]), np.array([0, 1, 2, 0]), 3)
    np.testing.assert_array_equal(keep, [0, 1, 2])


def test_bodies_outside_the_trained_levels_are_dropped() -> None:
    boxes = _column(8)                                   # C1-like body above, T1 below C2..C7
    classes = np.array([0, 0, 1, 2, 3, 4, 5, 5])
    scores = np.array([0.4, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5])
    np.testing.assert_array_equal(select_level_boxes(boxes, scores, classes, 6), [1, 2, 3, 4, 5, 6])


def test_missing_level_keeps_the_others_in_place() -> None:
    boxes = np.delete(_column(6), 3, axis=0)             # C5 occluded
    keep = select_level_boxes(boxes, np.full(5, 0.8), np.array([0, 1, 2, 4, 5]), 6)
    np.testing.assert_array_equal(keep, [0, 1, 2, 3, 4])
    # the bottom body called C6 by mistake still takes the C7 place the chain gives it
    keep = select_level_boxes(boxes, np.full(5, 0.8), np.array([0, 1, 2, 4, 4]), 6)
    np.testing.assert_array_equal(keep, [0, 1, 2, 3, 4])


def test_a_lone_confident_misnamed_box_does_not_shift_the_chain() -> None:
    boxes = _column(6)
    classes = np.array([0, 1, 2, 3, 4, 5])
    classes_bad = classes.copy()
    classes_bad[0] = 3                                    # one wrong class, very confident
    scores = np.array([0.99, 0.5, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(select_level_boxes(boxes, scores, classes_bad, 6), np.arange(6))
    # in an unordered input the indices still refer to the input rows
    perm = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_array_equal(select_level_boxes(boxes[perm], scores[perm], classes[perm], 6), np.arange(6))


def test_empty_and_bad_input() -> None:
    assert select_level_boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 6).tolist() == []
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        select_level_boxes(_column(2), np.ones(1), np.zeros(2), 6)
    with pytest.raises(ValueError, match="n_levels"):
        select_level_boxes(_column(2), np.ones(2), np.zeros(2), 0)


def test_a_box_far_wider_than_the_bodies_is_not_in_the_chain() -> None:
    boxes = _column(6, top=100.0)
    skull = np.array([[40.0, 10.0, 200.0, 60.0], [40.0, 65.0, 150.0, 85.0]])  # skull base, 4 and 2.75 bodies wide
    both = np.concatenate([skull, boxes])
    chain = spine_chain(both, np.full(len(both), 0.8))
    np.testing.assert_array_equal(chain, np.arange(2, 8))


def test_two_parts_of_one_body_merge_and_neighbours_stay_apart() -> None:
    boxes = _column(5)  # 24 high, 30 apart: neighbours do not overlap
    dens = np.array([[44.0, -2.0, 70.0, 24.0]])  # top part of the first body: 54 % of it inside that body
    both = np.concatenate([dens, boxes])
    kept, merged = merge_parts(both, np.array([0.3, 0.8, 0.8, 0.8, 0.8, 0.8]))
    np.testing.assert_array_equal(kept, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(merged[0], [40.0, -2.0, 80.0, 34.0])  # the union, in the stronger one's place
    np.testing.assert_allclose(merged[1:], boxes[1:])
    tilted = boxes + np.array([0, 0, 0, 8.0])  # 32 high, 30 apart: neighbours share 2 of 32 rows
    kept, merged = merge_parts(tilted, np.full(5, 0.8))
    np.testing.assert_array_equal(kept, np.arange(5))
    cut_next = np.concatenate([boxes, [[52.0, 126.0, 69.0, 138.0]]])  # 2/3 of a small box in the last body
    kept, _ = merge_parts(cut_next, np.full(6, 0.8))  # (IoU 0.13: the top of the next body, cut by the border)
    np.testing.assert_array_equal(kept, np.arange(6))


def test_the_chain_does_not_jump_over_a_body_to_the_posterior_column() -> None:
    """Detector output on myosegmentum_11_s36 (water-fat Dixon, a sequence the model had not seen).

    Bodies T12–L4 (boxes 2, 4, 6, 8, 10) and the posterior elements (3, 5, 7, 9, 11, 12) were boxed with like
    confidence. Without a cost for skipping a level the chain left L3 for the posterior column (one step two
    levels long and sideways over L4), because two boxes followed there and one on the spine.
    """
    boxes = np.array([[164, 0, 186, 15], [108, 0, 147, 31], [155, 19, 186, 47], [99, 26, 141, 60],
                      [148, 51, 181, 83], [88, 59, 131, 94], [140, 84, 175, 115], [81, 94, 123, 131],
                      [138, 116, 166, 144], [81, 134, 120, 168], [136, 142, 165, 169], [144, 167, 165, 182]],
                     np.float32)
    scores = np.array([0.274, 0.733, 0.693, 0.814, 0.602, 0.811, 0.678, 0.835, 0.793, 0.818, 0.778, 0.426])
    np.testing.assert_array_equal(spine_chain(boxes, scores), [1, 3, 5, 7, 9])


def test_a_long_step_to_the_sacrum_keeps_the_body_above_it() -> None:
    """Detector output on zukic2014_17_s31 (T2) zoomed out 0.5×: L5 is box 9; the boxes below it are the
    sacrum's, large and overlapping. Its step to S1 is long (the disc and a large box), so a fixed cost per
    skipped level of 0.5 traded L5 for a weaker, taller box (10) that reaches the sacrum in a shorter step."""
    boxes = np.array([[195, 96, 213, 107], [193, 106, 211, 123], [189, 120, 207, 136], [186, 136, 204, 152],
                      [180, 151, 198, 168], [176, 168, 195, 185], [175, 182, 193, 198], [173, 187, 192, 204],
                      [174, 199, 194, 217], [174, 204, 195, 223], [177, 204, 201, 233], [182, 220, 205, 241],
                      [174, 222, 202, 256], [165, 230, 196, 258], [165, 255, 196, 285]], np.float32)
    scores = np.array([0.627, 0.515, 0.755, 0.822, 0.803, 0.855, 0.332, 0.837, 0.103, 0.713, 0.277, 0.13, 0.286,
                       0.379, 0.419])
    strong = np.flatnonzero(scores >= 0.25)
    chain = strong[spine_chain(boxes[strong], scores[strong])]
    assert 9 in chain and 10 not in chain


def test_a_posterior_column_that_rejoins_the_sacrum_does_not_win() -> None:
    """Detector output of the fine-tuned leave-one-out model on myosegmentum_17_s36 (Dixon): bodies T12–L5 are
    0, 1, 2, 4, 6, 11; the posterior elements 5, 7, 10 lead down to S1 (12), so a chain through them holds one
    box more. A fixed cost of 0.3 per skipped level let it leave L1 for them; the step forgoes L2 (box 4, 0.82)."""
    boxes = np.array([[82, 0, 122, 21], [72, 16, 116, 56], [62, 52, 104, 90], [117, 78, 154, 109],
                      [54, 88, 96, 125], [109, 109, 148, 140], [53, 127, 92, 162], [111, 135, 144, 160],
                      [100, 152, 129, 191], [57, 164, 98, 184], [104, 154, 151, 196], [56, 165, 93, 206],
                      [92, 187, 128, 223], [109, 191, 155, 224]], np.float32)
    scores = np.array([0.686, 0.808, 0.774, 0.183, 0.815, 0.739, 0.83, 0.466, 0.097, 0.197, 0.596, 0.367,
                       0.711, 0.271])
    strong = np.flatnonzero(scores >= 0.25)
    np.testing.assert_array_equal(strong[spine_chain(boxes[strong], scores[strong])], [0, 1, 2, 4, 6, 11])


def test_a_long_step_from_the_top_body_that_bends_away_is_the_skull() -> None:
    """Detector output of the shipped xray model on X-ray phantom xray_00004 (06's Figure 5): C2 (box 2, its
    dens included) to T1 (box 8); box 1 (0.27) lies on the occiput, two levels above C2 and a body width
    behind it (its step turns 35° from C2→C3). It was drawn as a body and named C1. The same long step in line
    with the column (box 1 moved over C2) stays: only the bend tells the skull."""
    boxes = np.array([[219, 0, 267, 11], [208, 14, 277, 71], [133, 95, 190, 185], [129, 195, 181, 240],
                      [127, 249, 176, 292], [122, 299, 173, 342], [118, 351, 170, 393], [115, 402, 169, 445],
                      [112, 453, 168, 492], [109, 467, 172, 511]], np.float32)
    scores = np.array([0.07, 0.27, 0.84, 0.81, 0.83, 0.8, 0.79, 0.78, 0.7, 0.3])
    strong = np.flatnonzero(scores >= 0.25)
    chain = strong[spine_chain(boxes[strong], scores[strong])]
    assert chain[0] == 2 and 1 not in chain and 8 in chain
    in_line = boxes.copy()
    in_line[1] = [140, 0, 195, 50]  # the same box two levels above C2, on the column's line
    chain = strong[spine_chain(in_line[strong], scores[strong])]
    assert chain[0] == 1 and 2 in chain
