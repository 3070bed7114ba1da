"""Per-vertebra evaluation: match predicted to ground-truth instances by IoU, then score each pair.

Matching is by overlap, never by label number: the IoU of every (gt, pred) instance pair comes from
one contingency table (``numpy.bincount``), the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`, maximising total IoU) pairs them one to one, and a
pair counts as a detection when its IoU is at least ``iou_threshold`` (0.5 by default; above 0.5 a
match is unique anyway). Unmatched gt instances are false negatives (*missed*), unmatched predictions
false positives (*extra*). Metric definitions and the empty-mask rules are those of
:mod:`cervkit.evaluation.metrics`: a missed vertebra gets the worst case with ``empty="pred"``, a false positive
``empty="gt"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from cervkit.core.errors import CervkitInputError
from cervkit.evaluation.metrics import (
    Spacing,
    check_pair,
    check_spacing,
    image_diagonal,
    pair_metrics,
    segmentation_metrics,
)

LevelNames = Mapping[int, str] | Sequence[str] | None


@dataclass(frozen=True)
class Match:
    """One matched pair: ground-truth label, predicted label and their IoU."""

    gt_label: int
    pred_label: int
    iou: float


@dataclass
class MatchResult:
    """The outcome of :func:`match_instances`.

    Attributes
    ----------
    matches : list of Match
        Pairs with IoU >= ``iou_threshold``, sorted by gt label.
    missed : list of int
        Ground-truth labels without a match (false negatives).
    extra : list of int
        Predicted labels without a match (false positives).
    gt_labels, pred_labels : numpy.ndarray
        The instance labels present in each map (sorted): rows and columns of ``iou_matrix``.
    iou_matrix : numpy.ndarray
        float64 (n_gt, n_pred) IoU of every pair.
    iou_threshold : float
        The threshold used.
    """

    matches: list[Match]
    missed: list[int]
    extra: list[int]
    gt_labels: np.ndarray
    pred_labels: np.ndarray
    iou_matrix: np.ndarray
    iou_threshold: float

    @property
    def n_gt(self) -> int:
        """Number of ground-truth instances."""
        return int(self.gt_labels.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted instances."""
        return int(self.pred_labels.size)

    def counts(self) -> dict[str, float]:
        """Detection counts: ``n_gt, n_pred, tp, fn, fp, detection_rate, detection_precision``.

        ``detection_rate = tp / n_gt`` (fraction of gt vertebrae found), ``detection_precision =
        tp / n_pred``; with a zero denominator: 1 when both maps are empty, else 0 (worst case).

        Returns
        -------
        dict
            The counts (int) and the two rates (float).
        """
        tp, both_empty = len(self.matches), self.n_gt == 0 and self.n_pred == 0
        rate = 1.0 if both_empty else (tp / self.n_gt if self.n_gt else 0.0)
        prec = 1.0 if both_empty else (tp / self.n_pred if self.n_pred else 0.0)
        return {"n_gt": self.n_gt, "n_pred": self.n_pred, "tp": tp, "fn": len(self.missed),
                "fp": len(self.extra), "detection_rate": rate, "detection_precision": prec}


def check_label_map(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as an array after checking it is an integer (or bool) map without negatives.

    Parameters
    ----------
    labels : numpy.ndarray
        The label map (a bool mask becomes uint8 0/1).
    name : str
        Which map it is, for the error message (``"predicted"``, ``"ground-truth"``).

    Returns
    -------
    numpy.ndarray
        The map, not copied (except a bool map).

    Raises
    ------
    CervkitInputError
        Floating-point or other non-integer dtype, or negative labels.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise CervkitInputError(f"{name} label map must have an integer dtype, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise CervkitInputError(f"{name} label map has negative labels (min {arr.min()})")
    return arr


def _pair(pred_labels: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = check_pair(pred_labels, gt_labels)
    return check_label_map(p, "predicted"), check_label_map(g, "ground-truth")


def iou_matrix(pred_labels: np.ndarray, gt_labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (gt instance, predicted instance) pair from one contingency table.

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Integer label maps (H, W) of one shape, 0 background.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``gt_ids`` (n_gt,), ``pred_ids`` (n_pred,) and the float64 IoU matrix (n_gt, n_pred).
    """
    p, g = _pair(pred_labels, gt_labels)
    p, g = p.ravel(), g.ravel()
    fg = (p > 0) | (g > 0)
    pv, gv = p[fg], g[fg]
    gt_ids, pred_ids = np.unique(gv[gv > 0]), np.unique(pv[pv > 0])
    gi = np.where(gv > 0, np.searchsorted(gt_ids, gv) + 1, 0)
    pi = np.where(pv > 0, np.searchsorted(pred_ids, pv) + 1, 0)
    n_g, n_p = gt_ids.size + 1, pred_ids.size + 1
    table = np.bincount(gi * n_p + pi, minlength=n_g * n_p).reshape(n_g, n_p)
    inter = table[1:, 1:].astype(np.float64)
    area_g, area_p = table[1:, :].sum(axis=1), table[:, 1:].sum(axis=0)
    union = area_g[:, None] + area_p[None, :] - inter
    return gt_ids, pred_ids, np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_instances(pred_labels: np.ndarray, gt_labels: np.ndarray, iou_threshold: float = 0.5
                    ) -> MatchResult:
    """Match predicted to ground-truth vertebrae one to one by IoU (Hungarian algorithm).

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Integer label maps (H, W), 0 background; label numbers need not agree between them.
    iou_threshold : float
        In (0, 1]: the least IoU for a pair to count as a detection.

    Returns
    -------
    MatchResult
        Matched pairs, missed gt labels (FN), extra predicted labels (FP) and the IoU matrix.
    """
    if not 0 < iou_threshold <= 1:
        raise CervkitInputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    gt_ids, pred_ids, ious = iou_matrix(pred_labels, gt_labels)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    keep = ious[rows, cols] >= iou_threshold
    matches = [Match(int(gt_ids[r]), int(pred_ids[c]), float(ious[r, c]))
               for r, c in zip(rows[keep], cols[keep])]
    found_g = {m.gt_label for m in matches}
    found_p = {m.pred_label for m in matches}
    return MatchResult(
        matches=sorted(matches, key=lambda m: m.gt_label),
        missed=[int(x) for x in gt_ids if int(x) not in found_g],
        extra=[int(x) for x in pred_ids if int(x) not in found_p],
        gt_labels=gt_ids, pred_labels=pred_ids, iou_matrix=ious, iou_threshold=float(iou_threshold))


def detection_summary(pred_labels: np.ndarray, gt_labels: np.ndarray, iou_threshold: float = 0.5
                      ) -> dict[str, float]:
    """Detection counts and rate of one image (see :meth:`MatchResult.counts`).

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Integer label maps (H, W) of one shape, 0 background.
    iou_threshold : float
        In (0, 1]: the least IoU for a pair to count as a detection.

    Returns
    -------
    dict
        ``n_gt, n_pred, tp, fn, fp, detection_rate, detection_precision``.
    """
    return match_instances(pred_labels, gt_labels, iou_threshold).counts()


def _level_lookup(level_names: LevelNames) -> Mapping[int, str]:
    if level_names is None:
        return {}
    if isinstance(level_names, Mapping):
        return {int(k): str(v) for k, v in level_names.items()}
    if isinstance(level_names, str):
        raise CervkitInputError("level_names must be a mapping {label: name} or a sequence of names, not str")
    return {i + 1: str(name) for i, name in enumerate(level_names)}


def _union_box(a: tuple[slice, slice] | None, b: tuple[slice, slice] | None) -> tuple[slice, slice]:
    boxes = [s for s in (a, b) if s is not None]
    rows = slice(min(s[0].start for s in boxes), max(s[0].stop for s in boxes))
    cols = slice(min(s[1].start for s in boxes), max(s[1].stop for s in boxes))
    return rows, cols


def per_vertebra_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, spacing_mm: Spacing = None,
                         level_names: LevelNames = None, *, iou_threshold: float = 0.5,
                         match: MatchResult | None = None) -> pd.DataFrame:
    """One row of metrics per ground-truth vertebra, plus one per false-positive prediction.

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Integer label maps (H, W) of one shape.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing in mm (adds ``hd_mm``, ``hd95_mm``; ``hd``/``hd95`` are then mm).
    level_names : mapping or sequence of str, optional
        Names of the gt labels: ``{label: name}``, or names for labels 1, 2, … in order
        (e.g. ``["C2", …, "C7"]``). Shown in the ``level`` column (None where unknown).
    iou_threshold : float
        Matching threshold (see :func:`match_instances`).
    match : MatchResult, optional
        A matching already computed for these maps (skips recomputing it).

    Returns
    -------
    pandas.DataFrame
        Columns ``level, gt_label, pred_label, matched, false_positive, match_iou`` and the
        :func:`cervkit.evaluation.metrics.pair_metrics` keys (``dice, iou, ppv, sensitivity, hd, hd95, hd_px,
        hd95_px[, hd_mm, hd95_mm], unit, empty``), ``gt_area_px, pred_area_px``. Missed vertebrae have
        ``matched=False``, ``pred_label`` NaN and worst-case metrics (``empty="pred"``); false positives
        have ``gt_label`` NaN, ``false_positive=True`` (``empty="gt"``). ``match_iou`` is the matched
        pair's IoU; for a missed or extra instance, the best IoU it had with any instance of the other
        map (below the threshold, or lost in the one-to-one assignment). Rows: gt by label, then FPs.
    """
    p, g = _pair(pred_labels, gt_labels)
    spacing = check_spacing(spacing_mm)
    if match is None:
        match = match_instances(p, g, iou_threshold)
    names = _level_lookup(level_names)
    g_boxes, p_boxes = ndi.find_objects(g), ndi.find_objects(p)
    by_gt = {m.gt_label: m for m in match.matches}
    rows: list[dict[str, object]] = []

    def score(gl: int | None, pl: int | None) -> dict[str, object]:
        gb = g_boxes[gl - 1] if gl is not None else None
        pb = p_boxes[pl - 1] if pl is not None else None
        box = _union_box(gb, pb)
        gc = np.pad(g[box] == gl, 1) if gl is not None else None
        pc = np.pad(p[box] == pl, 1) if pl is not None else None
        gc = gc if gc is not None else np.zeros_like(pc)
        pc = pc if pc is not None else np.zeros_like(gc)
        row: dict[str, object] = dict(pair_metrics(pc, gc, spacing, g.shape))
        row["gt_area_px"], row["pred_area_px"] = int(gc.sum()), int(pc.sum())
        return row

    for gl in (int(x) for x in match.gt_labels):
        m = by_gt.get(gl)
        head = {"level": names.get(gl), "gt_label": float(gl),
                "pred_label": float(m.pred_label) if m else np.nan, "matched": m is not None,
                "false_positive": False, "match_iou": m.iou if m else _best_iou(match, gl)}
        rows.append(head | score(gl, m.pred_label if m else None))
    for pl in match.extra:
        col = int(np.searchsorted(match.pred_labels, pl))
        best = float(match.iou_matrix[:, col].max()) if match.n_gt else 0.0
        head = {"level": None, "gt_label": np.nan, "pred_label": float(pl), "matched": False,
                "false_positive": True, "match_iou": best}
        rows.append(head | score(None, pl))
    columns = ["level", "gt_label", "pred_label", "matched", "false_positive", "match_iou", "dice", "iou",
               "ppv", "sensitivity", "hd", "hd95", "hd_px", "hd95_px",
               *(["hd_mm", "hd95_mm"] if spacing is not None else []), "unit", "empty",
               "gt_area_px", "pred_area_px"]
    return pd.DataFrame(rows, columns=columns)


def _best_iou(match: MatchResult, gt_label: int) -> float:
    """The best IoU a missed gt instance had with any prediction (0 without predictions)."""
    row = int(np.searchsorted(match.gt_labels, gt_label))
    return float(match.iou_matrix[row].max()) if match.n_pred else 0.0


def drop_unannotated(pred_labels: np.ndarray, gt_labels: np.ndarray, *, max_overlap: float = 0.1) -> np.ndarray:
    """Remove predicted bodies that lie outside the annotated levels: the protocol left them unannotated.

    A source that annotates L1–L5 shows T12 and S1 without labels; a model that finds them is right, and
    they are no false positives. A predicted body is dropped when at most ``max_overlap`` of its pixels
    are annotated (a neighbour's endplate may touch it: the sacrum tilts under L5) *and* its centroid row
    lies beyond the centroid of the first or the last annotated body. A stray body between annotated
    levels is kept (a real false positive).

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Label maps of one image, the same shape.
    max_overlap : float, optional
        Largest fraction of a dropped body's pixels that may be annotated.

    Returns
    -------
    numpy.ndarray
        ``pred_labels`` without those bodies (a copy; labels not renumbered).
    """
    check_pair(pred_labels, gt_labels)
    gt = np.asarray(gt_labels)
    out = np.array(pred_labels, copy=True)
    levels = [k for k in np.unique(gt) if k != 0]
    if not levels:
        return out
    centres = [float(np.flatnonzero((gt == k).any(axis=1)).mean()) for k in levels]
    top, bottom = min(centres), max(centres)
    annotated = gt > 0
    for k in np.unique(out):
        if k == 0:
            continue
        body = out == k
        centre = float(np.flatnonzero(body.any(axis=1)).mean())
        overlap = float((body & annotated).sum()) / float(body.sum())
        if overlap <= max_overlap and (centre < top or centre > bottom):
            out[body] = 0
    return out


def image_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, spacing_mm: Spacing = None, *,
                  iou_threshold: float = 0.5) -> dict[str, float | str]:
    """Per-image metrics, detection counts and mean per-vertebra scores of two label maps.

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Integer label maps (H, W) of one shape, 0 background.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing; distances in mm when given, else in pixels.
    iou_threshold : float
        In (0, 1]: the least IoU for a predicted vertebra to match a ground-truth one.

    Returns
    -------
    dict
        :func:`cervkit.evaluation.metrics.segmentation_metrics` keys, the :func:`detection_summary` counts
        (``n_gt, n_pred, tp, fn, fp, detection_rate, detection_precision``), ``mean_vertebra_dice`` and
        ``mean_vertebra_hd95`` over the ground-truth vertebrae (a missed one counts with its worst case:
        Dice 0, HD95 = image diagonal; no gt vertebra: 1/0 without predictions, 0/diagonal with some).
    """
    return image_and_vertebra_metrics(pred_labels, gt_labels, spacing_mm, iou_threshold=iou_threshold)[0]


def image_and_vertebra_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, spacing_mm: Spacing = None,
                               *, iou_threshold: float = 0.5, level_names: Any = None
                               ) -> tuple[dict[str, float | str], pd.DataFrame]:
    """Image-level metrics (:func:`cervkit.evaluation.metrics.segmentation_metrics`) and :func:`per_vertebra_metrics` in one pass.

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        Label maps of one image (0 background, 1..K bodies).
    spacing_mm : (float, float), optional
        Pixel spacing; distances in mm when given, else in pixels.
    iou_threshold : float
        A predicted body matches a true one at IoU ≥ this.
    level_names : sequence of str, optional
        Names of the true bodies, for the per-vertebra table.

    Returns
    -------
    dict
        Image metrics plus detection counts, ``mean_vertebra_dice`` and ``mean_vertebra_hd95``.
    pandas.DataFrame
        One row per true body (and per unmatched prediction).
    """
    match = match_instances(pred_labels, gt_labels, iou_threshold)
    table = per_vertebra_metrics(pred_labels, gt_labels, spacing_mm, level_names, match=match)
    out = segmentation_metrics(pred_labels, gt_labels, spacing_mm)
    out.update(match.counts())
    gt_rows = table[~table["false_positive"]]
    if len(gt_rows):
        out["mean_vertebra_dice"] = float(gt_rows["dice"].mean())
        out["mean_vertebra_hd95"] = float(gt_rows["hd95"].mean())
    else:
        none_pred = match.n_pred == 0
        out["mean_vertebra_dice"] = 1.0 if none_pred else 0.0
        out["mean_vertebra_hd95"] = 0.0 if none_pred else image_diagonal(np.shape(gt_labels), spacing_mm)
    return out, table


# ---------------------------------------------------------------- summaries over images
