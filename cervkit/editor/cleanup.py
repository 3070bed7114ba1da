"""Clean-ups of a label map, on one label or all: fill holes, remove islands, smooth.

Each returns a new array and never moves a pixel from one vertebra to another:
pixels are only added from the background or returned to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from cervkit.core.errors import CervkitInputError
from cervkit.editor.labelmap import check_labels, check_value

__all__ = ["CLEAN_OPS", "fill_holes", "remove_islands", "smooth"]

CLEAN_OPS = ("fill_holes", "remove_islands", "smooth")


def _targets(labels: np.ndarray, label: int | None) -> list[int]:
    """Return the labels a clean-up works on: ``[label]`` or every present label."""
    if label is not None:
        return [check_value(label)]
    values = np.unique(labels)
    return [int(v) for v in values if v != 0]


def _each_label(labels: np.ndarray, label: int | None,
                pad: int) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray]]:
    """Yield (value, slices, mask crop) per target label, the crop padded by ``pad`` pixels."""
    objects = ndimage.find_objects(labels)
    for value in _targets(labels, label):
        if value == 0 or value > len(objects) or objects[value - 1] is None:
            continue
        sl = objects[value - 1]
        sl = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, labels.shape))
        yield value, sl, labels[sl] == value


def fill_holes(labels: np.ndarray, label: int | None = None) -> np.ndarray:
    """Fill background holes enclosed by a vertebra (one label, or each label).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    label : int, optional
        Only this label; default all.

    Returns
    -------
    numpy.ndarray
        A copy with enclosed background pixels set to the enclosing label
        (pixels of other labels are never changed).
    """
    arr = check_labels(labels)
    out = arr.copy()
    for value, sl, mask in _each_label(arr, label, pad=1):
        filled = ndimage.binary_fill_holes(mask)
        region = out[sl]
        region[filled & (region == 0)] = value
    return out


def remove_islands(labels: np.ndarray, label: int | None = None) -> np.ndarray:
    """Keep only the largest connected (8-connected) piece of each label; clear the rest.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    label : int, optional
        Only this label; default all.

    Returns
    -------
    numpy.ndarray
        A copy where the smaller pieces are background.
    """
    arr = check_labels(labels)
    out = arr.copy()
    for _value, sl, mask in _each_label(arr, label, pad=0):
        comp, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        region = out[sl]
        region[(comp != 0) & (comp != int(np.argmax(sizes)))] = 0
    return out


def smooth(labels: np.ndarray, label: int | None = None, radius: int = 2) -> np.ndarray:
    """Smooth outlines: binary closing (fills notches) then opening (cuts spurs) with a disc, per label.

    Removed pixels become background; added pixels are taken only from the
    background (a vertebra never grows into its neighbour).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (not modified).
    label : int, optional
        Only this label; default all.
    radius : int, default 2
        Disc radius in pixels (>= 1).

    Returns
    -------
    numpy.ndarray
        The smoothed copy.
    """
    from skimage.morphology import disk

    arr = check_labels(labels)
    if int(radius) < 1:
        raise CervkitInputError(f"smooth radius must be >= 1, got {radius}")
    footprint = disk(int(radius))
    out = arr.copy()
    for value, sl, mask in _each_label(arr, label, pad=int(radius) + 1):
        closed = ndimage.binary_closing(mask, structure=footprint)
        result = ndimage.binary_opening(closed, structure=footprint)
        region = out[sl]
        region[mask & ~result] = 0
        region[result & ~mask & (region == 0)] = value
    return out
