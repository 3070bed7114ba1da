"""Label maps ↔ per-vertebra instances ↔ boxes, ordered top to bottom; crops with a margin.

Conventions (see ``DESIGN.md``):

* a **label map** is ``uint8 (H, W)``: 0 background, 1..K one vertebral body each,
  numbered top to bottom by centroid row (ties by column);
* a **box** is ``(x_min, y_min, x_max, y_max)`` in pixel-edge coordinates with the
  max exclusive (albumentations' ``pascal_voc``): the pixel at row ``r``, column ``c``
  has the box ``(c, r, c + 1, r + 1)``;
* an **integer box** (crops) is the same with ints, so ``image[y0:y1, x0:x1]`` is the crop.

YOLO label files (detection and segmentation) live in :mod:`cervkit.labels.yolo`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import label as _cc_label

from cervkit.core.errors import CervkitInputError
from cervkit.io.resize import resize

IntBox = tuple[int, int, int, int]


@dataclass
class Instance:
    """One vertebral body.

    Attributes
    ----------
    label : int
        Its value in the label map (1..K).
    mask : numpy.ndarray
        bool (H, W), the full image size.
    box : tuple of float
        ``(x_min, y_min, x_max, y_max)``, pixel-edge, max exclusive.
    area : int
        Number of pixels.
    centroid : tuple of float
        ``(row, col)`` of the pixel centres' mean (pixel ``(r, c)`` counts as ``(r, c)``).
    """

    label: int
    mask: np.ndarray
    box: tuple[float, float, float, float]
    area: int
    centroid: tuple[float, float]

    @classmethod
    def from_mask(cls, mask: np.ndarray, label: int) -> Instance:
        """Build an instance (box, area, centroid) from a non-empty boolean mask.

        Parameters
        ----------
        mask : numpy.ndarray
            (H, W) mask of the body (cast to bool).
        label : int
            Its value in the label map.

        Returns
        -------
        Instance
            The instance; CervkitInputError for an empty mask.
        """
        mask = np.asarray(mask, dtype=bool)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            raise CervkitInputError(f"instance {label} has an empty mask")
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        return cls(int(label), mask, box, int(rows.size), (float(rows.mean()), float(cols.mean())))


def check_label_map(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a 2D integer array or raise CervkitInputError.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map: integer, bool, or float holding whole numbers; no negatives.

    Returns
    -------
    numpy.ndarray
        Integer (H, W) array (bool becomes uint8, whole floats int64).
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise CervkitInputError(f"a label map must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise CervkitInputError(f"a label map must hold integers, got non-integer {arr.dtype} values")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise CervkitInputError("a label map must not hold negative values")
    return arr


def present_labels(labels: np.ndarray) -> np.ndarray:
    """Return the sorted non-zero values of ``labels``.

    Parameters
    ----------
    labels : numpy.ndarray
        Label map.

    Returns
    -------
    numpy.ndarray
        The labels present, ascending, without 0.
    """
    values = np.unique(labels)
    return values[values != 0]


def relabel_top_to_bottom(labels: np.ndarray) -> np.ndarray:
    """Renumber a label map 1..K by centroid row (ties by column), dropping gaps.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer (H, W) label map, 0 background.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) label map numbered top to bottom.
    """
    arr = check_label_map(labels)
    values = present_labels(arr)
    if values.size > 255:
        raise CervkitInputError(f"{values.size} instances do not fit a uint8 label map (at most 255)")
    out = np.zeros(arr.shape, dtype=np.uint8)
    if values.size == 0:
        return out
    centroids = ndimage.center_of_mass(np.ones(arr.shape), arr, values)
    order = sorted(range(values.size), key=lambda i: (centroids[i][0], centroids[i][1]))
    lut = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for new, i in enumerate(order, start=1):
        lut[values[i]] = new
    out[...] = lut[arr]
    return out


def instances_from_labels(labels: np.ndarray, *, binary: bool | None = None, min_area: int = 0,
                          split_components: bool = False, connectivity: int = 2) -> list[Instance]:
    """Split a label map (or a binary mask) into instances.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer or bool (H, W) array.
    binary : bool, optional
        Treat every non-zero pixel as foreground and split it into connected
        components, numbered top to bottom. Default: True when the map holds a
        single foreground value, False otherwise.
    min_area : int, default 0
        Drop instances with fewer pixels.
    split_components : bool, default False
        For a label map: make each connected component of a label its own
        instance (labels renumbered top to bottom). By default a label with
        several components stays one instance and keeps its value.
    connectivity : int, default 2
        1 for 4-neighbours, 2 for 8-neighbours (component splitting).

    Returns
    -------
    list of Instance
        In increasing label order (top to bottom when the map follows the convention).
    """
    arr = check_label_map(labels)
    values = present_labels(arr)
    if binary is None:
        binary = values.size == 1
    if binary or split_components:
        parts = np.zeros(arr.shape, dtype=np.int32)
        count = 0
        for value in ([1] if binary else values):
            fg = arr != 0 if binary else arr == value
            comp, n = _cc_label(fg, connectivity=connectivity, return_num=True)
            parts[comp > 0] = comp[comp > 0] + count
            count += n
        if min_area > 0:
            sizes = np.bincount(parts.ravel())
            parts[sizes[parts] < min_area] = 0
        arr = relabel_top_to_bottom(parts)
        values = present_labels(arr)
    out = [Instance.from_mask(arr == v, int(v)) for v in values]
    return [inst for inst in out if inst.area >= min_area]


def labels_from_instances(masks: Sequence[np.ndarray | Instance], shape: tuple[int, int],
                          scores: Sequence[float] | None = None, *, relabel: bool = True) -> np.ndarray:
    """Paint instance masks into one label map; overlaps go to the higher score.

    Parameters
    ----------
    masks : sequence of numpy.ndarray or Instance
        bool (H, W) masks (non-zero = inside) or instances.
    shape : tuple of int
        (H, W) of the output.
    scores : sequence of float, optional
        One per mask; a pixel claimed by several masks goes to the highest score
        (ties and ``None``: the earlier mask wins).
    relabel : bool, default True
        Number the result top to bottom (instances fully covered by others vanish);
        with False mask ``i`` gets label ``i + 1``.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) label map.
    """
    arrays = [np.asarray(m.mask if isinstance(m, Instance) else m) != 0 for m in masks]
    if len(arrays) > 255:
        raise CervkitInputError(f"{len(arrays)} instances do not fit a uint8 label map (at most 255)")
    for i, m in enumerate(arrays):
        if m.shape != tuple(shape):
            raise CervkitInputError(f"mask {i} has shape {m.shape}, expected {tuple(shape)}")
    score = np.zeros(len(arrays)) if scores is None else np.asarray(scores, dtype=float)
    if score.shape != (len(arrays),):
        raise CervkitInputError(f"got {score.size} scores for {len(arrays)} masks")
    out = np.zeros(shape, dtype=np.uint8)
    # Paint lowest priority first: ascending score, and for equal scores later masks first.
    for i in sorted(range(len(arrays)), key=lambda k: (score[k], -k)):
        out[arrays[i]] = i + 1
    return relabel_top_to_bottom(out) if relabel else out


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Return the tight box of each label present, in increasing label order.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer (H, W) label map.

    Returns
    -------
    numpy.ndarray
        float32 (N, 4) ``(x_min, y_min, x_max, y_max)``, pixel-edge, max exclusive.
    """
    arr = check_label_map(labels)
    slices = ndimage.find_objects(arr) if arr.size else []
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices if s is not None]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def crop_box_with_margin(box: Sequence[float], image_shape: tuple[int, int], margin: float = 0.15, *,
                         square: bool = False, jitter: float = 0.0,
                         rng: np.random.Generator | None = None) -> IntBox:
    """Grow a box by a margin and return the integer crop window inside the image.

    Parameters
    ----------
    box : sequence of float
        ``(x_min, y_min, x_max, y_max)``, pixel-edge.
    image_shape : tuple of int
        (H, W) of the image.
    margin : float, default 0.15
        Added on each side as a fraction of the box's width (x) and height (y).
    square : bool, default False
        Grow the shorter side to the longer one; a square window is shifted (not
        clipped) to stay inside the image when it fits.
    jitter : float, default 0.0
        Random shift of the window's centre, uniform in ±``jitter`` × box size
        (training-time augmentation of the crop).
    rng : numpy.random.Generator, optional
        Source of the jitter (default: a fresh unseeded generator).

    Returns
    -------
    tuple of int
        ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    height, width = int(image_shape[0]), int(image_shape[1])
    if not (x_max > x_min and y_max > y_min):
        raise CervkitInputError(f"empty or inverted box {tuple(box)}")
    bw, bh = x_max - x_min, y_max - y_min
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    if jitter > 0:
        gen = rng if rng is not None else np.random.default_rng()
        cx += gen.uniform(-jitter, jitter) * bw
        cy += gen.uniform(-jitter, jitter) * bh
    half_w, half_h = bw * (0.5 + margin), bh * (0.5 + margin)
    if square:
        half_w = half_h = max(half_w, half_h)
    x0, x1 = int(np.floor(cx - half_w)), int(np.ceil(cx + half_w))
    y0, y1 = int(np.floor(cy - half_h)), int(np.ceil(cy + half_h))
    if square:
        x0, x1 = _shift_inside(x0, x1, width)
        y0, y1 = _shift_inside(y0, y1, height)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        raise CervkitInputError(f"box {tuple(box)} lies outside the {height}x{width} image")
    return (x0, y0, x1, y1)


def _shift_inside(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Shift the interval [lo, hi) into [0, size) when it fits."""
    if hi - lo <= size:
        if lo < 0:
            lo, hi = 0, hi - lo
        elif hi > size:
            lo, hi = lo - (hi - size), size
    return lo, hi


def crop(image: np.ndarray, int_box: Sequence[int], out_size: tuple[int, int] | None = None, *,
         nearest: bool | None = None) -> np.ndarray:
    """Cut ``image[y0:y1, x0:x1]`` and optionally resize it.

    Parameters
    ----------
    image : numpy.ndarray
        2D image, probability map or mask.
    int_box : sequence of int
        ``(x0, y0, x1, y1)`` from :func:`crop_box_with_margin`.
    out_size : tuple of int, optional
        (height, width) of the result; masks use nearest neighbour (see :func:`cervkit.io.resize.resize`).
    nearest : bool, optional
        Force nearest (True) or bilinear (False) resizing.

    Returns
    -------
    numpy.ndarray
        The crop (a copy).
    """
    x0, y0, x1, y1 = (int(v) for v in int_box)
    arr = np.asarray(image)
    if not (0 <= x0 < x1 <= arr.shape[1] and 0 <= y0 < y1 <= arr.shape[0]):
        raise CervkitInputError(f"crop box {tuple(int_box)} is not inside the image of shape {arr.shape}")
    out = arr[y0:y1, x0:x1].copy()
    return out if out_size is None else resize(out, out_size, nearest=nearest)


def paste_crop(prob_or_mask: np.ndarray, int_box: Sequence[int], image_shape: tuple[int, int], *,
               nearest: bool | None = None, fill: float = 0) -> np.ndarray:
    """Resize a crop back to its window and place it in a full-size array (inverse of :func:`crop`).

    Parameters
    ----------
    prob_or_mask : numpy.ndarray
        2D crop output (probabilities: bilinear; masks: nearest).
    int_box : sequence of int
        The window it was cut from, ``(x0, y0, x1, y1)``.
    image_shape : tuple of int
        (H, W) of the full image.
    nearest : bool, optional
        Force nearest (True) or bilinear (False) resizing.
    fill : float, default 0
        Value outside the window.

    Returns
    -------
    numpy.ndarray
        (H, W) array of the crop's dtype.
    """
    x0, y0, x1, y1 = (int(v) for v in int_box)
    height, width = int(image_shape[0]), int(image_shape[1])
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise CervkitInputError(f"crop box {tuple(int_box)} is not inside an image of shape {image_shape}")
    arr = np.asarray(prob_or_mask)
    out = np.full((height, width), fill, dtype=arr.dtype)
    out[y0:y1, x0:x1] = resize(arr, (y1 - y0, x1 - x0), nearest=nearest)
    return out


