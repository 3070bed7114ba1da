"""The editor's drawing tools and clean-ups: pure functions on label maps.

A label map is uint8 (H, W), 0 background, 1..K one vertebral body each. No
function here changes its input: each returns a new array.

Coordinates
    Points are (x, y) in the project's pixel-edge coordinates (the boxes'
    convention): pixel (row r, col c) covers x in [c, c + 1), y in [r, r + 1)
    and its centre is (c + 0.5, r + 0.5). A browser's ``offsetX / zoom`` can be
    passed as is. A pixel is painted by the brush when its centre lies within
    ``radius`` of the stroke's polyline (a "capsule" per segment, so fast mouse
    moves leave no gaps); with ``radius >= 0.71`` the pixel under the pointer is
    always painted.

Changed rectangles
    The interactive tools return ``(new_labels, bbox)`` where ``bbox`` is the
    tight (x_min, y_min, x_max, y_max) box of the pixels that changed (max
    exclusive), or None when nothing changed, so a view can redraw (and a codec
    send) only that rectangle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.editor.cleanup import CLEAN_OPS, fill_holes, remove_islands, smooth
from cervkit.editor.labelmap import (
    BBox,
    changed_bbox,
    check_labels,
    check_value,
    mask_bbox,
)
from cervkit.labels.instances import relabel_top_to_bottom

__all__ = [
    "CLEAN_OPS", "BBox", "changed_bbox", "check_labels", "check_value", "delete_label", "fill_holes",
    "fill_polygon", "flood_fill", "mask_bbox", "next_free_label", "paint_stroke", "relabel_top_to_bottom",
    "remove_islands", "smooth", "stroke_mask",
]


def _points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return the (N, 2) float array of (x, y) points, N >= 1, all finite."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        raise CervkitInputError("a stroke needs at least one (x, y) point")
    if pts.size % 2:
        raise CervkitInputError(f"points must be (x, y) pairs, got an array of shape {pts.shape}")
    pts = pts.reshape(-1, 2)
    if not np.all(np.isfinite(pts)):
        raise CervkitInputError("stroke points must be finite numbers")
    return pts


def _apply(labels: np.ndarray, mask: np.ndarray, origin: tuple[int, int], value: int, *,
           only_background: bool, only_label: int | None) -> tuple[np.ndarray, BBox | None]:
    """Write ``value`` where ``mask`` (placed at (row0, col0)) allows; return the new map and change box."""
    r0, c0 = origin
    h, w = mask.shape
    out = labels.copy()
    region = out[r0:r0 + h, c0:c0 + w]
    allowed = mask & (region != value)
    if only_background:
        allowed &= region == 0
    if only_label is not None:
        allowed &= region == only_label
    region[allowed] = value
    box = mask_bbox(allowed)
    if box is None:
        return out, None
    return out, (box[0] + c0, box[1] + r0, box[2] + c0, box[3] + r0)


def stroke_mask(shape: tuple[int, int], points: Sequence[Sequence[float]] | np.ndarray,
                radius: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the pixels a round brush covers along a polyline.

    Each segment is drawn as a capsule (all pixel centres within ``radius`` of
    the segment), computed only inside that segment's bounding box.

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the label map.
    points : sequence of (x, y)
        The polyline, pixel-edge coordinates; one point draws a disc.
    radius : float
        Brush radius in pixels, > 0.

    Returns
    -------
    mask : numpy.ndarray
        bool crop of the covered pixels (may be empty, shape (0, 0), off the image).
    origin : (int, int)
        (row, col) of the crop's top-left pixel in the label map.
    """
    pts = _points(points)
    r = float(radius)
    if not r > 0:
        raise CervkitInputError(f"brush radius must be > 0, got {radius}")
    height, width = int(shape[0]), int(shape[1])
    x0 = max(int(np.floor(pts[:, 0].min() - r - 0.5)), 0)
    y0 = max(int(np.floor(pts[:, 1].min() - r - 0.5)), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + r + 0.5)), width)
    y1 = min(int(np.ceil(pts[:, 1].max() + r + 0.5)), height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), (0, 0)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    segments = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:]))
    r2 = r * r
    for a, b in segments:
        sx0 = max(int(np.floor(min(a[0], b[0]) - r - 0.5)), x0)
        sy0 = max(int(np.floor(min(a[1], b[1]) - r - 0.5)), y0)
        sx1 = min(int(np.ceil(max(a[0], b[0]) + r + 0.5)), x1)
        sy1 = min(int(np.ceil(max(a[1], b[1]) + r + 0.5)), y1)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        px = (np.arange(sx0, sx1, dtype=np.float64) + 0.5)[None, :] - a[0]
        py = (np.arange(sy0, sy1, dtype=np.float64) + 0.5)[:, None] - a[1]
        d = b - a
        length2 = float(d @ d)
        t = np.clip((px * d[0] + py * d[1]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2
        mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] |= dist2 <= r2
    return mask, (y0, x0)


def paint_stroke(labels: np.ndarray, points: Sequence[Sequence[float]] | np.ndarray, radius: float,
                 value: int, *, only_background: bool = False,
                 only_label: int | None = None) -> tuple[np.ndarray, BBox | None]:
    """Paint (or erase) a round brush stroke along a polyline.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    points : sequence of (x, y)
        Pointer positions, pixel-edge coordinates; segments between them are filled.
    radius : float
        Brush radius in pixels (> 0).
    value : int
        Label to paint; 0 erases.
    only_background : bool, default False
        Paint only pixels that are background now (never over another vertebra).
    only_label : int, optional
        Change only pixels that hold this label now (e.g. erase only the active vertebra).

    Returns
    -------
    new_labels : numpy.ndarray
        The painted copy.
    bbox : BBox or None
        Tight box of the changed pixels; None when nothing changed.
    """
    arr = check_labels(labels)
    mask, origin = stroke_mask(arr.shape, points, radius)
    if mask.size == 0:
        return arr.copy(), None
    return _apply(arr, mask, origin, check_value(value), only_background=only_background,
                  only_label=only_label)


def fill_polygon(labels: np.ndarray, points: Sequence[Sequence[float]] | np.ndarray, value: int, *,
                 only_background: bool = False) -> tuple[np.ndarray, BBox | None]:
    """Fill a closed polygon (lasso) with ``value``.

    A pixel is filled when its centre lies inside the polygon
    (:func:`skimage.draw.polygon`).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    points : sequence of (x, y)
        At least 3 vertices, pixel-edge coordinates; the polygon is closed automatically.
    value : int
        Label to fill with (0 erases).
    only_background : bool, default False
        Fill only background pixels.

    Returns
    -------
    new_labels : numpy.ndarray
        The filled copy.
    bbox : BBox or None
        Tight box of the changed pixels; None when nothing changed.
    """
    from skimage.draw import polygon

    arr = check_labels(labels)
    pts = _points(points)
    if len(pts) < 3:
        raise CervkitInputError(f"a polygon needs at least 3 points, got {len(pts)}")
    rr, cc = polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=arr.shape)
    mask = np.zeros(arr.shape, dtype=bool)
    mask[rr, cc] = True
    return _apply(arr, mask, (0, 0), check_value(value), only_background=only_background,
                  only_label=None)


def flood_fill(labels: np.ndarray, seed_xy: Sequence[float], value: int, *,
               connectivity: int = 1) -> tuple[np.ndarray, BBox | None]:
    """Fill the connected region of equal labels that contains the seed (paint bucket).

    Clicking inside a hole of a vertebra fills the hole; clicking on a vertebra
    relabels it as ``value``; clicking on the outer background fills all of it
    (undo reverts that).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    seed_xy : (float, float)
        (x, y) of the click, pixel-edge coordinates.
    value : int
        Label to fill with.
    connectivity : int, default 1
        1 = 4-connected, 2 = 8-connected region.

    Returns
    -------
    new_labels : numpy.ndarray
        The filled copy.
    bbox : BBox or None
        Tight box of the changed pixels; None when nothing changed.
    """
    from skimage.segmentation import flood

    arr = check_labels(labels)
    x, y = float(seed_xy[0]), float(seed_xy[1])
    row, col = int(np.floor(y)), int(np.floor(x))
    if not (0 <= row < arr.shape[0] and 0 <= col < arr.shape[1]):
        raise CervkitInputError(f"flood-fill seed ({x}, {y}) lies outside the {arr.shape} image")
    mask = flood(arr, (row, col), connectivity=connectivity)
    return _apply(arr, mask, (0, 0), check_value(value), only_background=False, only_label=None)


def delete_label(labels: np.ndarray, label: int, *, renumber: bool = True) -> np.ndarray:
    """Remove one vertebra; optionally renumber the rest 1..K top to bottom.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    label : int
        The label to clear (1..255).
    renumber : bool, default True
        Close the gap with :func:`relabel_top_to_bottom`.

    Returns
    -------
    numpy.ndarray
        The new label map.
    """
    arr = check_labels(labels)
    value = check_value(label)
    if value == 0:
        raise CervkitInputError("label 0 is the background and cannot be deleted")
    out = arr.copy()
    out[out == value] = 0
    return relabel_top_to_bottom(out) if renumber else out


def next_free_label(labels: np.ndarray) -> int:
    """Return the smallest label in 1..255 not used in ``labels``.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map.

    Returns
    -------
    int
        The free label.

    Raises
    ------
    CervkitInputError
        All 255 labels are used.
    """
    arr = check_labels(labels)
    used = np.bincount(arr.ravel(), minlength=256)
    free = np.flatnonzero(used[1:] == 0)
    if free.size == 0:
        raise CervkitInputError("all 255 labels are in use")
    return int(free[0]) + 1
