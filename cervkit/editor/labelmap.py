"""Small helpers on label maps shared by the editor's tools: validation and changed boxes."""

from __future__ import annotations

import numpy as np

from cervkit.core.errors import CervkitInputError

__all__ = ["BBox", "changed_bbox", "check_labels", "check_value", "mask_bbox"]

BBox = tuple[int, int, int, int]
"""(x_min, y_min, x_max, y_max) in pixels, max exclusive."""


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a 2D uint8 array or raise CervkitInputError.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) integer or bool label map with values in 0..255.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W); ``labels`` itself when already uint8.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise CervkitInputError(f"a label map must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
            raise CervkitInputError(f"a label map must hold integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise CervkitInputError("label values must lie in 0..255")
        arr = arr.astype(np.uint8)
    return arr


def check_value(value: int) -> int:
    """Return ``value`` as an int in 0..255 or raise CervkitInputError.

    Parameters
    ----------
    value : int
        A label value.

    Returns
    -------
    int
        ``value`` as int.
    """
    v = int(value)
    if not 0 <= v <= 255:
        raise CervkitInputError(f"label value {value} is outside 0..255")
    return v


def changed_bbox(before: np.ndarray, after: np.ndarray) -> BBox | None:
    """Return the tight box of pixels that differ between two maps, or None.

    Parameters
    ----------
    before, after : numpy.ndarray
        Arrays of the same shape.

    Returns
    -------
    BBox or None
        (x_min, y_min, x_max, y_max), max exclusive; None when equal.
    """
    return mask_bbox(np.asarray(before) != np.asarray(after))


def mask_bbox(mask: np.ndarray) -> BBox | None:
    """Return the tight (x_min, y_min, x_max, y_max) box of a 2D boolean mask, or None if empty.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (H, W).

    Returns
    -------
    BBox or None
        (x_min, y_min, x_max, y_max), max exclusive; None when the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
