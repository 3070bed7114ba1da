"""Mid-sagittal T2-weighted cervical MRI renderer for the synthetic phantoms.

Tissues are painted back to front with T2-like signal: bright CSF and discs,
intermediate marrow with dark (low-signal) cortical rims, gray cord and brainstem,
dark muscle and air, bright subcutaneous fat. A partial-volume blur, a smooth
receive-coil bias field and Rician noise follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from cervkit.data.synth.draw import (
    band,
    ellipse,
    poly_index,
    poly_mask,
    rim_weights,
    smooth_noise,
)
from cervkit.data.synth.geometry import ALL_LEVELS, Column
from cervkit.data.synth.parts import (
    atlas,
    discs,
    head,
    neck,
    posterior_elements,
    tip_frame,
)


def _paint_bone(sig: np.ndarray, poly: np.ndarray, marrow: float, cortex: float, rim_px: float,
                tex: np.ndarray) -> None:
    """Paint marrow (textured) with a low-signal rim fading inward."""
    window, inside, weight = rim_weights(poly, sig.shape, rim_px)
    if not inside.any():
        return
    val = marrow * (1.0 + 0.12 * tex[window]) * (1.0 - weight) + cortex * weight
    sig[window] = np.where(inside, val, sig[window])


def _paint(sig: np.ndarray, poly: np.ndarray, value: float | np.ndarray) -> None:
    """Paint a constant (or per-pixel field) inside a polygon."""
    rr, cc = poly_index(poly, sig.shape)
    sig[rr, cc] = value if np.isscalar(value) else value[rr, cc]


def render_mri(col: Column, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    """Render a mid-sagittal T2 cervical MRI slice (anterior to the left).

    Parameters
    ----------
    col : Column
        The laid-out column.
    rng : numpy.random.Generator
        Random source of this image.
    shape : tuple of int
        (H, W).

    Returns
    -------
    image : numpy.ndarray
        float32 (H, W) in [0, 1].
    info : dict
        Rendering parameters (noise, bias strength, blur).
    """
    s = col.spacing_mm
    a = col.anat
    nk, hd = neck(col), head(col, rng)
    pe, c1 = posterior_elements(col, pillars=False), atlas(col)
    tex = smooth_noise(rng, shape, 1.0 / s)
    soft_tex = smooth_noise(rng, shape, 3.0 / s)
    muscle = rng.uniform(0.16, 0.26)
    sig = np.zeros(shape, np.float32)
    # neck: subcutaneous fat rim, muscle, a fat plane, airway
    neck_m = poly_mask(nk["neck"], shape)
    depth = ndimage.distance_transform_edt(neck_m) * s
    fat_mm = rng.uniform(4.0, 9.0)
    sig[neck_m] = np.where(depth[neck_m] < fat_mm, 0.62, muscle * (1.0 + 0.15 * soft_tex[neck_m]))
    post = nk["posterior_wall"]
    off = rng.uniform(28, 45)
    plane = poly_mask(band(post, -off / s, -(off + rng.uniform(1.0, 2.5)) / s), shape) & neck_m
    sig[plane] = rng.uniform(0.3, 0.5) * (1.0 + 0.3 * soft_tex[plane])
    # head: scalp fat, skull cortex, diploe, brain
    centre = hd["skull"].mean(0)
    for scale, val in ((1.07, 0.62), (1.0, 0.06), (0.975, 0.3), (0.93, 0.42)):
        _paint(sig, centre + (hd["skull"] - centre) * scale, val)
    brain = poly_mask(centre + (hd["skull"] - centre) * 0.93, shape)
    sig[brain] *= 1.0 + 0.12 * soft_tex[brain]
    _paint(sig, nk["airway"], 0.02)
    _paint_bone(sig, hd["clivus"], 0.4, 0.05, 1.2 / s, tex)
    _paint_bone(sig, hd["occipital"], 0.35, 0.05, 1.2 / s, tex)
    # CSF, cisterna magna, cord and brainstem
    csf = rng.uniform(0.85, 0.98)
    _paint(sig, band(post, -0.9 / s, -a.canal_mm / s), csf)
    dw = a.dens["width"]
    lift = float(hd["lift_mm"][0])
    _paint(sig, tip_frame(col, ellipse(np.array([dw / 2 + a.canal_mm * 0.9, lift + 14]), 10.0, 16.0, 20.0)), csf)
    cord_c = -(a.canal_mm * rng.uniform(0.45, 0.52)) / s
    half = rng.uniform(3.4, 4.2) / s
    _paint(sig, band(post, cord_c + half, cord_c - half), 0.45)
    _paint(sig, tip_frame(col, ellipse(np.array([dw / 2 + a.canal_mm * 0.45, lift + 38]), 9.0, 34.0, 12.0)), 0.45)
    # discs (bright nucleus, darker annulus), bodies and posterior elements
    rim = 0.7 / s
    for poly in discs(col):
        window, inside, weight = rim_weights(poly, shape, 1.5 / s)
        nucleus = rng.uniform(0.45, 0.85)
        val = nucleus * (1.0 - 0.65 * weight)
        sig[window] = np.where(inside, val, sig[window])
    marrow = rng.uniform(0.32, 0.45)
    for lv in ALL_LEVELS:
        _paint_bone(sig, col.outlines[lv], marrow * rng.uniform(0.92, 1.08), 0.05, rim, tex)
    for key in ("lamina", "spinous"):
        for poly in pe[key]:
            _paint_bone(sig, poly, marrow * 0.9, 0.05, rim, tex)
    for key in ("anterior_arch", "posterior_arch"):
        _paint_bone(sig, c1[key], marrow, 0.05, rim, tex)
    # acquisition: partial volume, bias field, Rician noise, scaling
    blur = float(rng.uniform(0.5, 0.9))
    sig = ndimage.gaussian_filter(sig, blur)
    x = (np.arange(shape[1]) + 0.5) / shape[1]
    coil = 1.0 + rng.uniform(0.1, 0.35) * (x[None, :] - 0.5)  # posterior (right) coil elements brighter
    bias_strength = float(rng.uniform(0.1, 0.25))
    bias = np.exp(bias_strength * smooth_noise(rng, shape, shape[0] / 4.0)) * coil
    sig = sig * bias
    sigma = float(rng.uniform(0.015, 0.04))
    n1, n2 = rng.standard_normal((2, *shape)).astype(np.float32) * sigma
    img = np.sqrt((sig + n1) ** 2 + n2 ** 2)
    top = float(np.percentile(img, 99.7))
    gamma = float(rng.uniform(0.85, 1.15))
    img = np.clip(img / max(top, 1e-6), 0.0, 1.0) ** gamma
    info = {"blur_sigma_px": blur, "noise_sigma": sigma, "bias_strength": bias_strength, "gamma": gamma,
            "csf_signal": csf, "marrow_signal": marrow, "occluded_levels": []}
    return img.astype(np.float32), info
