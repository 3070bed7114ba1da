"""Controlled domain shifts: simulate other scanners, sequences and fields of view on a labelled image.

There is no T1 or second-scanner data in this project, so robustness is shown with documented
transforms of the real T2 images (``benchmarks/bench_robustness.py``). Each transform takes a float
image in [0, 1] (and, for geometric ones, its label map) and returns float32 in [0, 1] of the same
shape (``matrix``: of its own size); intensity shifts never touch the label map, geometric ones move
it with nearest-neighbour resampling (label values are never blended).

Intensity (``labels`` unchanged):

* :func:`t1_like` — a per-image, **non-monotone** remap that makes a T2 image look T1-weighted: the
  bright fluid (CSF, disc nuclei; above the image's ``fluid_quantile``) turns dark, the intermediate
  marrow of the vertebral bodies (around ``peak_quantile``) becomes the brightest tissue and air stays
  black. It is a contrast proxy, not physics: T2-bright fat is darkened too (in T1 it stays bright).
* :func:`invert` — ``1 − x`` (monotone decreasing; air turns white, an extreme case).
* :func:`gamma` — ``x ** g``; :func:`contrast` — stretch about the image mean, clipped;
  :func:`window` — a narrower display window ``x / upper``, clipped (bright tissue saturates).
* :func:`bias_field` — smooth multiplicative coil inhomogeneity, ``exp(strength · g(r, c))`` with
  ``g`` a random quadratic polynomial scaled to ``max |g| = 1``.
* :func:`rician_noise` — magnitude-image noise ``|x + σ(n₁ + i n₂)|``.
* :func:`blur` — Gaussian blur; :func:`resample` — acquired at ``factor`` × the resolution
  (area down-sampling, bilinear back up).

Geometric (image and labels alike, :mod:`cervkit.transforms.fov`; flips are not a scanner shift, left out):

* :func:`zoom` — other field of view at the same matrix size: ``factor < 1`` zooms out (the anatomy
  shrinks, zero padding around it), ``factor > 1`` zooms in (central crop, some vertebrae may be cut
  or leave the image; labels are renumbered 1..K top to bottom).
* :func:`matrix` — a small image: the whole view resampled to ``size`` × ``size`` (area averaging, labels
  nearest-neighbour), scored at that size.

:data:`SHIFTS` names every shift with its severity grid; :func:`apply_shift` applies one by name and
reports how the pixel size changed (for distances in mm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.io.resize import resize
from cervkit.transforms.fov import matrix, zoom


def _check(image: np.ndarray) -> np.ndarray:
    """A float32 2D copy of ``image`` clipped to [0, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise CervkitInputError(f"expected a 2D grayscale image, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def _out(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def t1_like(image: np.ndarray, severity: float = 0.9, *, peak_quantile: float = 0.8,
            fluid_quantile: float = 0.95) -> np.ndarray:
    """Non-monotone T2 → T1-like contrast remap, fitted to each image by its quantiles.

    With ``p`` and ``q`` the image's ``peak_quantile`` and ``fluid_quantile`` intensities, the map is
    ``x / p`` up to ``p`` (air stays 0, marrow rises to 1) and then falls linearly to ``1 − severity``
    at ``q`` and stays there (fluid and everything brighter).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1].
    severity : float
        0..1, how dark the brightest T2 tissue becomes (0: only the bright tail is saturated).
    peak_quantile, fluid_quantile : float
        Quantiles placing the peak (about the vertebral marrow on sagittal T2) and the fluid level.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].
    """
    if not 0.0 <= severity <= 1.0 or not 0.0 < peak_quantile < fluid_quantile <= 1.0:
        raise ValueError("need 0 <= severity <= 1 and 0 < peak_quantile < fluid_quantile <= 1")
    arr = _check(image)
    p, q = (float(v) for v in np.quantile(arr, [peak_quantile, fluid_quantile]))
    p = max(p, 1e-3)
    q = max(q, p + 1e-3)
    rising = arr / p
    falling = 1.0 - severity * np.clip((arr - p) / (q - p), 0.0, 1.0)
    return _out(np.where(arr <= p, rising, falling))


def invert(image: np.ndarray) -> np.ndarray:
    """``1 − x``: a monotone-decreasing remap (air turns white).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    return _out(1.0 - _check(image))


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """``x ** g`` (g < 1 brightens the dark tissue, g > 1 darkens it).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    g : float
        The exponent, positive.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    if g <= 0:
        raise ValueError(f"gamma must be positive, got {g}")
    return _out(_check(image) ** float(g))


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Stretch (factor > 1) or flatten (factor < 1) the intensities about the image mean, clipped.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    factor : float
        Positive scale of the deviations from the mean.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    if factor <= 0:
        raise ValueError(f"contrast factor must be positive, got {factor}")
    arr = _check(image)
    mean = float(arr.mean())
    return _out(mean + float(factor) * (arr - mean))


def window(image: np.ndarray, upper: float) -> np.ndarray:
    """A narrower display window: ``x / upper``, clipped, so everything above ``upper`` saturates.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    upper : float
        Top of the window, in (0, 1].

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    if not 0.0 < upper <= 1.0:
        raise ValueError(f"window upper must be in (0, 1], got {upper}")
    return _out(_check(image) / float(upper))


def bias_field(image: np.ndarray, strength: float, *, seed: int = 0) -> np.ndarray:
    """Multiply by a smooth random field ``exp(strength · g)``, ``g`` quadratic with ``max |g| = 1``.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1].
    strength : float
        Log-amplitude: the field spans at most ``exp(±strength)``.
    seed : int
        Draws the polynomial's coefficients.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    arr = _check(image)
    h, w = arr.shape
    r, c = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    coef = np.random.default_rng(seed).uniform(-1, 1, size=5)
    g = coef[0] * r + coef[1] * c + coef[2] * r * c + coef[3] * r ** 2 + coef[4] * c ** 2
    g = g - g.mean()
    g = g / max(float(np.abs(g).max()), 1e-6)
    return _out(arr * np.exp(float(strength) * g))


def rician_noise(image: np.ndarray, sigma: float, *, seed: int = 0) -> np.ndarray:
    """Magnitude (Rician) noise: ``sqrt((x + σ n₁)² + (σ n₂)²)`` with standard normal ``n₁, n₂``.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    sigma : float
        Noise standard deviation (intensity units).
    seed : int
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    arr = _check(image)
    rng = np.random.default_rng(seed)
    n1, n2 = rng.standard_normal((2, *arr.shape))
    return _out(np.sqrt((arr + sigma * n1) ** 2 + (sigma * n2) ** 2))


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma_px`` pixels (thicker slices, softer kernel).

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    sigma_px : float
        Standard deviation in pixels; <= 0 returns the (clipped) image unchanged.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] (clipped).
    """
    if sigma_px <= 0:
        return _check(image)
    return _out(cv2.GaussianBlur(_check(image), (0, 0), float(sigma_px), borderType=cv2.BORDER_REFLECT))


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Simulate a coarser acquisition: area down-sampling to ``factor`` × the size, bilinear back up.

    Parameters
    ----------
    image : numpy.ndarray
        float (H, W) in [0, 1] (values outside are clipped first).
    factor : float
        Size of the coarse matrix relative to the image, in (0, 1].

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1], the input's shape.
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"resample factor must be in (0, 1], got {factor}")
    arr = _check(image)
    h, w = arr.shape
    small = resize(arr, (max(2, round(h * factor)), max(2, round(w * factor))), nearest=False)
    return _out(resize(small, (h, w), nearest=False))


@dataclass(frozen=True)
class Shift:
    """One named shift: its function of (image, severity, seed) and its severity grid."""

    name: str
    grid: tuple[float, ...]
    geometric: bool
    doc: str


@dataclass
class Shifted:
    """A shifted (image, label map) pair and the pixel-size change (row, col) of geometric shifts."""

    image: np.ndarray
    labels: np.ndarray
    pixel_scale: tuple[float, float] = (1.0, 1.0)


_INTENSITY: dict[str, Callable[[np.ndarray, float, int], np.ndarray]] = {
    "t1_like": lambda x, s, _: t1_like(x, s),
    "invert": lambda x, _s, _seed: invert(x),
    "gamma": lambda x, s, _: gamma(x, s),
    "contrast": lambda x, s, _: contrast(x, s),
    "window": lambda x, s, _: window(x, s),
    "bias_field": lambda x, s, seed: bias_field(x, s, seed=seed),
    "rician_noise": lambda x, s, seed: rician_noise(x, s, seed=seed),
    "blur": lambda x, s, _: blur(x, s),
    "resample": lambda x, s, _: resample(x, s),
}

SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("t1_like", (0.5, 0.9), False, "T1-like non-monotone remap; severity = darkening of fluid"),
    Shift("invert", (1.0,), False, "1 - x (severity unused)"),
    Shift("gamma", (0.5, 0.7, 1.5, 2.0), False, "x ** severity"),
    Shift("contrast", (0.5, 2.0), False, "stretch about the mean by severity"),
    Shift("window", (0.5, 0.35), False, "x / severity, clipped"),
    Shift("bias_field", (0.3, 0.6), False, "exp(severity * smooth quadratic field)"),
    Shift("rician_noise", (0.03, 0.06, 0.1), False, "Rician noise sigma"),
    Shift("blur", (1.0, 2.0), False, "Gaussian blur sigma in pixels"),
    Shift("resample", (0.5, 0.33), False, "acquired at severity x the resolution"),
    Shift("zoom", (0.5, 0.6, 0.8, 1.25, 1.5, 2.0), True, "field of view: <1 zoom out + pad, >1 central crop"),
    Shift("matrix", (256,), True, "whole view resampled to severity x severity pixels"),
)}
"""Every shift by name, with the severity grid of ``benchmarks/bench_robustness.py``."""


def apply_shift(name: str, image: np.ndarray, labels: np.ndarray, severity: float, *, seed: int = 0) -> Shifted:
    """Apply the shift ``name`` of :data:`SHIFTS` with ``severity`` to one labelled image.

    Parameters
    ----------
    name : str
        A key of :data:`SHIFTS` (``"none"`` returns the pair unchanged).
    image : numpy.ndarray
        float (H, W) in [0, 1].
    labels : numpy.ndarray
        Label map (H, W); left as it is by intensity shifts.
    severity : float
        The shift's parameter (see :data:`SHIFTS`).
    seed : int
        For the random shifts (bias field, noise).

    Returns
    -------
    Shifted
        The new image (float32 [0, 1]; same shape but for ``matrix``), labels (uint8) and pixel-size change.
    """
    lab = np.asarray(labels).astype(np.uint8)
    if name == "none":
        return Shifted(_check(image), lab.copy())
    if name in ("zoom", "matrix"):
        img, new_lab, scale = zoom(image, lab, severity) if name == "zoom" else matrix(image, lab, int(severity))
        return Shifted(img, new_lab, scale)
    if name not in _INTENSITY:
        raise CervkitInputError(f"unknown shift {name!r}; use one of {['none', *SHIFTS]}")
    return Shifted(_INTENSITY[name](image, float(severity), int(seed)), lab.copy())


def shift_grid(names: list[str] | None = None) -> list[tuple[str, float]]:
    """``[("none", 0.0), (name, severity), ...]`` over :data:`SHIFTS` (or the given names).

    Parameters
    ----------
    names : list of str, optional
        Shifts to include (keys of :data:`SHIFTS`); default all.

    Returns
    -------
    list of (str, float)
        The unshifted baseline first, then each shift at each severity of its grid.
    """
    chosen = list(SHIFTS) if names is None else names
    unknown = [n for n in chosen if n not in SHIFTS]
    if unknown:
        raise CervkitInputError(f"unknown shifts {unknown}; use some of {list(SHIFTS)}")
    return [("none", 0.0)] + [(n, float(s)) for n in chosen for s in SHIFTS[n].grid]
