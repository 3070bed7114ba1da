"""Model-assisted corrections: a box (or a click on a body) becomes a mask through the cascade's crop segmenter.

YOLO-UNet's stage 2 already is a box → mask model, so a box drawn around a missed vertebral body is segmented
by the same network that segments the detector's boxes. :func:`box_prompt_labels` computes the edit as a pure
function: the box's crop is segmented together with the crops of the existing bodies it overlaps, and every
pixel of the overlap goes to whichever crop is more probable (as :func:`cervkit.inference.cascade.paste_by_probability`
does for the cascade), so a new body never swallows its neighbours and a neighbour keeps what it owns.
A box that holds most of an existing body redraws that body (same label); otherwise the result is a new body.
:func:`grown_box` gives a body's box grown by a margin, for "re-segment this body" (a click inside it).

:class:`cervkit.editor.state.EditorState` wraps these as undoable steps (``box_prompt``, ``refine_body``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
from scipy import ndimage

from cervkit.core.errors import CervkitInputError
from cervkit.labels.instances import boxes_from_labels

__all__ = ["PromptResult", "box_prompt_labels", "crop_segmenter", "grown_box"]

REPLACE_COVER = 0.5
"""A prompt box holding at least this fraction of an existing body's box (and the most of any) redraws that body."""


@dataclass
class PromptResult:
    """A box prompt's edit.

    Attributes
    ----------
    labels : numpy.ndarray
        The new label map.
    label : int
        The body the prompt drew (0 when the segmenter found nothing in the box).
    replaced : bool
        Whether ``label`` was an existing body, redrawn.
    seconds : float
        Model time.
    """

    labels: np.ndarray
    label: int
    replaced: bool
    seconds: float


def crop_segmenter(model: Any) -> Any:
    """The crop segmenter of a model: a shipped model's name, a run folder, a cascade, or a segmenter itself.

    Parameters
    ----------
    model : str, PathLike or object
        ``"mri"`` / ``"xray"`` / a run folder (loaded with :func:`cervkit.inference.registry.load_predictor`),
        a :class:`~cervkit.inference.cascade.Cascade` (its ``segmenter``), or anything with ``predict_crops``.

    Returns
    -------
    object
        Has ``predict_crops(image, boxes)``.

    Raises
    ------
    CervkitInputError
        The model has no crop segmenter (a one-stage baseline).
    """
    if isinstance(model, (str, PathLike)):
        from cervkit.inference.registry import load_predictor

        model = load_predictor(model)
    if hasattr(model, "predict_crops"):
        return model
    segmenter = getattr(model, "segmenter", None)
    if segmenter is None or not hasattr(segmenter, "predict_crops"):
        raise CervkitInputError(f"{type(model).__name__} has no crop segmenter: box prompts need a cascade "
                                "(yolo-unet, yolo-deeplab, or a shipped model)")
    return segmenter


def _covered(prompt: Sequence[float], body: Sequence[float]) -> float:
    """The fraction of ``body``'s box inside ``prompt``."""
    ix = max(0.0, min(prompt[2], body[2]) - max(prompt[0], body[0]))
    iy = max(0.0, min(prompt[3], body[3]) - max(prompt[1], body[1]))
    area = (body[2] - body[0]) * (body[3] - body[1])
    return ix * iy / area if area > 0 else 0.0


def _body_boxes(labels: np.ndarray) -> dict[int, tuple[float, float, float, float]]:
    """Body → its tight pixel-edge box (:func:`cervkit.labels.instances.boxes_from_labels`)."""
    present = [int(v) for v in np.unique(labels) if v]
    return {k: (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for k, b in zip(present, boxes_from_labels(labels))}


def grown_box(labels: np.ndarray, label: int, margin: float = 0.15) -> tuple[float, float, float, float]:
    """A body's box grown by ``margin`` of its size on every side (clipped to the image).

    Parameters
    ----------
    labels : numpy.ndarray
    label : int
    margin : float

    Returns
    -------
    (float, float, float, float)
        ``(x0, y0, x1, y1)`` pixel-edge box.

    Raises
    ------
    CervkitInputError
        ``label`` is not in the map.
    """
    boxes = _body_boxes(labels)
    if int(label) not in boxes:
        raise CervkitInputError(f"no body {label} in the label map")
    x0, y0, x1, y1 = boxes[int(label)]
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    h, w = labels.shape
    return max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(w), x1 + dx), min(float(h), y1 + dy)


def box_prompt_labels(image: np.ndarray, labels: np.ndarray, box: Sequence[float], segmenter: Any, *,
                      replace: int | None = None, threshold: float = 0.5, min_area: int = 20) -> PromptResult:
    """Segment the body inside ``box`` and merge it into ``labels`` by probability.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1].
    labels : numpy.ndarray
        The current label map (not changed).
    box : (x0, y0, x1, y1)
        Pixel-edge box around one vertebral body, any corner order.
    segmenter : object
        Has ``predict_crops(image, boxes)`` (:func:`crop_segmenter`).
    replace : int, optional
        Redraw this body. Default: the body with the most of its box inside ``box``, when that is at least
        half of it; else a new body (the lowest free label).
    threshold : float
        Probability above which a pixel belongs to the prompted body.
    min_area : int
        A result smaller than this is no body (``label`` 0, labels unchanged).

    Returns
    -------
    PromptResult
    """
    import time

    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    h, w = labels.shape
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise CervkitInputError(f"box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) is too small to hold a body")
    prompt = (x0, y0, x1, y1)
    boxes = _body_boxes(labels)
    if replace is None:
        cover = {k: _covered(prompt, b) for k, b in boxes.items()}
        best = max(cover, key=cover.get, default=None)
        replace = best if best is not None and cover[best] >= REPLACE_COVER else None
    neighbours = sorted(k for k, b in boxes.items()
                        if k != replace and not (b[2] <= x0 or b[0] >= x1 or b[3] <= y0 or b[1] >= y1))
    start = time.perf_counter()
    crops = segmenter.predict_crops(image, np.array([prompt] + [boxes[k] for k in neighbours], np.float32))
    seconds = time.perf_counter() - start
    new = np.array(labels, copy=True)
    label = int(replace) if replace is not None else next(k for k in range(1, 257) if k not in boxes)
    if label > 255:
        raise CervkitInputError("the label map already holds 255 bodies")
    if replace is not None:
        new[new == label] = 0
    (wx0, wy0, wx1, wy1) = crops[0].int_box
    prob = np.zeros((h, w), np.float32)
    prob[wy0:wy1, wx0:wx1] = crops[0].prob
    rival = np.zeros((h, w), np.float32)
    for k, crop in zip(neighbours, crops[1:]):
        cx0, cy0, cx1, cy1 = crop.int_box
        window = np.zeros((h, w), np.float32)
        window[cy0:cy1, cx0:cx1] = crop.prob
        rival = np.where(new == k, np.maximum(rival, window), rival)  # a neighbour defends its own pixels
    body = (prob >= threshold) & ((new == 0) | (prob > rival))
    parts, n = ndimage.label(body)
    if n > 1:  # one body: the largest connected piece
        body = parts == 1 + int(np.argmax(ndimage.sum(body, parts, range(1, n + 1))))
    if int(body.sum()) < min_area:
        return PromptResult(np.array(labels, copy=True), 0, False, seconds)
    new[body] = label
    return PromptResult(new, label, replace is not None, seconds)
