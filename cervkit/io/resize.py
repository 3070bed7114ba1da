"""Resizing images and masks to one network input size.

Images are resampled linearly (with Gaussian anti-aliasing when shrinking);
masks by nearest neighbour so label values are never blended into new ones.
Passing an :class:`~cervkit.core.image.Image` also rescales its pixel spacing.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from cervkit.core.image import Image


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
        Nearest-neighbour resampling that keeps dtype and label values (pixel
        centres are aligned, as in :func:`skimage.transform.resize` order 0).
        Otherwise bilinear, anti-aliased when shrinking, returned as float32.

    Returns
    -------
    numpy.ndarray or Image
        The resized array; for an Image input, an Image whose ``spacing_mm``
        is scaled by old/new size and whose ``meta`` records ``resized_from``.
    """
    from skimage.transform import resize

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
        out = resize(arr, (height, width), order=0, mode="edge", anti_aliasing=False,
                     preserve_range=True)
        return out.astype(arr.dtype)
    shrinking = height < arr.shape[0] or width < arr.shape[1]
    out = resize(arr.astype(np.float32), (height, width), order=1, mode="edge",
                 anti_aliasing=shrinking, preserve_range=True)
    return out.astype(np.float32)
