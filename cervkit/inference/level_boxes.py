"""One detector box per vertebral level, chosen from the classes *and* the order along the spine.

A per-level detector (one class per level, e.g. C2…C7) names each box it finds. Keeping simply
the most confident box of every class is fragile: on an image unlike its training set (another
sequence, contrast or field of view) the detector may call two neighbouring bodies by the same
name and one of them is then lost, although both were found. :func:`select_level_boxes` instead

1. removes duplicates of one body regardless of class (class-agnostic non-maximum suppression at
   IoU > ``iou``: the most confident stays),
2. keeps the boxes that form the spine: the heaviest chain (confidence scaled by box size, less what
   a step over a level forgoes), top to bottom, whose steps look like one body to the next
   (:func:`spine_chain`), so a box off the column (a posterior element, bowel) neither counts as a
   level nor breaks the count,
3. gives each a position along the chain, counting a level as missing where the centre spacing is
   about twice the usual one and reading two boxes much closer than usual as one body,
4. lets every box vote, weighted by its confidence, for the offset between its class and its
   position; the winning offset maps positions to levels,
5. keeps one box per level inside ``0 … n_levels - 1`` (the most confident where two share one).

A vertebra just outside the trained range (T1 below C7, T10 above T11) still cannot add an
instance, and a body named like its neighbour is kept under its place in the chain.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torchvision.ops import nms

__all__ = ["chain_positions", "merge_parts", "select_level_boxes", "spine_chain"]

GAP_MISSING = 1.6   # centre gap / usual gap above which a level is missing in between
GAP_SAME = 0.5      # centre gap / usual gap below which two boxes are read as one body
STEP_MIN = 0.6      # shortest chain step, in median box heights (a body plus its disc is ~1.2)
SINGLE_STEP_MAX = 1.7  # longest step read as one level when learning the usual spacing, in heights
STEP_MAX = 4.5      # longest chain step (three levels missing), in median box heights
STEP_SLOPE = 1.2    # steepest chain step sideways: |dx| / dy (about 50 degrees from the column)
SIZE_MAX = (2.0, 2.5)  # widest and tallest chain box, in median box widths and heights
GAP_COST = 1.0      # share of the weight of the box one level on that a step over a level forgoes and pays
AREA_WEIGHT = (0.5, 2.0)  # a box's weight: confidence x sqrt(area / median area), the ratio clipped to this
PART_OVERLAP = (0.5, 0.25)  # parts of one body: intersection over the smaller box, and IoU, above these
TOP_TURN = 30.0     # degrees: a top step over a level turning more than this from the next step is to the skull


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def _levels_skipped(dist: np.ndarray, fits: np.ndarray, height: float) -> np.ndarray:
    """Levels each step ``[i, j]`` passes over, counted as :func:`chain_positions` counts them.

    The usual step is the median over boxes of the shortest step that fits below each (a body to the next,
    on the spine or along a column of posterior elements alike), else a body plus its disc (1.2 heights). A step
    up to ``GAP_MISSING`` usual steps long passes over none; a longer one over its rounded length less one.
    """
    shortest = np.where(fits, dist, np.inf).min(axis=1)
    shortest = shortest[np.isfinite(shortest) & (shortest <= SINGLE_STEP_MAX * height)]
    usual = float(np.median(shortest)) if len(shortest) else 1.2 * height
    ratio = dist / max(usual, 1e-6)
    return np.where(ratio > GAP_MISSING, np.maximum(np.round(ratio), 2) - 1, 0)


def spine_chain(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The boxes that form the spine: the chain of highest total weight (confidence, scaled by box size).

    A chain runs top to bottom; each step from one box to the next must be between
    ``STEP_MIN`` and ``STEP_MAX`` median box heights long and at most ``STEP_SLOPE`` times as wide
    as it is tall, as from one vertebral body to the next (levels may be missing in between). A box more
    than ``SIZE_MAX`` median widths wide or heights tall is no body of the chain (on MRI phantoms the
    detector boxed the skull base, four bodies wide, and the chain counted the levels from it). A step over a
    level forgoes the best box one level on from where it starts and pays that box's weight (``GAP_COST`` times
    it): nothing where no box was there (a body the detector missed), much where the step jumps over a body.
    On a water-fat sequence never seen in training the detector boxed the posterior elements as confidently as
    the bodies, and a chain free to leave a body for that column (a step about two levels long and sideways)
    ran down it because it held more boxes below. (A fixed cost per skipped level was tried: 0.1 to 0.3 still
    let one such chain through, 0.5 lost a T2 L5 at 0.5× zoom, whose step to a large sacral box is long.) And a
    box weighs its confidence times the square root of its area over the median box's (clipped to
    ``AREA_WEIGHT``): a vertebral body is the largest bone of its level, and on such an image an unbroken
    column of spinous processes, two more boxes long than the bodies', outweighed them by count alone.
    Above the top body lie only C1 and the skull: a first step over a level that bends more than ``TOP_TURN``
    degrees from the next one is dropped (on phantoms, a box on the occiput two levels above C2 and off to the
    side, 35–45°; over all chain tops of the shipped models on the real T2 and Dixon images at 0.5×, 1× and 2×
    and 120 phantoms, a step between two true bodies turned at most 20°).

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` boxes in any order.
    scores : numpy.ndarray
        (N,) confidences (with the box's size, the weight of each box in the chain).

    Returns
    -------
    numpy.ndarray
        int64 indices into the inputs, top to bottom.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    centres = _centres(boxes)
    size = boxes[:, 2:] - boxes[:, :2]
    body = (size <= np.asarray(SIZE_MAX) * np.median(size, axis=0)).all(axis=1)
    if not body.any():
        return np.zeros(0, np.int64)
    order = np.flatnonzero(body)[np.argsort(centres[body, 1], kind="stable")]
    area = np.prod(size[order], axis=1)
    c = centres[order]
    w = scores[order] * np.sqrt(np.clip(area / max(float(np.median(area)), 1e-6), *AREA_WEIGHT))
    n = len(order)
    height = float(np.median(boxes[:, 3] - boxes[:, 1]))
    dx, dy = (c[None, :, :] - c[:, None, :]).transpose(2, 0, 1)  # [i, j]: from box i to box j
    dist = np.hypot(dx, dy)
    fits = (dist >= STEP_MIN * height) & (dist <= STEP_MAX * height) & (np.abs(dx) <= STEP_SLOPE * dy)
    skipped = _levels_skipped(dist, fits, height)
    # a step over a level forgoes the best box one level on: that is its cost (none where no box was there)
    forgone = np.where(fits & (skipped == 0), w[None, :], 0.0).max(axis=1)
    cost = np.where(skipped > 0, GAP_COST * forgone[:, None], 0.0)
    total, previous = w.copy(), np.full(n, -1)
    for j in range(1, n):  # the best chain ending at box j comes from a box above it
        reach = np.where(fits[:j, j], total[:j] + (w[j] - cost[:j, j]), -np.inf)
        i = int(np.argmax(reach))  # the first of equals, as a strict-improvement scan keeps
        if reach[i] > total[j]:
            total[j], previous[j] = reach[i], i
    path = [int(np.argmax(total))]
    while previous[path[-1]] >= 0:
        path.append(int(previous[path[-1]]))
    path = path[::-1]
    while len(path) >= 3 and skipped[path[0], path[1]] > 0 and _turn(c[path[:3]]) > TOP_TURN:
        path = path[1:]  # above the top body only C1 and the skull: a long step that bends away is the skull
    return order[path].astype(np.int64)


def _turn(points: np.ndarray) -> float:
    """Degrees between the step ``points[0] → points[1]`` and the step ``points[1] → points[2]``."""
    a, b = np.diff(np.asarray(points, np.float64), axis=0)
    cos = float(np.dot(a, b) / max(np.hypot(*a) * np.hypot(*b), 1e-9))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def merge_parts(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring chain boxes that are parts of one body, merged into one box.

    The detector sometimes boxes a tall body in two overlapping parts (C2's dens and its body, on an MRI
    phantom), and both continue the chain: the body would be drawn as two and every level below it named
    one too low. Two neighbours whose intersection covers more than ``PART_OVERLAP[0]`` of the smaller box,
    with an IoU above ``PART_OVERLAP[1]``, become their union, with the place and score of the more
    confident one. Measured over 1629 neighbouring chain boxes of the shipped models (real T2 and Dixon test
    images at 0.5×, 1× and 2× zoom, 60 fresh MRI and 60 X-ray phantoms): the two pairs on one body had
    intersection / smaller 0.55 and 1.0 with IoU 0.35 and 0.27; of the pairs on two bodies (L5 and the cut
    top of S1 at 0.5× zoom, C1 and C2), none had both, the largest IoU being 0.21.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` chain boxes, top to bottom.
    scores : numpy.ndarray
        (N,) confidences.

    Returns
    -------
    kept : numpy.ndarray
        int64 indices of the boxes that stay (the more confident of each merged pair), top to bottom.
    merged : numpy.ndarray
        float64 (len(kept), 4): their boxes, a merged pair's as the union.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    scores = np.asarray(scores, np.float64).reshape(-1)
    kept = list(range(len(boxes)))
    k = 0
    while k + 1 < len(kept):
        i, j = kept[k], kept[k + 1]
        a, b = boxes[i], boxes[j]
        inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
        area_a, area_b = np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2])
        if min(area_a, area_b) > 0 and inter / min(area_a, area_b) > PART_OVERLAP[0] \
                and inter / (area_a + area_b - inter) > PART_OVERLAP[1]:
            stay, gone = (i, j) if scores[i] >= scores[j] else (j, i)
            boxes[stay] = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
            kept.remove(gone)
        else:
            k += 1
    index = np.asarray(kept, np.int64)
    return index, boxes[index]


def chain_positions(boxes: np.ndarray) -> np.ndarray:
    """Position of each box along the spine, top box 0, counting levels missing in gaps.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` boxes, ordered top to bottom.

    Returns
    -------
    numpy.ndarray
        (N,) int positions, non-decreasing: equal for two boxes read as one body, a jump of
        more than one where levels are missing in between.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    if n < 2:
        return np.zeros(n, np.int64)
    centres = _centres(boxes)
    gaps = np.hypot(*np.diff(centres, axis=0).T)
    height = float(np.median(boxes[:, 3] - boxes[:, 1]))
    single = gaps[(gaps >= STEP_MIN * height) & (gaps <= SINGLE_STEP_MAX * height)]
    # the usual spacing from the steps that look like one level; else a body plus its disc
    usual = float(np.median(single)) if len(single) else 1.2 * height
    pos = [0]
    for gap in gaps:
        ratio = gap / usual if usual > 0 else 1.0
        if ratio < GAP_SAME:
            step = 0
        elif ratio > GAP_MISSING:
            step = max(2, int(round(ratio)))
        else:
            step = 1
        pos.append(pos[-1] + step)
    return np.asarray(pos, np.int64)


def select_level_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, n_levels: int, *,
                       iou: float = 0.5) -> np.ndarray:
    """Indices of the boxes to keep: at most one per level ``0 … n_levels - 1``.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) detector boxes ``x0, y0, x1, y1`` in any order.
    scores : numpy.ndarray
        (N,) confidences.
    classes : numpy.ndarray
        (N,) level classes ``0 … n_levels - 1`` (0 = the top level).
    n_levels : int
        Number of levels the detector knows.
    iou : float
        Boxes overlapping more than this are one body, whatever their classes.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices into the inputs.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes")
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}")
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    unique_idx = nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy().astype(np.int64)
    order = unique_idx[spine_chain(boxes[unique_idx], scores[unique_idx])]
    pos = chain_positions(boxes[order])
    votes: dict[int, float] = defaultdict(float)
    for p, i in zip(pos, order):
        votes[int(classes[i] - p)] += float(scores[i])
    offset = max(votes, key=lambda o: (votes[o], -abs(o)))
    best: dict[int, int] = {}
    for p, i in zip(pos, order):
        level = int(p) + offset
        if 0 <= level < n_levels and (level not in best or scores[i] > scores[best[level]]):
            best[level] = i
    return np.array(sorted(best.values()), dtype=np.int64)
