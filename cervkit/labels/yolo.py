"""YOLO label files: detection boxes and segmentation polygons, written and read back.

* Detection (``write_yolo_labels``): one line ``cls cx cy w h`` per box, normalised by
  the image width/height, 6 decimals — the format ultralytics' detect task reads.
* Segmentation (``write_yolo_seg_labels``): one line ``cls x1 y1 x2 y2 …`` per instance,
  the outer contour of the instance (its largest connected component) through the
  centres of its boundary pixels, normalised. A pixel centre is written as
  ``(c + 0.5) / W``, so both this module's reader and ultralytics' ``polygon2mask``
  (which truncates to int) put the vertex back on pixel ``c``. Holes are ignored
  (vertebral bodies have none).

An image without objects gets an empty file, as ultralytics expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes
from cervkit.labels.instances import check_label_map, present_labels


def _classes_for(n: int, classes: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Return ``classes`` as an int array of length ``n`` (zeros when None)."""
    cls = np.zeros(n, dtype=np.int64) if classes is None else np.asarray(classes, dtype=np.int64).ravel()
    if cls.shape != (n,):
        raise CervkitInputError(f"got {cls.size} classes for {n} objects")
    if n and cls.min() < 0:
        raise CervkitInputError("YOLO class ids must be >= 0")
    return cls


def write_yolo_labels(path: str | PathLike[str], boxes: np.ndarray, image_shape: tuple[int, int],
                      classes: Sequence[int] | np.ndarray | None = None, *, overwrite: bool = False) -> Path:
    """Write boxes as a YOLO detection label file.

    Parameters
    ----------
    path : str or PathLike
        The ``.txt`` file (parent folders are created).
    boxes : numpy.ndarray
        (N, 4) ``(x_min, y_min, x_max, y_max)`` in pixels, pixel-edge.
    image_shape : tuple of int
        (H, W) of the image the boxes belong to.
    classes : sequence of int, optional
        One class id per box (default 0, "vertebral body").
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = float(image_shape[0]), float(image_shape[1])
    if np.any(arr[:, 2] <= arr[:, 0]) or np.any(arr[:, 3] <= arr[:, 1]):
        raise CervkitInputError("boxes must have x_max > x_min and y_max > y_min", path)
    cls = _classes_for(len(arr), classes)
    lines = []
    for c, (x0, y0, x1, y1) in zip(cls, arr):
        cx, cy, w, h = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height
        lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return atomic_write_bytes(path, "".join(lines).encode("ascii"), overwrite=overwrite)


def _read_rows(path: str | PathLike[str]) -> list[tuple[int, list[float]]]:
    """Parse a YOLO label file into (class, numbers) rows; raise CervkitInputError on bad lines."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CervkitInputError(f"cannot read YOLO label file: {exc}", path) from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError as exc:
            raise CervkitInputError(f"line {number} is not 'class number number …': {line!r}", path) from exc
        if cls < 0 or not all(np.isfinite(values)):
            raise CervkitInputError(f"line {number} has a negative class or a non-finite number", path)
        rows.append((cls, values))
    return rows


def read_yolo_labels(path: str | PathLike[str], image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read a YOLO detection label file back into pixel boxes.

    Parameters
    ----------
    path : str or PathLike
        The ``.txt`` file.
    image_shape : tuple of int
        (H, W) of the image.

    Returns
    -------
    boxes : numpy.ndarray
        float32 (N, 4) ``(x_min, y_min, x_max, y_max)`` in pixels.
    classes : numpy.ndarray
        int64 (N,) class ids.
    """
    height, width = float(image_shape[0]), float(image_shape[1])
    boxes, classes = [], []
    for number, (cls, values) in enumerate(_read_rows(path), start=1):
        if len(values) != 4:
            raise CervkitInputError(f"object {number} has {len(values)} numbers, expected 4 (cx cy w h)", path)
        cx, cy, w, h = values
        if w <= 0 or h <= 0:
            raise CervkitInputError(f"object {number} has a non-positive width or height", path)
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
        classes.append(cls)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


def label_polygon(mask: np.ndarray) -> np.ndarray:
    """Return the outer contour of a mask's largest component through its boundary pixel centres.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (H, W) mask of one instance (non-empty).

    Returns
    -------
    numpy.ndarray
        int (M, 2) vertices ``(col, row)`` of the pixels on the contour, M >= 1.
    """
    contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise CervkitInputError("cannot trace the contour of an empty mask")
    best = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return best.reshape(-1, 2).astype(np.int64)


def write_yolo_seg_labels(path: str | PathLike[str], labels: np.ndarray,
                          classes: Sequence[int] | np.ndarray | None = None, *, overwrite: bool = False) -> Path:
    """Write a label map as a YOLO segmentation label file (one polygon per instance).

    Parameters
    ----------
    path : str or PathLike
        The ``.txt`` file (parent folders are created).
    labels : numpy.ndarray
        uint8 (H, W) label map; instances are written in increasing label order.
    classes : sequence of int, optional
        One class id per label present (default 0).
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    arr = check_label_map(labels)
    height, width = arr.shape
    values = present_labels(arr)
    cls = _classes_for(len(values), classes)
    lines = []
    for c, value in zip(cls, values):
        poly = label_polygon(arr == value).astype(np.float64)
        while len(poly) < 3:  # a line or a point: repeat the last vertex so YOLO still sees a polygon
            poly = np.vstack([poly, poly[-1:]])
        xy = np.column_stack([(poly[:, 0] + 0.5) / width, (poly[:, 1] + 0.5) / height]).ravel()
        lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in xy) + "\n")
    return atomic_write_bytes(path, "".join(lines).encode("ascii"), overwrite=overwrite)


def read_yolo_seg_labels(path: str | PathLike[str], image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a YOLO segmentation label file into a label map.

    Object ``i`` (the ``i``-th line) is filled with label ``i + 1`` (later lines over
    earlier ones where polygons overlap), so files written by
    :func:`write_yolo_seg_labels` come back numbered as written.

    Parameters
    ----------
    path : str or PathLike
        The ``.txt`` file.
    image_shape : tuple of int
        (H, W) of the image.

    Returns
    -------
    labels : numpy.ndarray
        uint8 (H, W) label map.
    classes : numpy.ndarray
        int64 (N,) class id of each object.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    rows = _read_rows(path)
    if len(rows) > 255:
        raise CervkitInputError(f"{len(rows)} objects do not fit a uint8 label map", path)
    out = np.zeros((height, width), dtype=np.uint8)
    for number, (_, values) in enumerate(rows, start=1):
        if len(values) < 6 or len(values) % 2:
            raise CervkitInputError(f"object {number} needs an even number (>= 6) of coordinates", path)
        xy = np.asarray(values, dtype=np.float64).reshape(-1, 2) * (width, height)
        pts = np.floor(xy).astype(np.int32)
        cv2.fillPoly(out, [pts.reshape(-1, 1, 2)], color=number)
    return out, np.asarray([c for c, _ in rows], dtype=np.int64)

