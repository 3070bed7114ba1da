"""Bodies cut by the image border: segment them as whole bodies, keep the part in view.

A zoomed-in field of view (or a spine that runs off the film) cuts the first and last vertebral bodies at the
image border. The detector boxes the visible sliver, and the crop segmenter, which learnt whole bodies in
windows of their usual shape, then sees the sliver stretched to its square input and fills the window: on the
real MRI test patients at 2× zoom such slivers matched their truth with IoU 0.2–0.4 and most counted as missed.

So a window whose box touches the border is **extended across it** to the shape of the image's other bodies
(:func:`uncut_boxes`; at most by the visible part's own size), and the part beyond the border is filled
with the image **mirrored** at the border (:func:`cervkit.labels.crops.cut_window`, which
:func:`~cervkit.labels.crops.prepare_crop` cuts every crop with): a sliver then looks like a whole body of
the usual shape, the segmenter outlines it as it learnt to, and only the part inside the image is kept. Boxes clear of
the border are untouched (:class:`cervkit.inference.segmenter.Segmenter`, ``uncut=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["EDGE", "cut_sides", "uncut_boxes", "whole_aspect"]

EDGE = 1.0
"""A box edge within this many pixels of the image border counts as cut by it."""


def cut_sides(boxes: np.ndarray, image_shape: tuple[int, int], edge: float = EDGE) -> np.ndarray:
    """Which sides of each box lie on the image border.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` pixel-edge boxes.
    image_shape : tuple of int
        (H, W) of the image.
    edge : float
        Distance from the border (pixels) that still counts as on it.

    Returns
    -------
    numpy.ndarray
        bool (N, 4): left, top, right, bottom.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    height, width = image_shape
    return np.stack([b[:, 0] <= edge, b[:, 1] <= edge, b[:, 2] >= width - edge, b[:, 3] >= height - edge], axis=1)


def whole_aspect(boxes: np.ndarray, image_shape: tuple[int, int]) -> float | None:
    """Median height / width of the boxes clear of the border (None when every box is cut).

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) ``x0, y0, x1, y1`` boxes of one image.
    image_shape : tuple of int
        (H, W) of that image.

    Returns
    -------
    float or None
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    clear = b[~cut_sides(b, image_shape).any(axis=1)]
    if not len(clear):
        return None
    return float(np.median((clear[:, 3] - clear[:, 1]) / np.maximum(clear[:, 2] - clear[:, 0], 1e-6)))


def uncut_boxes(boxes: np.ndarray, image_shape: tuple[int, int], *, height: Sequence[float] | float | None = None,
                width: Sequence[float] | float | None = None, mirror_cap: bool = True) -> np.ndarray:
    """Boxes cut by the border, grown across it to a whole body's height and width.

    A box on the top or bottom border grows in y (away from the image) to ``height``, one on the left or
    right border in x to ``width``; a box clear of the border, or already as large, is unchanged.

    Parameters
    ----------
    boxes : numpy.ndarray
        (N, 4) pixel-edge boxes.
    image_shape : tuple of int
        (H, W).
    height, width : float or sequence of float, optional
        A whole body's height and width (one value, or one per box). Default: from the shape of the boxes clear
        of the border (:func:`whole_aspect`) and the box's own uncut side; with no such box, the box mirrored
        (twice its visible size).
    mirror_cap : bool
        Grow by at most the box's visible size (all a mirror at the border can show).

    Returns
    -------
    numpy.ndarray
        float64 (N, 4); may reach outside the image.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    if not len(b):
        return b
    sides = cut_sides(b, image_shape)
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    if height is None or width is None:
        aspect = whole_aspect(b, image_shape)
        guess_h = 2 * h if aspect is None else np.where(sides[:, 0] | sides[:, 2], 2 * h, aspect * w)
        guess_w = 2 * w if aspect is None else np.where(sides[:, 1] | sides[:, 3], 2 * w, h / max(aspect, 1e-6))
    target_h = np.broadcast_to(np.asarray(height if height is not None else guess_h, np.float64), h.shape)
    target_w = np.broadcast_to(np.asarray(width if width is not None else guess_w, np.float64), w.shape)
    grow_h = np.maximum(target_h - h, 0.0)
    grow_w = np.maximum(target_w - w, 0.0)
    if mirror_cap:
        grow_h, grow_w = np.minimum(grow_h, h), np.minimum(grow_w, w)
    b[:, 1] -= np.where(sides[:, 1], grow_h, 0.0)
    b[:, 3] += np.where(sides[:, 3] & ~sides[:, 1], grow_h, 0.0)
    b[:, 0] -= np.where(sides[:, 0], grow_w, 0.0)
    b[:, 2] += np.where(sides[:, 2] & ~sides[:, 0], grow_w, 0.0)
    return b
