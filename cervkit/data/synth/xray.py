"""Lateral cervical radiograph renderer for the synthetic phantoms.

The image is built as a projected density (soft-tissue path length plus bone),
blurred (focal spot / detector unsharpness), passed through an exponential tone
curve (dense shoulders compress the contrast of what lies behind them, as on a
real film), given signal-dependent noise, then a random window and gamma. Bone
stays bright (no MONOCHROME1-style inversion).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from cervkit.data.synth.draw import (
    band,
    blurred_mask,
    poly_mask,
    rim_weights,
    smooth_noise,
)
from cervkit.data.synth.geometry import ALL_LEVELS, LEVELS, Column
from cervkit.data.synth.parts import atlas, head, neck, posterior_elements


def _add_bone(dens: np.ndarray, poly: np.ndarray, inner: float, rim: float, rim_px: float,
              tex: np.ndarray | None = None) -> None:
    """Add a bone's density: ``inner`` inside (times texture) plus a cortical ``rim`` fading inward."""
    window, inside, weight = rim_weights(poly, dens.shape, rim_px)
    if not inside.any():
        return
    val = inner * inside
    if tex is not None:
        val = val * (1.0 + 0.18 * tex[window])
    dens[window] += (val + rim * weight).astype(np.float32)


def shoulder_edge(col: Column, rng: np.random.Generator, occlude: bool, width: int) -> np.ndarray:
    """Row of the shoulder shadow's upper edge for every column x (pixel-edge units).

    Parameters
    ----------
    col : Column
        The laid-out column.
    rng : numpy.random.Generator
        Random source; the same numbers are drawn whether or not ``occlude`` is set.
    occlude : bool
        Put the edge between C6's and C7's centres (C7 hidden) instead of below C7.
    width : int
        Image width.

    Returns
    -------
    numpy.ndarray
        (W,) edge rows; a pixel is covered when its centre row is below the edge.
    """
    s = col.spacing_mm
    c6, c7 = col.corners["C6"].mean(0), col.corners["C7"].mean(0)
    frac, below, curv = rng.uniform(0.0, 0.8), rng.uniform(5.0, 35.0), rng.uniform(0.15, 0.5)
    y0 = c6[1] + frac * (c7[1] - c6[1]) if occlude else col.corners["C7"][2:, 1].max() + below / s
    x = np.arange(width) + 0.5
    return y0 + curv * (x - c7[0]) ** 2 / width


def render_xray(col: Column, rng: np.random.Generator, labels: np.ndarray, *, occlude: bool
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """Render a lateral cervical radiograph (anterior to the left).

    Parameters
    ----------
    col : Column
        The laid-out column.
    rng : numpy.random.Generator
        Random source of this image.
    labels : numpy.ndarray
        uint8 label map (1..6 = C2..C7) of the same layout, to measure occlusion.
    occlude : bool
        Hide C7 (sometimes part of C6) behind the shoulders.

    Returns
    -------
    image : numpy.ndarray
        float32 (H, W) in [0, 1].
    info : dict
        ``occluded_levels``, ``shoulder_coverage`` per level and the rendering parameters.
    """
    shape = labels.shape
    s = col.spacing_mm
    nk, hd = neck(col), head(col, rng)
    pe, c1 = posterior_elements(col, pillars=True), atlas(col)
    tex = smooth_noise(rng, shape, 0.9 / s)
    # soft tissue path length: neck, head and face, rounded at the skin
    face = hd["mandible"][ConvexHull(hd["mandible"]).vertices]
    centre = hd["skull"].mean(0)
    soft = poly_mask(nk["neck"], shape) | poly_mask(centre + (hd["skull"] - centre) * 1.05, shape)
    soft |= poly_mask(face, shape)
    dens = 0.95 * blurred_mask(soft, 9.0 / s) * (1.0 + 0.04 * smooth_noise(rng, shape, 25.0 / s))
    air = blurred_mask(poly_mask(nk["airway"], shape), 1.2 / s)
    dens -= 0.3 * air * np.clip(dens, 0, 1)
    rim = 0.8 / s
    for lv in ALL_LEVELS:
        _add_bone(dens, col.outlines[lv], 0.6, 0.5, rim, tex)
    for poly in pe["pedicle"]:
        _add_bone(dens, poly, 0.18, 0.2, rim, tex)
    for poly in pe["pillar"]:
        _add_bone(dens, poly, 0.3, 0.3, rim, tex)
    for poly in pe["lamina"]:
        _add_bone(dens, poly, 0.22, 0.25, rim, tex)
    for poly in pe["spinous"]:
        _add_bone(dens, poly, 0.32, 0.3, rim, tex)
    _add_bone(dens, c1["lateral_mass"], 0.22, 0.15, rim, tex)
    _add_bone(dens, c1["anterior_arch"], 0.45, 0.35, rim, tex)
    _add_bone(dens, c1["posterior_arch"], 0.4, 0.35, rim, tex)
    _add_bone(dens, hd["skull"], 0.85, 0.7, 5.0 / s, tex)
    _add_bone(dens, hd["mastoid"], 0.45, 0.3, 2.0 / s, tex)
    _add_bone(dens, hd["occipital"], 0.35, 0.2, rim, tex)
    _add_bone(dens, hd["mandible"], 0.3, 0.55, 1.5 / s, tex)
    _add_bone(dens, hd["hyoid"], 0.3, 0.25, rim, tex)
    # shoulders (always drawn; above C7's centre only when occluding) and a clavicle
    edge = shoulder_edge(col, rng, occlude, shape[1])
    rows = np.arange(shape[0])[:, None] + 0.5
    depth = (rows - edge[None, :]) * s
    ramp = np.clip(depth / 8.0 + 0.5, 0.0, 1.0)
    smooth_step = ramp * ramp * (3 - 2 * ramp)
    dens += (rng.uniform(1.3, 1.9) * smooth_step + 0.5 * np.clip(depth / 40.0, 0, 1)).astype(np.float32)
    cx = col.corners["C7"][:, 0].mean()
    cy = edge[int(np.clip(cx, 0, shape[1] - 1))] + rng.uniform(12.0, 28.0) / s
    slope = np.tan(np.deg2rad(rng.uniform(-20.0, 5.0)))
    xs = np.array([-0.2, 0.5, 1.2]) * shape[1]
    clav = np.stack([xs, cy + slope * (xs - cx)], 1)
    _add_bone(dens, band(clav, 5.5 / s, -5.5 / s), 0.35, 0.35, 1.5 / s, tex)
    coverage = {}
    for k, lv in enumerate(LEVELS, start=1):
        rr, cc = np.nonzero(labels == k)
        coverage[lv] = float(np.mean(rr + 0.5 > edge[cc])) if rr.size else 0.0
    occluded = [lv for lv in LEVELS if coverage[lv] >= 0.2]
    # imaging chain
    blur = float(rng.uniform(0.5, 1.2))
    dens = ndimage.gaussian_filter(np.clip(dens, 0, None), blur)
    k_att = float(rng.uniform(0.7, 1.0))
    img = 1.0 - np.exp(-k_att * dens)
    sigma = float(rng.uniform(0.008, 0.03))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6) * 1.6
    img = img + sigma * (1.0 + 1.5 * img) * noise
    lo, hi, gamma = float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.88, 1.0)), float(rng.uniform(0.75, 1.35))
    img = np.clip((img - lo) / (hi - lo), 0.0, 1.0) ** gamma
    info = {"occluded_levels": occluded, "shoulder_coverage": coverage, "blur_sigma_px": blur,
            "noise_sigma": sigma, "gamma": gamma, "window": [lo, hi], "attenuation": k_att,
            "shoulder_edge_row_at_c7": float(edge[int(np.clip(cx, 0, shape[1] - 1))])}
    return img.astype(np.float32), info
