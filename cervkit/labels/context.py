"""The context crop around one vertebral body, and the anchor classes learnt from it.

Levels are named from anatomy (:mod:`cervkit.inference.level_names`). On cervical images C2's dens anchors the
count. On lumbar images the anchor is the **lumbosacral junction**: L5 is the body with the sacrum under it. No
shape rule tells L5 from L4 or from S1 reliably, so a small classifier (:mod:`cervkit.training.anchor`) learns it
from a square window around each body, three body heights tall, which shows the neighbours above and below.

Both real lumbar sources end their annotation at L5, with S1 visible below and unannotated, so the examples are
free: an annotated body is ``C2``, ``L5`` or ``other``, and the window one spacing below L5 is ``S1``. C2 (the
dens, C1 above) is learnt where C2 is annotated (the cervical phantoms), the same landmark the dens shape rule
looks for. On request (``beyond``) the windows just beyond each landmark are negatives (``other``): one spacing
above C2 (C1, the atlas, or the skull base) and two below L5 (S2). Training and inference cut windows with the
same function here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cervkit.io.resize import resize
from cervkit.labels.crops import normalise_crop
from cervkit.labels.instances import boxes_from_labels, present_labels

__all__ = ["ANCHOR_CLASSES", "CONTEXT_SIZE", "CONTEXT_SPAN", "anchor_examples", "context_crop", "context_window"]

ANCHOR_CLASSES: tuple[str, ...] = ("other", "C2", "L5", "S1")
"""Classes of the anchor classifier, in output order."""

CONTEXT_SIZE = 48
"""Side of the resized context window (pixels)."""

CONTEXT_SPAN = 3.0
"""Window side as a multiple of the body's larger box side: the body and about one neighbour each way."""


def context_window(box: Sequence[float], span: float = CONTEXT_SPAN) -> tuple[int, int, int, int]:
    """The square window centred on a body's box.

    Parameters
    ----------
    box : sequence of float
        ``(x_min, y_min, x_max, y_max)`` pixel-edge box of the body.
    span : float
        Window side as a multiple of the box's larger side.

    Returns
    -------
    tuple of int
        ``(x0, y0, x1, y1)``; may reach outside the image (:func:`context_crop` pads).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(4.0, span * max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = int(round(side))
    return left, top, left + n, top + n


def context_crop(image: np.ndarray, box: Sequence[float], *, size: int = CONTEXT_SIZE,
                 span: float = CONTEXT_SPAN) -> np.ndarray:
    """Cut, pad (with the image's darkest value) and resize the context window of one body, then normalise it.

    Parameters
    ----------
    image : numpy.ndarray
        2D image.
    box : sequence of float
        The body's box.
    size : int
        Output side.
    span : float
        See :func:`context_window`.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)``, zero mean and unit standard deviation.
    """
    arr = np.asarray(image, np.float32)
    h, w = arr.shape
    x0, y0, x1, y1 = context_window(box, span)
    window = np.full((y1 - y0, x1 - x0), float(arr.min()) if arr.size else 0.0, np.float32)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return normalise_crop(resize(window, (size, size), nearest=False))


def anchor_examples(labels: np.ndarray, levels: Sequence[str] | None, *,
                    beyond: bool = False) -> list[tuple[tuple[float, ...], int]]:
    """Anchor-class examples of one annotated label map: each body's box and class, plus S1's window.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map; label ``k`` is the ``k``-th of ``levels`` (top to bottom, as the manifests number them).
    levels : sequence of str, optional
        The row's annotated levels (the manifest's ``levels`` column); without them no example is made.
    beyond : bool
        Also S2 (two steps below L5) and C1 (one step above C2) as ``other``.

    Returns
    -------
    list of (box, class index)
        Class indices into :data:`ANCHOR_CLASSES` (``C2`` and ``L5`` by their level, every other body
        ``other``). S1's box is L5's moved down by the L4→L5 step (or by 1.2 of L5's height without L4); with
        ``beyond``, S2's (``other``) by two steps and C1's (``other``) is C2's moved up by the C3→C2 step (or by
        1.2 of C2's height without C3). A moved box is left out when it would start outside the image.
    """
    if not levels:
        return []
    ids = [int(k) for k in present_labels(labels)]
    boxes = boxes_from_labels(labels)
    by_level: dict[str, np.ndarray] = {}
    out: list[tuple[tuple[float, ...], int]] = []
    for k, box in zip(ids, boxes):
        if not 0 < k <= len(levels):
            continue
        name = str(levels[k - 1]).strip().upper()
        by_level[name] = np.asarray(box, np.float64)
        out.append((tuple(float(v) for v in box), ANCHOR_CLASSES.index(name) if name in ("C2", "L5") else 0))
    height = labels.shape[0]
    plan = (("L5", "L4", ((1, "S1"), (2, "other"))), ("C2", "C3", ((1, "other"),))) if beyond else (
        ("L5", "L4", ((1, "S1"),)),)
    for landmark, neighbour, moves in plan:
        box = by_level.get(landmark)
        if box is None:
            continue
        step = _step(box, by_level.get(neighbour), down=landmark == "L5")
        for times, cls in moves:
            moved = np.concatenate([box[:2], box[2:]]) + np.tile(times * step, 2)
            if moved[1] < height - 2 and moved[3] > 2:
                out.append((tuple(float(v) for v in moved), ANCHOR_CLASSES.index(cls)))
    return out


def _step(box: np.ndarray, neighbour: np.ndarray | None, *, down: bool) -> np.ndarray:
    """The centre step from ``neighbour`` to ``box`` (one level further out), or, without a neighbour, 1.2 of the
    box's height down (``down``) or up."""
    if neighbour is not None:
        return (box[:2] + box[2:]) / 2 - (neighbour[:2] + neighbour[2:]) / 2
    return np.array([0.0, (1.2 if down else -1.2) * (box[3] - box[1])])
