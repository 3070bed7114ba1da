"""Resizing images and masks: the one nearest-neighbour resizer for masks, two linear ones for images.

* :func:`resize` resizes a 2D array: masks and label maps by nearest neighbour (pixel-centre
  aligned, values never blended, dtype kept), images and probability maps bilinearly (area
  averaging when shrinking both sides, OpenCV). The crop pipeline, the whole-image models and the
  acquisition shifts use it.
* :func:`resize_image` brings an image or label map to one network input size: masks through
  :func:`resize` (nearest), images linearly with Gaussian anti-aliasing when shrinking
  (scikit-image); an :class:`~cervkit.core.image.Image` also gets its pixel spacing rescaled.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image

__all__ = ["resize", "resize_image"]


def resize(array: np.ndarray, out_size: tuple[int, int], *, nearest: bool | None = None) -> np.ndarray:
    """Resize a 2D array to ``out_size = (height, width)``.

    Parameters
    ----------
    array : numpy.ndarray
        2D image, probability map or mask.
    out_size : tuple of int
        (height, width) wanted.
    nearest : bool, optional
        Nearest-neighbour (pixel-centre aligned, any dtype, values never blended): output
        pixel ``i`` takes input pixel ``floor((i + 0.5) * in / out)``, so a centre falling
        exactly on a pixel edge takes the pixel after it. Default: True for bool and
        integer arrays (masks, label maps), False for floats, which use bilinear
        interpolation (area averaging when shrinking).

    Returns
    -------
    numpy.ndarray
        The resized array, same dtype.
    """
    arr = np.asarray(array)
    h_out, w_out = int(out_size[0]), int(out_size[1])
    if arr.ndim != 2 or h_out < 1 or w_out < 1:
        raise CervkitInputError(f"cannot resize an array of shape {arr.shape} to {out_size}")
    if nearest is None:
        nearest = arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)
    h_in, w_in = arr.shape
    if (h_in, w_in) == (h_out, w_out):
        return arr.copy()
    if nearest:
        rows = np.minimum(((np.arange(h_out) + 0.5) * h_in / h_out).astype(np.int64), h_in - 1)
        cols = np.minimum(((np.arange(w_out) + 0.5) * w_in / w_out).astype(np.int64), w_in - 1)
        return arr[rows[:, None], cols[None, :]]
    import cv2

    shrink = h_out < h_in and w_out < w_in
    src = arr.astype(np.float32, copy=False)
    out = cv2.resize(src, (w_out, h_out), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.astype(arr.dtype, copy=False)


def _target(size: int | tuple[int, int]) -> tuple[int, int]:
    """Return (height, width) from an int (square) or a pair."""
    if isinstance(size, int | np.integer):
        height = width = int(size)
    else:
        height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    return height, width


@overload
def resize_image(array: Image, size: int | tuple[int, int], *, is_mask: bool = False) -> Image: ...


@overload
def resize_image(array: np.ndarray, size: int | tuple[int, int], *,
                 is_mask: bool = False) -> np.ndarray: ...


def resize_image(array: np.ndarray | Image, size: int | tuple[int, int], *,
                 is_mask: bool = False) -> np.ndarray | Image:
    """Resize a 2D image or label map to ``size``.

    Parameters
    ----------
    array : numpy.ndarray or Image
        (H, W) image (any numeric dtype) or label map / binary mask.
    size : int or (int, int)
        Output (height, width) — numpy order, not OpenCV's (width, height);
        an int gives a square.
    is_mask : bool, default False
        Nearest-neighbour resampling that keeps dtype and label values
        (:func:`resize` with ``nearest=True``; pixel centres are aligned).
        Otherwise bilinear, anti-aliased when shrinking, returned as float32.

    Returns
    -------
    numpy.ndarray or Image
        The resized array; for an Image input, an Image whose ``spacing_mm``
        is scaled by old/new size and whose ``meta`` records ``resized_from``.
    """
    if isinstance(array, Image):
        out = resize_image(array.array, size, is_mask=is_mask)
        old_h, old_w = array.shape
        spacing = None
        if array.spacing_mm is not None:
            spacing = (array.spacing_mm[0] * old_h / out.shape[0],
                       array.spacing_mm[1] * old_w / out.shape[1])
        meta = {**array.meta, "resized_from": (old_h, old_w)}
        return Image(np.clip(out, 0.0, 1.0), spacing, meta)
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"resize_image needs a 2D array, got shape {arr.shape}")
    height, width = _target(size)
    if is_mask:
        return resize(arr, (height, width), nearest=True)
    from skimage.transform import resize as sk_resize

    shrinking = height < arr.shape[0] or width < arr.shape[1]
    out = sk_resize(arr.astype(np.float32), (height, width), order=1, mode="edge",
                    anti_aliasing=shrinking, preserve_range=True)
    return out.astype(np.float32)
