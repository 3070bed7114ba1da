"""Columns of rotated rectangles drawn with PIL: shapes the project's own phantoms and test columns did not draw.

Independent of cervkit on purpose (only NumPy and PIL), so measurements can be checked on geometry the
measurement code never saw: six bodies (C2…C7) as rotated rectangles filled by
:meth:`PIL.ImageDraw.ImageDraw.polygon`, in a 384 px lateral view. The top body is 1.3–1.5 times as tall
as the others, as C2's body is in reality (a rectangle has no dens, so its height is what marks C2).
Per-body tilts follow a lordotic curve from +8…+20° at C2 to −12…−25° at C7 with ±2° jitter, all within
−25…+20°. The expected C2–C7 Cobb angle comes from the drawn corners: the angle of C2's inferior
endplate minus C7's, each the tilt of its posterior→anterior edge, positive when the anterior end is
higher (the project's convention), so lordosis is positive. Imported by tests and by
``benchmarks/bench_measure.py`` (``tests/`` on ``sys.path``); not a test module itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SIZE = 384
SEEDS = tuple(range(12))


def endplate_tilt_deg(anterior: np.ndarray, posterior: np.ndarray, side: str) -> float:
    """Tilt of an endplate's posterior→anterior edge, positive when its anterior end is higher (y down).

    Parameters
    ----------
    anterior, posterior : numpy.ndarray
        (x, y) ends of the edge in image coordinates.
    side : {"left", "right"}
        Which image side is anterior.

    Returns
    -------
    float
        Degrees.
    """
    d = np.asarray(anterior, float) - np.asarray(posterior, float)
    return float(np.degrees(np.arctan2(-d[1], d[0] if side == "right" else -d[0])))


def rectangle_column(seed: int, size: int = SIZE, *, top_ratio: float | None = None,
                     n_bodies: int = 6) -> tuple[np.ndarray, dict[str, Any]]:
    """One label map of rotated rectangles and the geometry it was drawn with.

    Parameters
    ----------
    seed : int
        Random seed (sizes, tilts, gaps, anterior side, position).
    size : int
        Image side in px.
    top_ratio : float, optional
        Height of the top body over the others' (default: drawn in 1.3…1.5).
    n_bodies : int
        Bodies to draw (6: C2…C7).

    Returns
    -------
    (numpy.ndarray, dict)
        uint8 (size, size) label map, bodies 1..n top to bottom; geometry: ``side``, ``tilts_deg``,
        ``corners`` (per body, name → (x, y)) and ``c2c7_cobb_deg`` (top inferior minus bottom inferior
        endplate angle, from the corners).
    """
    rng = np.random.default_rng(seed)
    side = "right" if rng.random() < 0.5 else "left"
    width = rng.uniform(32.0, 40.0)               # AP depth of a body, px
    height = rng.uniform(23.0, 28.0)              # C3…C7 body height, px
    ratio = rng.uniform(1.3, 1.5) if top_ratio is None else top_ratio
    heights = np.r_[ratio * height, height * rng.uniform(0.97, 1.03, n_bodies - 1)]
    gaps = rng.uniform(7.0, 10.0, n_bodies - 1)   # disc spaces, px
    ramp = np.linspace(rng.uniform(8.0, 20.0), rng.uniform(-25.0, -12.0), n_bodies)
    tilts = np.clip(ramp + rng.uniform(-2.0, 2.0, n_bodies), -25.0, 20.0)
    centre = np.array([size / 2 + rng.uniform(-25, 25), 0.0])
    corners: list[dict[str, np.ndarray]] = []
    for i, (tilt, h) in enumerate(zip(np.radians(tilts), heights)):
        ant = np.array([np.cos(tilt), -np.sin(tilt)])  # posterior → anterior, anterior toward +x here
        caud = np.array([np.sin(tilt), np.cos(tilt)])
        if i:
            prev = np.radians(tilts[i - 1])
            prev_caud = np.array([np.sin(prev), np.cos(prev)])
            disc = (prev_caud + caud) / np.linalg.norm(prev_caud + caud)
            centre = centre + heights[i - 1] / 2 * prev_caud + gaps[i - 1] * disc + h / 2 * caud
        corners.append({f"{a}_{s}": centre + (1 if a == "anterior" else -1) * width / 2 * ant
                        + (1 if s == "inferior" else -1) * h / 2 * caud
                        for a in ("anterior", "posterior") for s in ("superior", "inferior")})
    lows = [cs[k][1] for cs in corners for k in cs]
    shift = np.array([0.0, (size - (max(lows) - min(lows))) / 2 - min(lows) + rng.uniform(-20, 20)])
    for cs in corners:
        for k in cs:
            p = cs[k] + shift
            cs[k] = np.round(np.array([size - p[0], p[1]]) if side == "left" else p)  # PIL draws whole pixels
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for i, cs in enumerate(corners):
        ring = [cs[k] for k in ("anterior_superior", "anterior_inferior", "posterior_inferior",
                                "posterior_superior")]
        draw.polygon([(int(x), int(y)) for x, y in ring], fill=i + 1)
    top, bottom = corners[0], corners[-1]
    cobb = (endplate_tilt_deg(top["anterior_inferior"], top["posterior_inferior"], side)
            - endplate_tilt_deg(bottom["anterior_inferior"], bottom["posterior_inferior"], side))
    return np.asarray(image, dtype=np.uint8).copy(), {"side": side, "tilts_deg": tilts.tolist(),
                                                      "corners": corners, "c2c7_cobb_deg": cobb}
