"""Per-body shape summary of a label map: order, local spine axis, size and C2's dens.

:func:`body_stats` orders the bodies top to bottom, estimates each body's caudal axis (the
chord between neighbouring centroids, refined by the minimum-area rectangle of the body's
lower half, which never holds the dens) and looks for a dens: rows, across that axis,
narrower than 85 % of the body width that rise at least 0.3 body heights above the body.
:mod:`cervkit.measurements.levels` and :mod:`cervkit.measurements.spine` build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from cervkit.core.errors import CervkitInputError

_DENS_WIDTH = 0.85     # a body row at least this fraction of the body width ends the dens
_DENS_MIN_HEIGHT = 0.3  # dens height / body height needed to call a peg a dens
_DENS_PEG = 0.8        # median peg width / body width at most
_MAX_TURN = 30.0       # degrees the body's own axis may differ from the centroid chain's


@dataclass
class BodyStats:
    """Shape summary of one labelled body, in physical units (mm, or px when spacing is unknown).

    Attributes
    ----------
    label : int
        The body's value in the label map.
    centroid : numpy.ndarray
        (x, y) centroid of all the label's pixels, in pixel coordinates (x = column index).
    points : numpy.ndarray
        (N, 2) physical (x, y) coordinates of the label's pixel centres.
    caudal : numpy.ndarray
        Unit (x, y) vector along the local spine axis, pointing down the spine.
    area : float
        Area (mm² or px²).
    height, width : float
        Extent of the body along and across ``caudal`` (the dens excluded).
    full_height : float
        Extent along ``caudal`` including a dens.
    has_dens : bool
        True when a narrow peg rises above the body (C2's dens).
    dens_cut : float
        With a dens, the ``caudal`` coordinate (relative to the mean of ``points``) where the
        body proper starts; -inf without one.
    dens_span : tuple of float
        With a dens, the range of the across-axis coordinate occupied by the peg.
    """

    label: int
    centroid: np.ndarray
    points: np.ndarray
    caudal: np.ndarray
    area: float
    height: float
    width: float
    full_height: float
    has_dens: bool = False
    dens_cut: float = float("-inf")
    dens_span: tuple[float, float] = (0.0, 0.0)


def instance_labels(labels: np.ndarray) -> np.ndarray:
    """Check a label map and return it as uint8 instances (a binary mask split into components).

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map: 0 background, 1..K one body each; bool or K = 1 means a binary mask,
        whose connected components (8-connectivity) become bodies numbered top to bottom.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) label map.

    Raises
    ------
    CervkitInputError
        Not 2D, non-integer or negative values, or values above 255.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise CervkitInputError(f"label map must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CervkitInputError(f"label map must hold integers, got dtype {arr.dtype}")
    if arr.size and (np.any(arr < 0) or np.any(arr > 255) or np.any(arr != np.round(arr))):
        raise CervkitInputError("label map values must be whole numbers in 0..255")
    arr = arr.astype(np.uint8)
    if arr.size and int(arr.max()) == 1:
        comp, n = ndimage.label(arr, structure=np.ones((3, 3), dtype=int))
        if n > 1:
            rows = ndimage.center_of_mass(comp > 0, comp, range(1, n + 1))
            order = np.argsort([r for r, _ in rows], kind="stable")
            lut = np.zeros(n + 1, dtype=np.uint8)
            lut[order + 1] = np.arange(1, n + 1, dtype=np.uint8)
            arr = lut[comp]
    return arr


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.hypot(v[0], v[1]))
    return v / norm if norm > 0 else np.array([0.0, 1.0])


def _rect_axis(points: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """Axis of the minimum-area rectangle around ``points`` nearest to ``hint`` (unit, same sense)."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return hint
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    best, best_area = hint, np.inf
    for ang in np.unique(np.round(np.arctan2(edges[:, 1], edges[:, 0]) % (np.pi / 2), 6)):
        u, v = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
        area = np.ptp(hull @ u) * np.ptp(hull @ v)
        if area < best_area:
            best_area = area
            best = u if abs(u @ hint) >= abs(v @ hint) else v
    best = best if best @ hint >= 0 else -best
    return best if best @ hint >= np.cos(np.radians(_MAX_TURN)) else hint


def _dens_profile(points: np.ndarray, caudal: np.ndarray,
                  step: float) -> tuple[bool, float, tuple[float, float], float, float, float]:
    """Find a dens: narrow rows on top of the body, before the body's full width starts.

    Returns (has_dens, cut, span, body_height, width, full_height); ``cut`` is the caudal
    coordinate where the body starts, relative to the mean of ``points``.
    """
    centre = points.mean(axis=0)
    across = np.array([-caudal[1], caudal[0]])
    t = (points - centre) @ caudal
    s = (points - centre) @ across
    bins = np.floor((t - t.min()) / step).astype(int)
    nb = int(bins.max()) + 1
    lo = np.full(nb, np.inf)
    hi = np.full(nb, -np.inf)
    np.minimum.at(lo, bins, s)
    np.maximum.at(hi, bins, s)
    filled = np.isfinite(lo)
    widths = np.where(filled, hi - lo + step, 0.0)
    full_height = float(t.max() - t.min() + step)
    lower = widths[int(0.4 * nb):][filled[int(0.4 * nb):]]
    width = float(np.median(lower)) if lower.size else float(widths.max())
    first = int(np.argmax(widths >= _DENS_WIDTH * width))
    peg_h = first * step
    body_h = full_height - peg_h
    peg = bins < first
    has = bool(first > 0 and peg_h >= _DENS_MIN_HEIGHT * body_h
               and np.median(widths[:first]) <= _DENS_PEG * width)
    if not has:
        return False, float("-inf"), (0.0, 0.0), full_height, width, full_height
    cut = float(t.min() + peg_h)
    # the peg's span over its lower half, above the rows just over the cut where a shoulder
    # usually reaches (the higher shoulder of a strongly wedged C2 can still reach in)
    centres_t = t.min() + (np.arange(nb) + 0.5) * step
    rows = filled & (centres_t >= cut - 0.5 * peg_h) & (centres_t < cut - 0.1 * body_h)
    if not rows.any():
        return True, cut, (float(s[peg].min()), float(s[peg].max())), body_h, width, full_height
    return True, cut, (float(lo[rows].min()), float(hi[rows].max())), body_h, width, full_height


def body_stats(labels: np.ndarray, spacing_mm: Sequence[float] | None = None) -> list[BodyStats]:
    """Summarise each body of a label map, ordered top to bottom by centroid row.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map (see :func:`instance_labels`).
    spacing_mm : (float, float), optional
        (row, col) pixel spacing; lengths and areas are in mm when given, else in px.

    Returns
    -------
    list of BodyStats
        One per label present, top to bottom.
    """
    inst = instance_labels(labels)
    row_sp, col_sp = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
    present = [int(v) for v in np.unique(inst) if v != 0]
    raw = []
    for lab in present:
        rr, cc = np.nonzero(inst == lab)
        raw.append((lab, np.array([cc.mean(), rr.mean()]), np.column_stack([cc * col_sp, rr * row_sp])))
    raw.sort(key=lambda item: item[1][1])
    cents = [pts.mean(axis=0) for _, _, pts in raw]
    step = min(row_sp, col_sp)
    out = []
    for i, (lab, cen, pts) in enumerate(raw):
        if len(raw) == 1:
            caudal = np.array([0.0, 1.0])
        else:
            caudal = _unit(cents[min(i + 1, len(raw) - 1)] - cents[max(i - 1, 0)])
        if caudal[1] < 0:
            caudal = -caudal
        # refine with the body's lower half (never the dens): its minimum-area rectangle's axis
        t = (pts - pts.mean(axis=0)) @ caudal
        caudal = _rect_axis(pts[t >= np.median(t)], caudal)
        has, cut, span, h, w, fh = _dens_profile(pts, caudal, step)
        out.append(BodyStats(label=lab, centroid=cen, points=pts, caudal=caudal,
                             area=float(len(pts) * row_sp * col_sp), height=h, width=w,
                             full_height=fh, has_dens=has, dens_cut=cut, dens_span=span))
    return out


def body_centre(b: BodyStats) -> np.ndarray:
    """Centre of the body proper, the dens left out.

    Parameters
    ----------
    b : BodyStats
        One body.

    Returns
    -------
    numpy.ndarray
        (x, y) in physical units.
    """
    if not b.has_dens:
        return b.points.mean(axis=0)
    t = (b.points - b.points.mean(axis=0)) @ b.caudal
    return b.points[t >= b.dens_cut].mean(axis=0)


def dens_offset(b: BodyStats) -> float | None:
    """Where the dens leans: its centroid's offset from the body proper's, across the spine axis.

    The dens of C2 sits over the posterior half of the body and leans back (phantoms: 5–16 % of
    the body width toward posterior on 150 of 150), so the sign tells the anterior side when the
    column is too straight to tell it from the curve, or kyphotic.

    Parameters
    ----------
    b : BodyStats
        One body (C2).

    Returns
    -------
    float or None
        Offset along +x (image right) as a fraction of the body width (positive: the dens lies to
        the right, so anterior is to the left); None without a dens.
    """
    if not b.has_dens or b.width <= 0:
        return None
    t = (b.points - b.points.mean(axis=0)) @ b.caudal
    peg, body = b.points[t < b.dens_cut], b.points[t >= b.dens_cut]
    if not len(peg) or not len(body):
        return None
    across = np.array([b.caudal[1], -b.caudal[0]])
    across = across if across[0] >= 0 else -across
    return float((peg.mean(axis=0) - body.mean(axis=0)) @ across) / b.width
