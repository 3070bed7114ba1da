"""Compact text encodings of label maps for the notebook view <-> kernel link.

Widget managers (Colab's in particular) mishandle large binary buffers, so the
editor sends label maps as short strings:

``encode_labels`` / ``decode_labels``
    base64 of an 8-bit grayscale PNG (Pillow mode ``"L"``); a browser decodes
    it with ``new Image()`` + ``data:image/png;base64,…`` and reads the red
    channel. Exact for every uint8 label map.
``rle_encode`` / ``rle_decode``
    run-length over the row-major flattened map as ``"value:count,value:count,…"``
    (decimal; trivially parsed in JavaScript without image decoding).
``encode_patch`` / ``apply_patch``
    one changed rectangle (a brush stroke's box) as a JSON-ready dict, so an
    edit sends only what changed.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.editor.labelmap import check_labels

__all__ = [
    "PNG_PREFIX", "apply_patch", "decode_labels", "encode_labels", "encode_patch",
    "rle_decode", "rle_encode",
]

PNG_PREFIX = "data:image/png;base64,"
ENCODINGS = ("png", "rle")


def _as_uint8_2d(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a C-contiguous 2D uint8 array or raise CervkitInputError."""
    return np.ascontiguousarray(check_labels(labels))


def _check_shape(arr: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """Raise CervkitInputError when a decoded array does not have the expected shape."""
    if shape is not None and tuple(arr.shape) != (int(shape[0]), int(shape[1])):
        raise CervkitInputError(f"decoded label map has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def encode_labels(labels: np.ndarray, *, compress_level: int = 6, data_url: bool = False) -> str:
    """Encode a label map as base64 of a grayscale PNG.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map (H, W >= 1).
    compress_level : int, default 6
        zlib level 0..9 (a 1024 x 1024 map with 7 bodies: about 8 kB of text at 6).
    data_url : bool, default False
        Prefix ``data:image/png;base64,`` so a browser can use the string as an image source.

    Returns
    -------
    str
        ASCII text.
    """
    from PIL import Image as PILImage

    arr = _as_uint8_2d(labels)
    if arr.size == 0:
        raise CervkitInputError(f"cannot encode an empty label map of shape {arr.shape}")
    buffer = io.BytesIO()
    PILImage.fromarray(arr).save(buffer, format="PNG", compress_level=int(compress_level))
    text = base64.b64encode(buffer.getvalue()).decode("ascii")
    return PNG_PREFIX + text if data_url else text


def decode_labels(text: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode :func:`encode_labels` output (with or without the data-URL prefix).

    Parameters
    ----------
    text : str
        base64 PNG text.
    shape : (int, int), optional
        Expected (H, W); a mismatch raises.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W), a new writable array.

    Raises
    ------
    CervkitInputError
        Not base64, not a PNG, not 8-bit grayscale, or the wrong shape.
    """
    from PIL import Image as PILImage

    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        raw = base64.b64decode(text, validate=True)
        with PILImage.open(io.BytesIO(raw)) as img:
            if img.mode != "L":
                raise CervkitInputError(f"encoded label map is PNG mode {img.mode!r}, expected 'L'")
            arr = np.array(img, dtype=np.uint8)
    except CervkitInputError:
        raise
    except Exception as exc:  # binascii.Error, PIL.UnidentifiedImageError, OSError …
        raise CervkitInputError(f"not a base64 PNG label map ({exc})") from exc
    return _check_shape(arr, shape)


def rle_encode(labels: np.ndarray) -> str:
    """Run-length encode a label map (row-major) as ``"value:count,…"``.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map.

    Returns
    -------
    str
        Runs in order; ``""`` for an empty map. The shape is not included.
    """
    flat = _as_uint8_2d(labels).ravel()
    if flat.size == 0:
        return ""
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    counts = np.diff(np.concatenate((starts, [flat.size])))
    values = flat[starts]
    return ",".join(f"{v}:{c}" for v, c in zip(values.tolist(), counts.tolist()))


def rle_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode :func:`rle_encode` output into a (H, W) uint8 label map.

    Parameters
    ----------
    text : str
        ``"value:count,…"``.
    shape : (int, int)
        (H, W); the counts must add up to H * W.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W).

    Raises
    ------
    CervkitInputError
        Malformed text, values outside 0..255, non-positive counts, or a total
        that does not match ``shape``.
    """
    height, width = int(shape[0]), int(shape[1])
    if not text:
        if height * width:
            raise CervkitInputError(f"empty run-length text for a {height}x{width} map")
        return np.zeros((height, width), dtype=np.uint8)
    try:
        numbers = np.array(text.replace(":", ",").split(","), dtype=np.int64).reshape(-1, 2)
    except ValueError as exc:
        raise CervkitInputError(f"malformed run-length text ({exc})") from exc
    values, counts = numbers[:, 0], numbers[:, 1]
    if values.min() < 0 or values.max() > 255:
        raise CervkitInputError("run-length values must lie in 0..255")
    if counts.min() <= 0:
        raise CervkitInputError("run-length counts must be positive")
    if int(counts.sum()) != height * width:
        raise CervkitInputError(
            f"run lengths add up to {int(counts.sum())} pixels, a {height}x{width} map has {height * width}")
    return np.repeat(values.astype(np.uint8), counts).reshape(height, width)


def encode_patch(labels: np.ndarray, bbox: tuple[int, int, int, int], *,
                 encoding: str = "png") -> dict[str, Any]:
    """Encode the rectangle ``bbox`` of a label map (e.g. the box a stroke changed).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map.
    bbox : (x_min, y_min, x_max, y_max)
        Pixel box, max exclusive, inside the map and non-empty.
    encoding : {"png", "rle"}
        Text encoding of the patch.

    Returns
    -------
    dict
        ``{"bbox": [x0, y0, x1, y1], "encoding": ..., "data": str, "shape": [H, W]}``
        where ``shape`` is the full map's (so a stale view can tell it is out of sync).
    """
    arr = _as_uint8_2d(labels)
    x0, y0, x1, y1 = (int(v) for v in bbox)
    if not (0 <= x0 < x1 <= arr.shape[1] and 0 <= y0 < y1 <= arr.shape[0]):
        raise CervkitInputError(f"patch box {tuple(bbox)} is empty or outside the {arr.shape} map")
    if encoding not in ENCODINGS:
        raise CervkitInputError(f"unknown patch encoding {encoding!r}; use one of {ENCODINGS}")
    crop = arr[y0:y1, x0:x1]
    data = encode_labels(crop) if encoding == "png" else rle_encode(crop)
    return {"bbox": [x0, y0, x1, y1], "encoding": encoding, "data": data,
            "shape": [int(arr.shape[0]), int(arr.shape[1])]}


def decode_patch(patch: dict[str, Any]) -> np.ndarray:
    """Return the rectangle of label values an :func:`encode_patch` dict holds.

    Parameters
    ----------
    patch : dict
        ``bbox`` (x_min, y_min, x_max, y_max), ``encoding`` (``"png"`` or ``"rle"``) and ``data``.

    Returns
    -------
    numpy.ndarray
        uint8 (y_max - y_min, x_max - x_min) label values.
    """
    x0, y0, x1, y1 = (int(v) for v in patch["bbox"])
    shape = (y1 - y0, x1 - x0)
    if patch.get("encoding", "png") == "rle":
        return rle_decode(patch["data"], shape)
    return decode_labels(patch["data"], shape)


def apply_patch(labels: np.ndarray, patch: dict[str, Any], *, inplace: bool = False) -> np.ndarray:
    """Write an :func:`encode_patch` rectangle into a label map.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map of the shape the patch was made from.
    patch : dict
        As returned by :func:`encode_patch`.
    inplace : bool, default False
        Modify ``labels`` itself instead of a copy.

    Returns
    -------
    numpy.ndarray
        The updated map (``labels`` itself when ``inplace``).
    """
    arr = np.asarray(labels)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise CervkitInputError(f"apply_patch needs a 2D uint8 label map, got {arr.dtype} {arr.shape}")
    if "shape" in patch and tuple(patch["shape"]) != arr.shape:
        raise CervkitInputError(f"patch was made for a {tuple(patch['shape'])} map, not {arr.shape}")
    x0, y0, x1, y1 = (int(v) for v in patch["bbox"])
    if not (0 <= x0 < x1 <= arr.shape[1] and 0 <= y0 < y1 <= arr.shape[0]):
        raise CervkitInputError(f"patch box {tuple(patch['bbox'])} is outside the {arr.shape} map")
    out = arr if inplace else arr.copy()
    out[y0:y1, x0:x1] = decode_patch(patch)
    return out
