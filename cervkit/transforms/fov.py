"""Field-of-view shifts of a labelled image: zoom out / in at the same matrix, or a smaller matrix.

Used by :mod:`cervkit.transforms.shift` (``zoom``, ``matrix``) for ``benchmarks/bench_robustness.py``. The
image is resampled linearly (area averaging when shrinking), the label map nearest-neighbour (label values are never
blended) and renumbered 1..K top to bottom; each function also says how the pixel size changed.
"""

from __future__ import annotations

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.io.resize import resize
from cervkit.labels.instances import relabel_top_to_bottom

__all__ = ["matrix", "zoom"]


def _pair(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as float32 clipped to [0, 1] and a uint8 copy of ``labels``, 2D and of one shape."""
    arr = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    lab = np.asarray(labels).astype(np.uint8)
    if arr.ndim != 2:
        raise CervkitInputError(f"expected a 2D grayscale image, got shape {arr.shape}")
    if lab.shape != arr.shape:
        raise CervkitInputError(f"image {arr.shape} and label map {lab.shape} differ in shape")
    return arr, lab


def zoom(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Another field of view at the same matrix size; the label map follows exactly (nearest).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1].
    labels : numpy.ndarray
        Label map (H, W).
    factor : float
        < 1: zoom out (anatomy scaled to ``round(H·factor) × round(W·factor)``, centred, zero padding);
        > 1: zoom in (central ``round(H/factor) × round(W/factor)`` crop scaled up to H × W).

    Returns
    -------
    image : numpy.ndarray
        float32 (H, W) in [0, 1].
    labels : numpy.ndarray
        uint8 (H, W), renumbered 1..K top to bottom (vertebrae cropped away are gone).
    pixel_scale : tuple of float
        New pixel size / old pixel size per axis (row, col).
    """
    arr, lab = _pair(image, labels)
    if factor <= 0:
        raise ValueError(f"zoom factor must be positive, got {factor}")
    h, w = arr.shape
    if factor >= 1.0:
        ch, cw = max(1, round(h / factor)), max(1, round(w / factor))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        img = resize(arr[y0:y0 + ch, x0:x0 + cw], (h, w), nearest=False)
        out_lab = resize(lab[y0:y0 + ch, x0:x0 + cw], (h, w), nearest=True)
        return np.clip(img, 0.0, 1.0).astype(np.float32), relabel_top_to_bottom(out_lab), (ch / h, cw / w)
    sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    img = np.zeros_like(arr)
    out_lab = np.zeros_like(lab)
    img[y0:y0 + sh, x0:x0 + sw] = resize(arr, (sh, sw), nearest=False)
    out_lab[y0:y0 + sh, x0:x0 + sw] = resize(lab, (sh, sw), nearest=True)
    return np.clip(img, 0.0, 1.0).astype(np.float32), relabel_top_to_bottom(out_lab), (h / sh, w / sw)


def matrix(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The whole view resampled to a ``size`` × ``size`` matrix (a small image; the aspect ratio is not kept).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1].
    labels : numpy.ndarray
        Label map (H, W).
    size : int
        Side of the new matrix, at least 2.

    Returns
    -------
    image : numpy.ndarray
        float32 (size, size) in [0, 1]: area averaging when shrinking, bilinear when growing.
    labels : numpy.ndarray
        uint8 (size, size), nearest-neighbour, renumbered 1..K top to bottom (a body that vanishes is gone).
    pixel_scale : tuple of float
        New pixel size / old pixel size per axis (row, col): ``(H / size, W / size)``.
    """
    arr, lab = _pair(image, labels)
    n = int(size)
    if n < 2:
        raise ValueError(f"matrix size must be at least 2, got {size}")
    h, w = arr.shape
    img = np.clip(resize(arr, (n, n), nearest=False), 0.0, 1.0).astype(np.float32)
    return img, relabel_top_to_bottom(resize(lab, (n, n), nearest=True)), (h / n, w / n)
