"""Kernel side of the editor's link to its browser view: what is sent, and in which order.

:class:`MaskEditor` (``widget.py``) keeps the widget traits; this module holds
the pieces that decide how fast an edit reaches the screen:

* :class:`ViewFirstState` notifies the view *before* writing the crash copy
  (the autosave PNG + fsync costs ~30 ms on a 1024 x 1024 map, several times
  what the patch itself costs), so the patch is on the wire while the disk
  write runs. The autosave is still written before the edit call returns.
* :func:`patch_for` encodes only the changed rectangle, once, as run-length
  text when short (no image decoding in the browser) or PNG otherwise.
* :func:`label_summary` counts the labels present with one ``bincount``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cervkit.editor.codec import encode_labels, encode_patch, rle_encode
from cervkit.editor.labelmap import BBox
from cervkit.editor.state import EditorState

__all__ = ["PATCH_MAX_CHARS", "ViewFirstState", "image_png", "label_summary", "palette", "patch_for"]

PATCH_MAX_CHARS = 16384
"""A changed rectangle whose run-length text is longer is sent as a PNG patch (or the whole map)."""


class ViewFirstState(EditorState):
    """An :class:`EditorState` that tells its listeners about a change before autosaving it.

    Same behaviour and files as the base class; only the order differs (listeners, then
    the crash copy), so the view's patch leaves before the slow disk write.
    """

    def _changed(self, bbox: BBox | None, reason: str) -> None:
        """Bump the version and notify the listeners with autosave off, then autosave."""
        path, self.autosave_path = self.autosave_path, None
        try:
            super()._changed(bbox, reason)
        finally:
            self.autosave_path = path
        if path is not None:
            self.autosave()


def image_png(image: np.ndarray) -> str:
    """Return base64 of the image as an 8-bit grayscale PNG (the view's copy; it applies the window).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) image in [0, 1] (clipped).

    Returns
    -------
    str
        Base64 PNG.
    """
    return encode_labels(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), compress_level=1)


def palette() -> list[list[int]]:
    """One cycle of the label colours (:func:`cervkit.viz.label_colors`): label k uses row (k-1) % len.

    Returns
    -------
    list of list of int
        RGB rows, 0..255.
    """
    from cervkit.viz import label_colors

    colors = label_colors(255).astype(int)
    period = next(p for p in range(1, 256) if p == 255 or np.array_equal(colors[p:], colors[:-p]))
    return colors[:period].tolist()


def patch_for(labels: np.ndarray, bbox: BBox, max_chars: int = PATCH_MAX_CHARS) -> dict[str, Any] | None:
    """Return the patch dict for the rectangle ``bbox`` of ``labels``, or None when the whole map is cheaper.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) current label map.
    bbox : (x_min, y_min, x_max, y_max)
        Changed rectangle, max exclusive.
    max_chars : int, default PATCH_MAX_CHARS
        Longest run-length text sent as is; a longer one is sent as PNG.

    Returns
    -------
    dict or None
        :func:`~cervkit.editor.codec.encode_patch`'s dict (``bbox``, ``encoding``, ``data``,
        ``shape``), or None when the box covers a quarter of the map or more.
    """
    x0, y0, x1, y1 = (int(v) for v in bbox)
    crop = labels[y0:y1, x0:x1]
    if crop.size * 4 >= labels.size:
        return None
    text = rle_encode(crop)
    if len(text) > max_chars:
        return encode_patch(labels, (x0, y0, x1, y1), encoding="png")
    return {"bbox": [x0, y0, x1, y1], "encoding": "rle", "data": text,
            "shape": [int(labels.shape[0]), int(labels.shape[1])]}


def label_summary(labels: np.ndarray) -> tuple[int, int]:
    """Return (highest label present, number of labels present), background excluded.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map.

    Returns
    -------
    (int, int)
        Highest label (0 when empty) and how many labels are present.
    """
    counts = np.bincount(labels.ravel(), minlength=256)  # far cheaper than np.unique
    present = np.flatnonzero(counts[1:]) + 1
    return (int(present[-1]) if present.size else 0), int(present.size)
