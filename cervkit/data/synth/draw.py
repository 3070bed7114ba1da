"""Drawing primitives for the synthetic phantoms: polygons, bands, rims and smooth noise.

All points are ``(x, y)`` in pixel-edge coordinates: pixel ``(r, c)`` covers
``x`` in ``[c, c + 1)`` and ``y`` in ``[r, r + 1)``, so its centre is
``(c + 0.5, r + 0.5)``. A pixel belongs to a polygon when its centre is inside.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def unit(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Endplate direction ``e`` and "up" normal ``n`` for an endplate angle.

    Parameters
    ----------
    angle_deg : float
        Endplate angle in image coordinates (y down); 0 is horizontal, positive
        when the posterior end (to the right, before mirroring) is lower.

    Returns
    -------
    e, n : numpy.ndarray
        Unit vectors (x, y): ``e`` points anterior → posterior, ``n`` points up
        (toward smaller y) perpendicular to ``e``.
    """
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a)]), np.array([np.sin(a), -np.cos(a)])


def fillet(points: np.ndarray, corner_idx: list[int], radius: float, n: int = 4) -> np.ndarray:
    """Round the given corners of a closed polygon with quadratic Bézier arcs.

    Parameters
    ----------
    points : numpy.ndarray
        (N, 2) closed polygon (last point not repeated).
    corner_idx : list of int
        Indices of the corners to round.
    radius : float
        Distance from each corner along both edges where the arc starts (pixels);
        shortened to 40 % of the shorter edge when needed.
    n : int
        Number of interior points per arc.

    Returns
    -------
    numpy.ndarray
        The new (M, 2) polygon. A rounded corner lies within ``0.36 * radius`` of the arc.
    """
    out: list[np.ndarray] = []
    corners = set(corner_idx)
    count = len(points)
    t = np.linspace(0.0, 1.0, n + 2)[:, None]
    for i in range(count):
        p = points[i]
        if i not in corners or radius <= 0:
            out.append(p[None])
            continue
        prev, nxt = points[i - 1], points[(i + 1) % count]
        d1, d2 = prev - p, nxt - p
        l1, l2 = float(np.hypot(*d1)), float(np.hypot(*d2))
        r = min(radius, 0.4 * l1, 0.4 * l2)
        a, b = p + d1 / l1 * r, p + d2 / l2 * r
        out.append((1 - t) ** 2 * a + 2 * (1 - t) * t * p + t ** 2 * b)
    return np.concatenate(out, axis=0)


def offset_polyline(points: np.ndarray, offsets: np.ndarray | float) -> np.ndarray:
    """Offset an open polyline sideways by per-vertex distances.

    Parameters
    ----------
    points : numpy.ndarray
        (N, 2) polyline.
    offsets : numpy.ndarray or float
        Distance(s) along the normal ``(-t_y, t_x)`` of the direction of travel ``t``
        (for a polyline running downward, positive is toward -x: anterior before mirroring).

    Returns
    -------
    numpy.ndarray
        (N, 2) offset polyline.
    """
    pts = np.asarray(points, dtype=np.float64)
    tang = np.gradient(pts, axis=0)
    tang /= np.maximum(np.hypot(tang[:, 0], tang[:, 1]), 1e-9)[:, None]
    normal = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
    return pts + normal * np.asarray(offsets, dtype=np.float64).reshape(-1, 1)


def band(points: np.ndarray, off_a: np.ndarray | float, off_b: np.ndarray | float) -> np.ndarray:
    """Polygon between two offsets of a polyline (see :func:`offset_polyline`).

    Parameters
    ----------
    points : numpy.ndarray
        (N, 2) centre polyline.
    off_a, off_b : numpy.ndarray or float
        The two per-vertex offsets bounding the band.

    Returns
    -------
    numpy.ndarray
        (2N, 2) closed polygon.
    """
    return np.concatenate([offset_polyline(points, off_a), offset_polyline(points, off_b)[::-1]])


def ellipse(center: np.ndarray, ax: float, ay: float, angle_deg: float = 0.0, n: int = 40) -> np.ndarray:
    """Polygon approximating a rotated ellipse.

    Parameters
    ----------
    center : numpy.ndarray
        (x, y) centre.
    ax, ay : float
        Semi-axes along the (rotated) x and y directions.
    angle_deg : float
        Rotation in image coordinates.
    n : int
        Number of vertices.

    Returns
    -------
    numpy.ndarray
        (n, 2) polygon.
    """
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle_deg)
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([center[0] + x * np.cos(a) - y * np.sin(a), center[1] + x * np.sin(a) + y * np.cos(a)], 1)


def _raster(poly: np.ndarray, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Even-odd scanline fill of a polygon over its row range: (first row, bool (rows, W) mask)."""
    h, w = shape
    p0 = np.asarray(poly, dtype=np.float64)
    p1 = np.roll(p0, -1, axis=0)
    r0 = int(np.clip(np.floor(p0[:, 1].min() - 0.5), 0, h))
    r1 = int(np.clip(np.ceil(p0[:, 1].max() - 0.5) + 1, 0, h))
    if r1 <= r0:
        return r0, np.zeros((0, w), dtype=bool)
    yc = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
    y0, y1 = p0[None, :, 1], p1[None, :, 1]
    cross = (y0 <= yc) != (y1 <= yc)
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    xc = p0[None, :, 0] + (yc - y0) * (p1[None, :, 0] - p0[None, :, 0]) / dy
    start = np.clip(np.ceil(xc - 0.5), 0, w).astype(np.int64)
    rows, edges = np.nonzero(cross)
    diff = np.zeros((r1 - r0, w + 1), dtype=np.int32)
    np.add.at(diff, (rows, start[rows, edges]), 1)
    return r0, (np.cumsum(diff[:, :w], axis=1) & 1).astype(bool)


def poly_index(poly: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels whose centres lie inside a polygon.

    Parameters
    ----------
    poly : numpy.ndarray
        (N, 2) polygon in pixel-edge (x, y) coordinates (even-odd rule).
    shape : tuple of int
        (H, W) of the image; pixels outside are dropped.

    Returns
    -------
    rr, cc : numpy.ndarray
        Index arrays.
    """
    r0, band_mask = _raster(poly, shape)
    rr, cc = np.nonzero(band_mask)
    return rr + r0, cc


def poly_mask(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of a polygon (pixel centres inside).

    Parameters
    ----------
    poly : numpy.ndarray
        (N, 2) polygon.
    shape : tuple of int
        (H, W).

    Returns
    -------
    numpy.ndarray
        bool mask.
    """
    mask = np.zeros(shape, dtype=bool)
    r0, band_mask = _raster(poly, shape)
    mask[r0:r0 + band_mask.shape[0]] = band_mask
    return mask


def rim_weights(poly: np.ndarray, shape: tuple[int, int], thickness: float
                ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Inside mask of a polygon and a cortical-rim weight decaying inward.

    Parameters
    ----------
    poly : numpy.ndarray
        (N, 2) polygon.
    shape : tuple of int
        (H, W).
    thickness : float
        e-folding depth of the rim in pixels.

    Returns
    -------
    window : tuple of slice
        The bounding-box window of the polygon within the image.
    inside : numpy.ndarray
        bool mask of the window.
    rim : numpy.ndarray
        float32 weights in [0, 1] (1 at the edge, ``exp(-depth / thickness)`` inside, 0 outside).
    """
    h, w = shape
    c0 = int(np.clip(np.floor(poly[:, 0].min()) - 1, 0, w))
    c1 = int(np.clip(np.ceil(poly[:, 0].max()) + 2, 0, w))
    r0 = int(np.clip(np.floor(poly[:, 1].min()) - 1, 0, h))
    r1 = int(np.clip(np.ceil(poly[:, 1].max()) + 2, 0, h))
    window = (slice(r0, r1), slice(c0, c1))
    local = poly - np.array([c0, r0])
    inside = poly_mask(local, (r1 - r0, c1 - c0))
    if not inside.any():
        return window, inside, np.zeros(inside.shape, np.float32)
    depth = ndimage.distance_transform_edt(np.pad(inside, 1, mode="edge"))[1:-1, 1:-1]
    rim = np.where(inside, np.exp(-(depth - 1.0) / max(thickness, 1e-3)), 0.0)
    return window, inside, rim.astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-variance random field smooth on a length scale (fast: low-res then zoom).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    shape : tuple of int
        (H, W) of the result.
    scale_px : float
        Correlation length in pixels (>= 1).

    Returns
    -------
    numpy.ndarray
        float32 (H, W) field.
    """
    factor = max(1, int(scale_px // 2))
    small = (max(2, -(-shape[0] // factor) + 1), max(2, -(-shape[1] // factor) + 1))
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma=max(scale_px / factor, 0.5) * 0.7)
    big = ndimage.zoom(field, factor, order=1, prefilter=False)[: shape[0], : shape[1]]
    if big.shape != tuple(shape):
        big = np.pad(big, [(0, shape[0] - big.shape[0]), (0, shape[1] - big.shape[1])], mode="edge")
    std = float(big.std())
    return ((big - big.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def blurred_mask(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-blurred float version of a mask, computed at reduced resolution when the blur is wide.

    Parameters
    ----------
    mask : numpy.ndarray
        bool or float (H, W).
    sigma_px : float
        Gaussian sigma in pixels.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].
    """
    factor = max(1, int(sigma_px // 4))
    if factor == 1:
        return ndimage.gaussian_filter(mask.astype(np.float32), sigma_px)
    h, w = mask.shape
    small = mask[::factor, ::factor].astype(np.float32)
    small = ndimage.gaussian_filter(small, sigma_px / factor)
    big = ndimage.zoom(small, factor, order=1, prefilter=False)
    big = np.pad(big, [(0, max(0, h - big.shape[0])), (0, max(0, w - big.shape[1]))], mode="edge")
    return big[:h, :w].astype(np.float32)
