"""Side lines and corners of one vertebral body from its outline (used by :mod:`cervkit.measure`).

The outline (:func:`skimage.measure.find_contours` at level 0.5 on the body's mask lightly
smoothed with a Gaussian of 0.7 px) is split into anterior, posterior, superior and inferior
sides, first by the nearest side of the body's bounding rectangle in its own frame, then twice
more by the nearest corner-to-corner segment of the previous fit. The 10 % of each side nearest
its corners is dropped; each side gets a robust total-least-squares line moved outward to the
90th percentile of its residuals (the rims of a concave endplate, as a reader draws it).
Corners are intersections of adjacent side lines. Coordinates are physical (x = column × col
spacing, y = row × row spacing), with pixel centres at integer indices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from cervkit.bodies import BodyStats

CORNERS: tuple[str, ...] = ("anterior_superior", "posterior_superior",
                            "anterior_inferior", "posterior_inferior")
_SIDES = ("anterior", "posterior", "superior", "inferior")
_ENDS = {"anterior": ("anterior_superior", "anterior_inferior"),
         "posterior": ("posterior_superior", "posterior_inferior"),
         "superior": ("anterior_superior", "posterior_superior"),
         "inferior": ("anterior_inferior", "posterior_inferior")}
_CORNER_SIDES = {"anterior_superior": ("anterior", "superior"),
                 "posterior_superior": ("posterior", "superior"),
                 "anterior_inferior": ("anterior", "inferior"),
                 "posterior_inferior": ("posterior", "inferior")}
_TRIM = 0.1
_SMOOTH = 0.7
_PAD = 3
_RIM_QUANTILE = 0.9


def outline(inst: np.ndarray, label: int, sp: tuple[float, float]) -> np.ndarray:
    """Sub-pixel outline of one label (its longest contour).

    Parameters
    ----------
    inst : numpy.ndarray
        (H, W) label map.
    label : int
        The body's value (must be present).
    sp : (float, float)
        (row, col) spacing; (1, 1) for pixels.

    Returns
    -------
    numpy.ndarray
        (N, 2) physical (x, y) points, pixel centres at integer indices × spacing.
    """
    rr, cc = np.nonzero(inst == label)
    r0, c0 = rr.min() - 1, cc.min() - 1
    crop = np.zeros((rr.max() - r0 + 2 + 2 * _PAD, cc.max() - c0 + 2 + 2 * _PAD), dtype=float)
    crop[rr - r0 + _PAD, cc - c0 + _PAD] = 1.0
    if _SMOOTH > 0:
        crop = ndimage.gaussian_filter(crop, _SMOOTH)
    r0, c0 = r0 - _PAD, c0 - _PAD
    line = max(find_contours(crop, 0.5), key=len)
    return np.column_stack([(line[:, 1] + c0) * sp[1], (line[:, 0] + r0) * sp[0]])


def _fit_line(pts: np.ndarray, inside: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Rim line of one side: (point, unit direction).

    Robust total least squares (points beyond 2.5 robust sigmas, and at least ``floor``, are
    trimmed), then moved outward to the 90th percentile of the residuals so that a concave
    endplate or wall is drawn along its rims, as a reader draws it.
    """
    keep = np.ones(len(pts), dtype=bool)
    for _ in range(4):
        centre = pts[keep].mean(axis=0)
        _, _, vt = np.linalg.svd(pts[keep] - centre, full_matrices=False)
        direction = vt[0]
        resid = (pts - centre) @ np.array([-direction[1], direction[0]])
        sigma = 1.4826 * float(np.median(np.abs(resid[keep])))
        new = np.abs(resid) <= max(2.5 * sigma, floor)
        if len(pts) < 10 or new.sum() < 0.7 * len(pts) or np.array_equal(new, keep):
            break
        keep = new
    normal = np.array([-direction[1], direction[0]])
    normal = normal if (centre - inside) @ normal >= 0 else -normal
    shift = float(np.quantile((pts[keep] - centre) @ normal, _RIM_QUANTILE))
    return centre + max(shift, 0.0) * normal, direction


def _intersect(l1: tuple[np.ndarray, np.ndarray], l2: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (p1, d1), (p2, d2) = l1, l2
    mat = np.column_stack([d1, -d2])
    if abs(np.linalg.det(mat)) < 1e-9:
        return np.full(2, np.nan)
    a, _ = np.linalg.solve(mat, p2 - p1)
    return p1 + a * d1


def _frame_sides(pts: np.ndarray, ant: np.ndarray, caudal: np.ndarray,
                 not_superior: np.ndarray) -> list[np.ndarray]:
    """First split: each point to the nearest side of the bounding rectangle in (ant, caudal)."""
    centre = pts.mean(axis=0)
    s = (pts - centre) @ ant
    t = (pts - centre) @ caudal
    body = ~not_superior  # the bounding rectangle leaves the dens out
    smin, smax, tmin, tmax = s[body].min(), s[body].max(), t[body].min(), t[body].max()
    side = np.argmin(np.column_stack([smax - s, s - smin, t - tmin, tmax - t]), axis=1)
    masks = []
    for k in range(4):  # trim each side's ends, relative to that side's own extent
        along = t if k < 2 else s
        sel = side == k
        if sel.any():
            lo, hi = along[sel].min(), along[sel].max()
            sel &= (along >= lo + _TRIM * (hi - lo)) & (along <= hi - _TRIM * (hi - lo))
        masks.append(sel)
    return masks


def _corner_sides(pts: np.ndarray, corners: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Refined split: points near each corner-to-corner segment, its end parts trimmed."""
    lam, dist = [], []
    for name in _SIDES:
        p0, p1 = corners[_ENDS[name][0]], corners[_ENDS[name][1]]
        u = p1 - p0
        length2 = max(float(u @ u), 1e-12)
        lam.append((pts - p0) @ u / length2)
        dist.append(np.abs((pts - p0) @ np.array([-u[1], u[0]])) / np.sqrt(length2))
    lam_a, dist_a = np.array(lam), np.array(dist)
    cost = np.where((lam_a >= 0) & (lam_a <= 1), dist_a, np.inf)
    nearest = np.argmin(cost, axis=0)
    sizes = [float(np.linalg.norm(corners[_ENDS[n][1]] - corners[_ENDS[n][0]])) for n in _SIDES]
    band = 0.25 * min(sizes)
    return [(nearest == k) & (lam_a[k] >= _TRIM) & (lam_a[k] <= 1 - _TRIM) & (dist_a[k] <= band)
            for k in range(4)]


def _oriented(d: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return d if d @ ref >= 0 else -d


def _fit_sides(pts: np.ndarray, masks: list[np.ndarray], peg: np.ndarray, group: np.ndarray,
               floor: float) -> dict[str, np.ndarray] | None:
    """Fit the four side lines and intersect them; None when a side has too few points.

    With a dens (``peg`` marks the outline points of the peg, ``group`` is -1/+1 for points on
    either side of it), the superior line goes through the shoulders beside the peg; when one
    shoulder has fewer than 3 points it is drawn parallel to the inferior line through the other.
    """
    centre = pts.mean(axis=0)
    if peg.any():
        masks = [*masks[:2], masks[2] & ~peg, masks[3]]
    lines = {name: (_fit_line(pts[sel], centre, floor) if sel.sum() >= 3 else None)
             for name, sel in zip(_SIDES, masks)}
    if peg.any() and lines["inferior"] is not None:
        sup = masks[2]
        if min((sup & (group < 0)).sum(), (sup & (group > 0)).sum()) < 3:
            direction = lines["inferior"][1]
            if sup.sum() >= 1:
                normal = np.array([-direction[1], direction[0]])
                normal = normal if (pts[sup].mean(axis=0) - centre) @ normal >= 0 else -normal
                offset = float(np.quantile((pts[sup] - pts[sup].mean(axis=0)) @ normal, _RIM_QUANTILE))
                lines["superior"] = (pts[sup].mean(axis=0) + max(offset, 0.0) * normal, direction)
    if any(line is None for line in lines.values()):
        return None
    return {corner: _intersect(lines[_CORNER_SIDES[corner][0]], lines[_CORNER_SIDES[corner][1]])
            for corner in CORNERS}


def fit_body(b: BodyStats, contour: np.ndarray, ant_sign: float, use_dens: bool,
             floor: float) -> dict[str, np.ndarray] | None:
    """Corners of one body from four fitted side lines.

    Parameters
    ----------
    b : BodyStats
        The body (its caudal axis starts the first split; its dens, if any, is cut off).
    contour : numpy.ndarray
        (N, 2) physical outline from :func:`outline`.
    ant_sign : float
        +1 when anterior is toward +x (image right), -1 toward -x.
    use_dens : bool
        Cut off a detected dens (for C2, or a body with no level name).
    floor : float
        Residual below which no outline point is trimmed (one pixel, physical units).

    Returns
    -------
    dict of str to numpy.ndarray or None
        Corner name → (x, y) physical point; None when a side cannot be fitted.
    """
    caudal = b.caudal
    pts = contour
    peg = np.zeros(len(pts), dtype=bool)
    group = np.zeros(len(pts), dtype=int)
    if use_dens and b.has_dens:
        centre0 = b.points.mean(axis=0)
        t0 = (contour - centre0) @ caudal
        pts = contour[t0 >= b.dens_cut - 0.25 * b.height]
        t0 = (pts - centre0) @ caudal
        s0 = (pts - centre0) @ np.array([-caudal[1], caudal[0]])
        lo, hi = b.dens_span[0] - 0.05 * b.width, b.dens_span[1] + 0.05 * b.width
        peg = (s0 >= lo) & (s0 <= hi) & (t0 < b.dens_cut + 0.25 * b.height)
        group = np.where(s0 < lo, -1, np.where(s0 > hi, 1, 0))
    ant = np.array([caudal[1], -caudal[0]])
    ant = ant if ant[0] * ant_sign >= 0 else -ant
    corners = _fit_sides(pts, _frame_sides(pts, ant, caudal, peg), peg, group, floor)
    for _ in range(2):
        if corners is None or not all(np.isfinite(c).all() for c in corners.values()):
            return None
        corners = _fit_sides(pts, _corner_sides(pts, corners), peg, group, floor) or corners
    return corners
