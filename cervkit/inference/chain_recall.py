"""Weak detections that continue the spine chain: a body the detector saw but doubted.

A body hidden behind the shoulders (C7 on a lateral radiograph) or cut by the image border is often
detected with a confidence below the cascade's threshold (0.25), while a detection of the same
confidence elsewhere is noise. Where the body lies is known from its neighbours: the spine chain
(:func:`cervkit.inference.level_boxes.spine_chain`) steps from body to body at a usual spacing. So
:func:`extend_chain` adds a weak box only where the chain expects the next body: below its lower end (at
most ``max_steps`` levels) or inside a gap about two spacings long, and only when its size is like its
neighbours'. Not above the upper end: above C2 lies the atlas, which has no body, and a weak box there
was drawn as one on X-ray phantoms. The crop segmenter then has the last word (:func:`weak_body_kept`): a
weak box whose crop holds no confident body adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cervkit.inference.detector import box_iou

__all__ = ["extend_chain", "weak_body_kept"]

TOLERANCE = 0.35   # distance from the expected centre, as a fraction of the usual step
SIZE_RANGE = (0.5, 1.6)  # box height and width, as a fraction of the chain's median
MIN_OVERLAP_FREE = 0.3  # a weak box overlapping a kept box more than this (IoU) is the same body
WEAK_PROB = 0.75  # mean segmenter probability a weak body's mask needs


def extend_chain(boxes: np.ndarray, scores: np.ndarray, chain: Sequence[int], *, max_steps: int = 2) -> np.ndarray:
    """The chain plus the weaker boxes that continue it where a body is expected.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` detector boxes, strong and weak.
    scores : numpy.ndarray
        (N,) confidences (the most confident candidate wins a place).
    chain : sequence of int
        Indices of the chain's boxes, top to bottom (at least three, for a usual step).
    max_steps : int
        Levels added at most below the chain's lower end.

    Returns
    -------
    numpy.ndarray
        int64 indices into ``boxes``, top to bottom: the chain and the added boxes.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    kept = [int(i) for i in chain]
    if len(kept) < 3:
        return np.asarray(kept, np.int64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    usual = float(np.median(np.hypot(*np.diff(centres[kept], axis=0).T)))
    overlap = box_iou(boxes, boxes)
    height = float(np.median(boxes[kept, 3] - boxes[kept, 1]))
    width = float(np.median(boxes[kept, 2] - boxes[kept, 0]))

    def near(expected: np.ndarray) -> int | None:
        best, best_score = None, -1.0
        for i, box in enumerate(boxes):
            if i in kept or np.hypot(*(centres[i] - expected)) > TOLERANCE * usual:
                continue
            h, w = box[3] - box[1], box[2] - box[0]
            if not (SIZE_RANGE[0] <= h / height <= SIZE_RANGE[1] and SIZE_RANGE[0] <= w / width <= SIZE_RANGE[1]):
                continue
            if (overlap[i, kept] > MIN_OVERLAP_FREE).any():
                continue
            if scores[i] > best_score:
                best, best_score = i, float(scores[i])
        return best

    strong = list(kept)
    for g, (a, b) in enumerate(zip(strong[:-1], strong[1:])):  # a gap about two (or more) usual steps long
        gap = centres[b] - centres[a]
        missing = int(round(np.hypot(*gap) / usual)) - 1
        for k in range(1, missing + 1):
            found = near(_expected_in_gap(centres[strong], g, k, missing, usual))
            if found is not None:
                kept.append(found)
    step = centres[strong[-1]] - centres[strong[-2]]
    step *= usual / max(float(np.hypot(*step)), 1e-6)
    position = centres[strong[-1]]
    for _ in range(max_steps):
        position = position + step
        found = near(position)
        if found is None:
            break
        kept.append(found)
        position = centres[found]
    order = np.argsort(centres[kept, 1], kind="stable")
    return np.asarray(kept, np.int64)[order]


def _expected_in_gap(chain: np.ndarray, g: int, k: int, missing: int, usual: float) -> np.ndarray:
    """Where the k-th of ``missing`` bodies between chain centres ``g`` and ``g + 1`` is expected.

    The mean of the straight line between the two and of the spine continued by the usual step from the
    step above the gap and from the step below it (where there is one): the spine curves (the lumbosacral
    angle), and on a real water-fat image the missed L5 lay 14 pixels (0.4 steps) off the line from L4 to
    S1 but 8 from L4 continued by the step from L3.
    """
    a, b = chain[g], chain[g + 1]
    estimates = [a + (b - a) * k / (missing + 1)]
    if g >= 1:  # down from the body above the gap, along the step that reached it
        estimates.append(_continued(a, a - chain[g - 1], usual * k))
    if g + 2 < len(chain):  # up from the body below the gap, along the step that left it
        estimates.append(_continued(b, b - chain[g + 2], usual * (missing + 1 - k)))
    return np.mean(estimates, axis=0)


def _continued(start: np.ndarray, direction: np.ndarray, length: float) -> np.ndarray:
    """``start`` moved ``length`` along ``direction`` (not at all for a zero direction)."""
    norm = float(np.hypot(*direction))
    return start + direction / norm * length if norm > 0 else start


def weak_body_kept(prob: np.ndarray, threshold: float = 0.5, min_area: int = 20) -> bool:
    """Whether a weak box's crop holds a confident body.

    Parameters
    ----------
    prob : numpy.ndarray
        The segmenter's probability map of the crop.
    threshold : float
        Pixel threshold of the mask.
    min_area : int
        Fewest mask pixels.

    Returns
    -------
    bool
        True when the mask has at least ``min_area`` pixels with a mean probability of at least
        :data:`WEAK_PROB`.
    """
    prob = np.asarray(prob)
    mask = prob > threshold
    return bool(mask.sum() >= min_area and float(prob[mask].mean()) >= WEAK_PROB)
