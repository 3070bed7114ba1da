"""A scripted annotator: how many editor actions turn a model's draft into a mask every body of which is right.

The interactive-segmentation literature counts clicks until a target overlap (NoC@90: IoU 0.90, about Dice
0.95). Here the annotator works on an :class:`~cervkit.editor.state.EditorState` holding the model's draft,
through the same operations the toolbar uses, and always fixes the **worst** annotated body first (lowest
Dice with its true mask; a missed body counts 0):

* ``"box"``: a body that is missed or clearly wrong (Dice below ``box_below``: cut in two, merged, cut too
  tight) gets a box prompt first (:meth:`EditorState.box_prompt`): the true body's bounding box, each side
  off by up to ``box_error_px`` (seeded); it redraws the body the box mostly holds, or draws a missed one.
  A body that is nearly right, or still below target after its box, gets brush strokes, as below (a box
  would give back the segmenter's own outline, which is where a nearly right body's error comes from);
* ``"brush"``: brush strokes only. One stroke covers the largest wrong region of the body (pixels missing,
  painted with the body's label; pixels too many, erased): a path along that region's skeleton with a
  radius of the region's median half-width, the brush confined to background (painting) or to the body
  (erasing), as with the editor's "protect others".

A predicted body that matches no true body between the annotated levels is deleted (one action, both modes).
Predicted bodies outside the annotated levels are left alone and not scored
(:func:`cervkit.evaluation.matching.drop_unannotated`). :func:`annotate` stops when every body reaches
``target`` or after ``max_actions``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cervkit.core.errors import CervkitInputError
from cervkit.editor.state import EditorState

__all__ = ["AnnotationRun", "annotate", "brush_stroke_for", "stroke_over"]


@dataclass
class AnnotationRun:
    """What the scripted annotator did on one image.

    Attributes
    ----------
    mode : str
        ``"box"`` or ``"brush"``.
    actions : int
        Editor actions done (box prompts, strokes, deletions).
    kinds : dict of str to int
        Actions by kind.
    reached : bool
        Every annotated body at ``target`` or better at the end.
    dice_start, dice_end : list of float
        Per annotated body, top to bottom.
    model_seconds : float
        Time spent in box prompts (the crop segmenter), seconds.
    labels : numpy.ndarray
        The final label map.
    """

    mode: str
    actions: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    reached: bool = False
    dice_start: list[float] = field(default_factory=list)
    dice_end: list[float] = field(default_factory=list)
    model_seconds: float = 0.0
    labels: np.ndarray | None = None


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def _match(labels: np.ndarray, gt: np.ndarray) -> dict[int, tuple[int, float]]:
    """True body → (predicted label with the most overlap, Dice with it); (0, 0.0) when none overlaps."""
    out = {}
    for k in [int(v) for v in np.unique(gt) if v]:
        body = gt == k
        values, counts = np.unique(labels[body], return_counts=True)
        best = [(int(c), int(v)) for v, c in zip(values, counts) if v]
        label = max(best)[1] if best else 0
        out[k] = (label, _dice(body, labels == label) if label else 0.0)
    return out


def _strays(labels: np.ndarray, gt: np.ndarray, matched: set[int]) -> list[int]:
    """Predicted bodies between the annotated levels that match no true body."""
    from cervkit.evaluation.matching import drop_unannotated

    scored = drop_unannotated(labels, gt)
    return [int(v) for v in np.unique(scored) if v and int(v) not in matched]


def _path(skeleton: np.ndarray) -> list[tuple[float, float]]:
    """A walk through a skeleton's pixels from one end, stepping to the nearest unvisited pixel (≤ 2 px)."""
    rows, cols = np.nonzero(skeleton)
    pts = np.stack([cols + 0.5, rows + 0.5], axis=1)
    if len(pts) == 1:
        return [tuple(pts[0])]
    neighbours = ndimage.convolve(skeleton.astype(int), np.ones((3, 3), int), mode="constant")[rows, cols] - 1
    start = int(np.argmin(neighbours))
    left = np.ones(len(pts), bool)
    order, i = [start], start
    left[i] = False
    while left.any():
        d = np.hypot(*(pts[left] - pts[i]).T)
        j = int(np.argmin(d))
        if d[j] > 2.0:
            break
        i = int(np.flatnonzero(left)[j])
        left[i] = False
        order.append(i)
    return [tuple(pts[k]) for k in order]


def brush_stroke_for(labels: np.ndarray, body: np.ndarray, label: int) -> tuple[list[tuple[float, float]], float, bool]:
    """The stroke that fixes the largest wrong region of one body.

    Parameters
    ----------
    labels : numpy.ndarray
        The current label map.
    body : numpy.ndarray
        bool, the true body.
    label : int
        The body's label in ``labels`` (0: not drawn yet).

    Returns
    -------
    points : list of (x, y)
        Pixel-edge points along the region's skeleton.
    radius : float
        The brush radius (the region's median half-width, at least 0.7 px).
    erase : bool
        True for pixels too many (erase), False for pixels missing (paint).
    """
    drawn = labels == label if label else np.zeros_like(body)
    missing = body & ~drawn & (labels == 0)
    extra = drawn & ~body
    best: tuple[int, np.ndarray, bool] | None = None
    for mask, erase in ((missing, False), (extra, True)):
        comps, n = ndimage.label(mask)
        if n:
            sizes = ndimage.sum_labels(mask, comps, index=np.arange(1, n + 1))
            k = int(np.argmax(sizes)) + 1
            if best is None or sizes[k - 1] > best[0]:
                best = (int(sizes[k - 1]), comps == k, erase)
    if best is None:
        raise CervkitInputError("nothing to fix on this body with the brush (its pixels belong to another body)")
    points, radius = stroke_over(best[1])
    return points, radius, best[2]


def stroke_over(region: np.ndarray) -> tuple[list[tuple[float, float]], float]:
    """A brush path along a region's skeleton and the radius that covers its width.

    Parameters
    ----------
    region : numpy.ndarray
        bool (H, W), one connected region.

    Returns
    -------
    points : list of (x, y)
    radius : float
        The region's median half-width on its skeleton, at least 0.7 px (a one-pixel line).
    """
    from skimage.morphology import skeletonize

    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    skeleton = skeletonize(region)
    if not skeleton.any():
        skeleton = region
    radius = max(0.7, float(np.median(dist[skeleton])) - 0.5)
    return _path(skeleton), radius


def annotate(state: EditorState, gt: np.ndarray, *, mode: str, model: Any = None, target: float = 0.95,
             max_actions: int = 40, box_error_px: float = 3.0, box_below: float = 0.9,
             seed: int = 0) -> AnnotationRun:
    """Correct the draft in ``state`` towards ``gt`` with the scripted annotator, worst body first.

    Parameters
    ----------
    state : EditorState
        Holds the image and the model's draft; edited in place (every action is an undoable step).
    gt : numpy.ndarray
        The true label map (annotated bodies only).
    mode : {"box", "brush"}
    model : str, PathLike or object, optional
        For box prompts: a shipped model's name, a run folder or a cascade.
    target : float
        Dice every annotated body must reach.
    max_actions : int
        Give up after this many actions (``reached`` False).
    box_error_px : float
        Each side of a prompted box is off by a uniform draw in ± this many pixels.
    box_below : float
        In ``"box"`` mode, a body below this Dice gets a box prompt (once) before any stroke.
    seed : int

    Returns
    -------
    AnnotationRun
    """
    if mode not in ("box", "brush"):
        raise CervkitInputError(f"mode must be 'box' or 'brush', not {mode!r}")
    if mode == "box" and model is None:
        raise CervkitInputError("box prompts need a model (a shipped model's name or a run folder)")
    rng = np.random.default_rng(seed)
    run = AnnotationRun(mode)
    gt = np.asarray(gt)
    run.dice_start = [d for _, d in _match(state.labels, gt).values()]
    boxed: set[int] = set()
    state.protect_others = True
    while run.actions < max_actions:
        match = _match(state.labels, gt)
        strays = _strays(state.labels, gt, {lab for lab, _ in match.values() if lab})
        if strays:
            state.delete_vertebra(strays[0], renumber=False)
            run.kinds["delete"] = run.kinds.get("delete", 0) + 1
            run.actions += 1
            continue
        worst, (label, score) = min(match.items(), key=lambda kv: kv[1][1])
        if score >= target:
            run.reached = True
            break
        body = gt == worst
        if mode == "box" and worst not in boxed and score < box_below:
            rows, cols = np.nonzero(body)
            box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)
            box += rng.uniform(-box_error_px, box_error_px, 4)
            start = time.perf_counter()
            state.box_prompt(*box, model, replace=label or None)
            run.model_seconds += time.perf_counter() - start
            boxed.add(worst)
            kind = "box"
            if _match(state.labels, gt)[worst][1] < score:  # worse than before: the user undoes it
                state.undo()
                run.kinds["undo"] = run.kinds.get("undo", 0) + 1
                run.actions += 1
        else:
            try:
                points, radius, erase = brush_stroke_for(state.labels, body, label)
            except CervkitInputError:  # the missing pixels are another body's: erase them from it
                taken = body & (state.labels != label) & (state.labels > 0)
                other = int(np.bincount(state.labels[taken].ravel()).argmax())
                comps, _ = ndimage.label(taken & (state.labels == other))
                sizes = np.bincount(comps.ravel())
                sizes[0] = 0
                points, radius = stroke_over(comps == int(sizes.argmax()))
                label, erase = other, True
            if not label:  # a missed body drawn by hand: the "+" button gives it a new label first
                label = state.add_vertebra()
                run.kinds["new label"] = run.kinds.get("new label", 0) + 1
                run.actions += 1
            state.active_label = int(label)
            state.brush_radius = radius
            state.stroke(points, erase=erase)
            kind = "erase" if erase else "stroke"
        run.kinds[kind] = run.kinds.get(kind, 0) + 1
        run.actions += 1
    else:
        run.reached = all(d >= target for _, d in _match(state.labels, gt).values())
    run.dice_end = [d for _, d in _match(state.labels, gt).values()]
    run.labels = state.labels.copy()
    return run
