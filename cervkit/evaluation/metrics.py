"""Segmentation metrics: Dice, IoU, PPV, sensitivity, HD and HD95, per image and per vertebra.

Definitions (one convention for the whole project)
--------------------------------------------------
Masks are 2D arrays; any non-zero pixel is foreground. With ``TP``, ``FP``, ``FN`` the pixel counts of
the confusion table:

* ``dice = 2 TP / (2 TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``,
  ``ppv = TP / (TP + FP)`` (precision), ``sensitivity = TP / (TP + FN)`` (recall).
* **Surfaces.** Distances are measured between the *boundaries* of the two masks, as in MONAI and
  DeepMind's ``surface-distance``: a surface pixel is a foreground pixel with at least one
  4-connected background neighbour (``mask & ~binary_erosion(mask)``); pixels outside the image
  count as background, so a mask touching the image edge has a surface there.
* **Directed distances.** For every surface pixel of one mask, the Euclidean distance (between pixel
  centres) to the nearest surface pixel of the other, from
  ``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)``, so anisotropic spacing is exact.
* ``hd`` = max of the two directed maxima (the Hausdorff distance between the surfaces);
  ``hd95`` = max of the two directed 95th percentiles (each directed set's percentile first, then the
  max), with NumPy's default linear interpolation.
* **Units.** ``hd_px``/``hd95_px`` are always in pixels (unit spacing); with ``spacing_mm = (row, col)``
  ``hd_mm``/``hd95_mm`` are in mm too, and ``hd``/``hd95`` repeat the mm values (else the pixel ones);
  ``unit`` says which.
* **Empty masks** (``empty`` says which: ``"both"``, ``"pred"``, ``"gt"`` or ``""``), never a NaN:
  both empty: a perfect score (overlap metrics 1, distances 0). One empty: ``dice = iou = 0``; the
  ratio whose denominator is 0 (``ppv`` when the prediction is empty, ``sensitivity`` when the ground
  truth is) is set to 0, the worst case; ``hd = hd95 =`` the image diagonal
  ``sqrt((H*row)**2 + (W*col)**2)`` (in pixels, or mm), larger than any distance inside the image.

Per image, label maps are binarised (foreground = any vertebra). Per vertebra, instances are matched
by IoU with the Hungarian algorithm: see :mod:`cervkit.evaluation.matching` (``match_instances``,
``per_vertebra_metrics``, ``detection_summary``, re-exported here). Summaries over images:
:func:`summarize` (percentile bootstrap CI) and :func:`paired_comparison` (Wilcoxon signed-rank).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from cervkit.core.errors import CervkitInputError

if TYPE_CHECKING:
    pass

Spacing = tuple[float, float] | Sequence[float] | None


def check_spacing(spacing: Spacing) -> tuple[float, float] | None:
    """Validate a (row, col) spacing in mm; return it as a tuple of floats (or None).

    Parameters
    ----------
    spacing : (float, float) or None
        (row, col) pixel spacing in mm, any sequence of two numbers.

    Returns
    -------
    tuple of float or None
        ``(row, col)`` as floats; None when ``spacing`` is None.

    Raises
    ------
    CervkitInputError
        Not two finite positive numbers.
    """
    if spacing is None:
        return None
    values = tuple(float(v) for v in np.asarray(spacing, dtype=float).ravel())
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise CervkitInputError(f"spacing_mm must be two positive numbers (row, col), got {spacing!r}")
    return (values[0], values[1])


def check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``pred``, ``gt`` as arrays after checking both are 2D with the same shape.

    Parameters
    ----------
    pred, gt : array-like
        Predicted and ground-truth masks.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``pred`` and ``gt`` as arrays (not copied).

    Raises
    ------
    CervkitInputError
        Not 2D, or the shapes differ.
    """
    p, g = np.asarray(pred), np.asarray(gt)
    if p.ndim != 2 or g.ndim != 2:
        raise CervkitInputError(f"masks must be 2D, got shapes {p.shape} (pred) and {g.shape} (gt)")
    if p.shape != g.shape:
        raise CervkitInputError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    return p, g


def image_diagonal(shape: tuple[int, ...], spacing: Spacing = None) -> float:
    """The worst-case distance: ``sqrt((H*row)**2 + (W*col)**2)``, in pixels or mm.

    Parameters
    ----------
    shape : tuple of int
        The image's shape; its first two entries are (H, W).
    spacing : (float, float), optional
        (row, col) pixel spacing in mm; distances are in mm with it, in pixels without.

    Returns
    -------
    float
        The diagonal length.
    """
    sr, sc = check_spacing(spacing) or (1.0, 1.0)
    return float(math.hypot(shape[0] * sr, shape[1] * sc))


def empty_flag(pred: np.ndarray, gt: np.ndarray) -> str:
    """``"both"``, ``"pred"``, ``"gt"`` (which mask has no foreground) or ``""``.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    str
        ``"both"``, ``"pred"``, ``"gt"`` or ``""`` (neither is empty).
    """
    p_empty, g_empty = not np.any(pred), not np.any(gt)
    return "both" if p_empty and g_empty else "pred" if p_empty else "gt" if g_empty else ""


# ---------------------------------------------------------------- overlap metrics
def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """Pixel counts ``(TP, FP, FN)`` of two masks (non-zero = foreground).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    (int, int, int)
        True positives, false positives, false negatives.
    """
    p, g = check_pair(pred, gt)
    p, g = p.astype(bool, copy=False), g.astype(bool, copy=False)
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def _ratio(num: int, den: int, both_empty: bool) -> float:
    return 1.0 if both_empty else (num / den if den else 0.0)


def _overlap(tp: int, fp: int, fn: int) -> dict[str, float]:
    both = tp + fp + fn == 0
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, both), "iou": _ratio(tp, tp + fp + fn, both),
            "ppv": _ratio(tp, tp + fp, both), "sensitivity": _ratio(tp, tp + fn, both)}


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)`` (1 when both masks are empty).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    float
        Dice in [0, 1].
    """
    return _overlap(*confusion_counts(pred, gt))["dice"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union ``TP / (TP + FP + FN)`` (1 when both masks are empty).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    float
        IoU in [0, 1].
    """
    return _overlap(*confusion_counts(pred, gt))["iou"]


def ppv(pred: np.ndarray, gt: np.ndarray) -> float:
    """Positive predictive value (precision) ``TP / (TP + FP)``; 0 for an empty prediction, non-empty gt.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    float
        PPV in [0, 1].
    """
    return _overlap(*confusion_counts(pred, gt))["ppv"]


def sensitivity(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sensitivity (recall) ``TP / (TP + FN)``; 0 for a non-empty prediction of an empty gt.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).

    Returns
    -------
    float
        Sensitivity in [0, 1].
    """
    return _overlap(*confusion_counts(pred, gt))["sensitivity"]


# ---------------------------------------------------------------- surface distances
def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: foreground with a 4-connected background neighbour (outside the image is background).

    Parameters
    ----------
    mask : numpy.ndarray
        2D mask (non-zero = foreground).

    Returns
    -------
    numpy.ndarray
        Boolean array of the mask's shape, True on surface pixels.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    return m & ~ndi.binary_erosion(m, border_value=0)


def crop_pair(pred: np.ndarray, gt: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Crop two boolean masks to their union bounding box, padded by ``margin`` background pixels.

    Distances between surfaces are unchanged by the crop (every surface lies inside the box) and
    the distance transforms run on far fewer pixels. Both masks must be non-empty together (any).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Boolean 2D masks of one shape.
    margin : int
        Background pixels added on every side of the box.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The cropped, padded ``pred`` and ``gt``.
    """
    union = pred | gt
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.pad(pred[box], margin), np.pad(gt[box], margin)


def _directed(pred_c: np.ndarray, gt_c: np.ndarray, sampling: tuple[float, float] | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred→gt, gt→pred) of two non-empty masks padded with background."""
    sp, sg = surface(pred_c), surface(gt_c)
    to_gt = ndi.distance_transform_edt(~sg, sampling=sampling)
    to_pred = ndi.distance_transform_edt(~sp, sampling=sampling)
    return to_gt[sp], to_pred[sg]


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred→gt, gt→pred), in pixels or in mm with ``spacing``.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).
    spacing : (float, float), optional
        (row, col) pixel spacing in mm; distances are in mm with it, in pixels without.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Distance from each surface pixel of ``pred`` to ``gt``'s surface, and from each of ``gt`` to ``pred``'s.

    Raises
    ------
    CervkitInputError
        Shapes differ, or either mask is empty (distances undefined; see the module docstring).
    """
    p, g = check_pair(pred, gt)
    p, g = p.astype(bool, copy=False), g.astype(bool, copy=False)
    if not p.any() or not g.any():
        raise CervkitInputError(f"surface distances need two non-empty masks (empty: {empty_flag(p, g)})")
    return _directed(*crop_pair(p, g), check_spacing(spacing))


def _hd_pair(d_pg: np.ndarray, d_gp: np.ndarray, percentile: float) -> float:
    if percentile >= 100:
        return float(max(d_pg.max(), d_gp.max()))
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None, percentile: float = 100) -> float:
    """Hausdorff distance between the mask surfaces (``percentile`` < 100: the robust variant).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).
    spacing : (float, float), optional
        (row, col) pixel spacing in mm; distances are in mm with it, in pixels without.
    percentile : float
        In (0, 100]: the max of the two directed ``percentile``-th percentiles (100 = the classic HD).

    Returns
    -------
    float
        0 when both masks are empty, the image diagonal when exactly one is.
    """
    if not 0 < percentile <= 100:
        raise CervkitInputError(f"percentile must be in (0, 100], got {percentile}")
    p, g = check_pair(pred, gt)
    flag = empty_flag(p, g)
    if flag:
        return 0.0 if flag == "both" else image_diagonal(p.shape, spacing)
    return _hd_pair(*surface_distances(p, g, spacing), percentile)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None) -> float:
    """95th-percentile Hausdorff distance (see :func:`hausdorff` and the module docstring).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks of one shape (non-zero = foreground).
    spacing : (float, float), optional
        (row, col) pixel spacing in mm; distances are in mm with it, in pixels without.

    Returns
    -------
    float
        HD95 in pixels or mm; 0 when both masks are empty, the image diagonal when exactly one is.
    """
    return hausdorff(pred, gt, spacing, percentile=95)


# ---------------------------------------------------------------- one mask pair, all metrics
def pair_metrics(pred_c: np.ndarray, gt_c: np.ndarray, spacing: tuple[float, float] | None,
                 shape: tuple[int, ...]) -> dict[str, float | str]:
    """All metrics of two boolean masks already cropped (or not) with a background border.

    ``shape`` is the full image's (H, W), used only for the worst-case (diagonal) distance. This is
    the workhorse of :func:`segmentation_metrics` and :func:`cervkit.evaluation.matching.per_vertebra_metrics`.

    Parameters
    ----------
    pred_c, gt_c : numpy.ndarray
        Boolean masks of one shape, e.g. cropped by :func:`crop_pair`.
    spacing : (float, float) or None
        Checked (row, col) pixel spacing in mm (see :func:`check_spacing`), or None.
    shape : tuple of int
        The uncropped image's (H, W).

    Returns
    -------
    dict
        As :func:`segmentation_metrics`: overlap metrics, ``hd, hd95, hd_px, hd95_px`` (+ ``hd_mm,
        hd95_mm``), ``unit`` and ``empty``.
    """
    tp = int(np.count_nonzero(pred_c & gt_c))
    out: dict[str, float | str] = dict(
        _overlap(tp, int(np.count_nonzero(pred_c)) - tp, int(np.count_nonzero(gt_c)) - tp))
    flag = empty_flag(pred_c, gt_c)
    if flag:
        worst = 0.0 if flag == "both" else image_diagonal(shape)
        worst_mm = 0.0 if flag == "both" else image_diagonal(shape, spacing)
        hd_px = hd95_px = worst
        hd_mm = hd95_mm = worst_mm
    else:
        d_pg, d_gp = _directed(pred_c, gt_c, None)
        hd_px, hd95_px = _hd_pair(d_pg, d_gp, 100), _hd_pair(d_pg, d_gp, 95)
        if spacing is not None and spacing[0] == spacing[1]:
            hd_mm, hd95_mm = hd_px * spacing[0], hd95_px * spacing[0]
        elif spacing is not None:
            d_pg, d_gp = _directed(pred_c, gt_c, spacing)
            hd_mm, hd95_mm = _hd_pair(d_pg, d_gp, 100), _hd_pair(d_pg, d_gp, 95)
    if spacing is None:
        out.update(hd=hd_px, hd95=hd95_px, hd_px=hd_px, hd95_px=hd95_px, unit="px")
    else:
        out.update(hd=hd_mm, hd95=hd95_mm, hd_px=hd_px, hd95_px=hd95_px, hd_mm=hd_mm, hd95_mm=hd95_mm,
                   unit="mm")
    out["empty"] = flag
    return out


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: Spacing = None
                         ) -> dict[str, float | str]:
    """Dice, IoU, PPV, sensitivity, HD and HD95 of one image (label maps are binarised).

    Parameters
    ----------
    pred, gt : numpy.ndarray
        2D masks or label maps of one shape; any non-zero pixel is foreground.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing in mm.

    Returns
    -------
    dict
        ``dice, iou, ppv, sensitivity, hd, hd95, hd_px, hd95_px`` (+ ``hd_mm, hd95_mm`` with spacing),
        ``unit`` (``"mm"`` or ``"px"``, the unit of ``hd``/``hd95``) and ``empty`` (see module docstring).
    """
    p, g = check_pair(pred, gt)
    p, g = p != 0, g != 0
    if p.any() or g.any():
        pc, gc = crop_pair(p, g)
    else:
        pc, gc = p, g
    return pair_metrics(pc, gc, check_spacing(spacing_mm), p.shape)


def _finite_1d(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise CervkitInputError(f"{name}: no values to summarise")
    if not np.all(np.isfinite(x)):
        raise CervkitInputError(f"{name}: {int(np.sum(~np.isfinite(x)))} value(s) are NaN or infinite")
    return x


def _bootstrap_mean_ci(x: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``x`` with :func:`scipy.stats.bootstrap`, seeded."""
    from scipy.stats import bootstrap

    if not 0 < ci < 1 or n_boot < 1:
        raise CervkitInputError(f"need 0 < ci < 1 and n_boot >= 1, got ci={ci}, n_boot={n_boot}")
    if x.size == 1:  # one value: every resample is that value (scipy needs two)
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        if n_boot == 1:  # scipy's standard error (unused here) of one resample warns: ddof=1
            warnings.simplefilter("ignore", RuntimeWarning)
        res = bootstrap((x,), np.mean, n_resamples=int(n_boot), confidence_level=ci, method="percentile",
                        vectorized=True, batch=max(1, 2_000_000 // x.size), rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(values: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean, SD, median and a percentile-bootstrap CI of the mean (:func:`scipy.stats.bootstrap`).

    Parameters
    ----------
    values : array-like
        Finite numbers (e.g. one Dice per image); NaN or inf raises, nothing is dropped silently.
    n_boot, ci, seed : int, float, int
        Bootstrap resamples, confidence level and random seed (results are reproducible).

    Returns
    -------
    dict
        ``mean, sd`` (ddof=1; 0 for one value), ``median, ci_low, ci_high, n``.
    """
    x = _finite_1d(values, "summarize")
    lo, hi = _bootstrap_mean_ci(x, n_boot, ci, seed)
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "median": float(np.median(x)), "ci_low": lo, "ci_high": hi, "n": int(x.size)}


def paired_comparison(a: Any, b: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
                      ) -> dict[str, float | str]:
    """Compare two methods on the same images: mean of ``a - b``, its bootstrap CI, Wilcoxon p.

    The CI is :func:`scipy.stats.bootstrap`'s percentile interval of the mean difference (resampling
    image pairs), as in :func:`summarize`.

    Uses :func:`scipy.stats.wilcoxon` (two-sided, zero differences dropped: ``zero_method="wilcox"``).
    When every difference is zero the test is undefined: ``wilcoxon_p = 1.0`` and ``note`` says so.

    Parameters
    ----------
    a, b : array-like
        One finite score per image for each method, the same images in the same order.
    n_boot : int
        Bootstrap resamples of the mean difference.
    ci : float
        Confidence level of the interval, in (0, 1).
    seed : int
        Random seed of the bootstrap (results are reproducible).

    Returns
    -------
    dict
        ``mean_diff, ci_low, ci_high, wilcoxon_p, n, note``.
    """
    from scipy.stats import wilcoxon

    x, y = _finite_1d(a, "paired_comparison a"), _finite_1d(b, "paired_comparison b")
    if x.shape != y.shape:
        raise CervkitInputError(f"paired_comparison needs equal lengths, got {x.size} and {y.size}")
    diff = x - y
    lo, hi = _bootstrap_mean_ci(diff, n_boot, ci, seed)
    if not np.any(diff):
        p, note = 1.0, "all differences are zero: Wilcoxon test undefined, p set to 1.0"
    else:
        p, note = float(wilcoxon(x, y).pvalue), ""
    return {"mean_diff": float(diff.mean()), "ci_low": lo, "ci_high": hi, "wilcoxon_p": p,
            "n": int(diff.size), "note": note}
