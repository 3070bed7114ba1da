"""Geometry of the synthetic cervical column: patient anatomy in mm, laid out in pixels.

The column C2…T2 is built upward from T2 as a chain of bodies and discs. Each
body is a quadrilateral whose superior endplate is rotated by the body's wedge
relative to its inferior endplate; each disc rotates the next endplate by its
own wedge. The C2–C7 Cobb angle (inferior endplates of C2 and C7) is therefore
exactly the sum of the C3…C7 body wedges and the C2-3…C6-7 disc wedges.

Layout happens with the anterior side on the left (posterior toward +x); the
caller mirrors images and coordinates for a right-facing phantom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cervkit.data.synth.draw import fillet, unit

LEVELS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7")
ALL_LEVELS: tuple[str, ...] = LEVELS + ("T1", "T2")
CORNER_NAMES: tuple[str, ...] = ("anterior_superior", "posterior_superior", "anterior_inferior", "posterior_inferior")
_N = len(ALL_LEVELS)
# Order of the Cobb segments from C7 upward: C7 body, C6-7 disc, C6 body, …, C3 body, C2-3 disc.
_COBB_SEGMENTS = 10


@dataclass
class Anatomy:
    """One synthetic patient's anatomy (mm and degrees, independent of pose and pixel size).

    Arrays indexed by level run C2, C3, …, C7, T1, T2 (8 bodies); disc arrays run
    C2-3, …, C7-T1, T1-2 (7 discs).
    """

    cobb_deg: float
    widths_mm: np.ndarray
    heights_mm: np.ndarray
    discs_mm: np.ndarray
    cobb_weights: np.ndarray
    cobb_offsets_deg: np.ndarray
    extra_wedges_deg: dict[str, float]
    shifts_mm: np.ndarray
    concavity_mm: np.ndarray
    dens: dict[str, float]
    canal_mm: float
    spinous_len_mm: np.ndarray
    spinous_deg: np.ndarray
    soft: dict[str, float] = field(default_factory=dict)


def sample_anatomy(rng: np.random.Generator, cobb_range: tuple[float, float] = (-5.0, 40.0)) -> Anatomy:
    """Draw a plausible adult cervical anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source (the "patient").
    cobb_range : tuple of float
        Uniform range of the patient's C2–C7 Cobb angle (degrees, lordosis positive).

    Returns
    -------
    Anatomy
        Widths 14–18 mm (C3–C7), heights 12–15 mm, discs 4–6 mm, C2 taller with a dens.
    """
    w0, h0 = rng.uniform(14.5, 17.0), rng.uniform(12.2, 14.6)
    widths = np.clip(w0 * (0.97 + 0.02 * np.arange(_N)) * rng.uniform(0.97, 1.03, _N), 14.0, 18.0)
    widths[6:] = w0 * rng.uniform(1.08, 1.15, 2)
    heights = np.clip(h0 * rng.uniform(0.96, 1.04, _N), 12.0, 15.0)
    heights[0] = h0 * rng.uniform(1.3, 1.5)
    heights[6:] = h0 * rng.uniform(1.08, 1.15, 2)
    discs = np.clip(rng.uniform(4.0, 6.0) * rng.uniform(0.9, 1.1, _N - 1), 4.0, 6.0)
    alpha = np.tile([1.5, 3.0], 5)  # bodies wedge less than discs
    offsets = rng.normal(0.0, 0.8, _COBB_SEGMENTS)
    return Anatomy(
        cobb_deg=float(rng.uniform(*cobb_range)),
        widths_mm=widths, heights_mm=heights, discs_mm=discs,
        cobb_weights=rng.dirichlet(alpha), cobb_offsets_deg=offsets - offsets.mean(),
        extra_wedges_deg={"C2": rng.uniform(-2, 3), "C7-T1": rng.uniform(-1, 3), "T1": rng.uniform(-3, 0),
                          "T1-T2": rng.uniform(-2, 1), "T2": rng.uniform(-3, 0)},
        shifts_mm=rng.normal(0.0, 0.35, _N - 1),
        concavity_mm=np.stack([rng.uniform(0.15, 0.5, _N), rng.uniform(0.3, 0.9, _N)], axis=1),
        dens={"height": rng.uniform(12.0, 16.0), "width": rng.uniform(7.5, 10.0), "tilt": rng.uniform(3, 14)},
        canal_mm=float(rng.uniform(13.0, 17.0)),
        spinous_len_mm=np.array([rng.uniform(*r) for r in
                                 [(15, 19), (10, 13), (10, 14), (11, 15), (14, 18), (20, 25), (22, 27), (22, 27)]]),
        spinous_deg=np.array([rng.uniform(*r) for r in
                              [(12, 22), (25, 38), (25, 38), (25, 38), (22, 35), (18, 28), (25, 35), (30, 40)]]),
        soft={"prevert_upper": rng.uniform(3, 6), "prevert_lower": rng.uniform(11, 17),
              "airway": rng.uniform(11, 17), "anterior_skin": rng.uniform(38, 48),
              "posterior_skin": rng.uniform(62, 78)},
    )


def perturb_anatomy(anat: Anatomy, rng: np.random.Generator, scale: float) -> Anatomy:
    """Small within-patient changes (posture, positioning) for another exposure or slice.

    Parameters
    ----------
    anat : Anatomy
        The patient's anatomy (not modified).
    rng : numpy.random.Generator
        Random source of this image.
    scale : float
        Size of the changes (0 returns an unchanged copy).

    Returns
    -------
    Anatomy
        A copy with Cobb ±~3° (flexion/extension), slightly different segment shares and listhesis.
    """
    offsets = rng.normal(0.0, 0.4 * scale, _COBB_SEGMENTS)
    return Anatomy(**{**anat.__dict__,
                      "cobb_deg": float(anat.cobb_deg + rng.normal(0.0, 3.0 * scale)),
                      "cobb_offsets_deg": anat.cobb_offsets_deg + offsets - offsets.mean(),
                      "shifts_mm": anat.shifts_mm + rng.normal(0.0, 0.15 * scale, _N - 1)})


def segment_angles(anat: Anatomy, cobb_deg: float) -> np.ndarray:
    """The 10 wedge angles (C7 body, C6-7 disc, …, C3 body, C2-3 disc) summing exactly to ``cobb_deg``.

    Parameters
    ----------
    anat : Anatomy
        Source of the shares and offsets.
    cobb_deg : float
        Target C2–C7 Cobb angle.

    Returns
    -------
    numpy.ndarray
        (10,) angles in degrees.
    """
    return cobb_deg * anat.cobb_weights + anat.cobb_offsets_deg


@dataclass
class Column:
    """The column laid out in pixels, anterior to the left (before any mirroring).

    ``corners[level]`` is (4, 2) in :data:`CORNER_NAMES` order; ``angles[level]`` is
    (superior, inferior) endplate angle in degrees; ``outlines[level]`` is the polygon
    drawn (rounded corners, concave endplates, C2 with its dens).
    """

    spacing_mm: float
    corners: dict[str, np.ndarray]
    angles: dict[str, tuple[float, float]]
    outlines: dict[str, np.ndarray]
    dens_tip: np.ndarray
    dens_poly: np.ndarray
    anat: Anatomy

    def frame(self, level: str, uv_mm: np.ndarray) -> np.ndarray:
        """Map points from a vertebra's local frame (mm) to image pixels.

        Parameters
        ----------
        level : str
            Vertebra; origin at the midpoint of its posterior wall.
        uv_mm : numpy.ndarray
            (N, 2): u toward posterior along the mean endplate direction, v up.

        Returns
        -------
        numpy.ndarray
            (N, 2) image points (x, y).
        """
        c = self.corners[level]
        e, n = unit(float(np.mean(self.angles[level])))
        origin = (c[1] + c[3]) / 2.0
        uv = np.asarray(uv_mm, dtype=np.float64).reshape(-1, 2) / self.spacing_mm
        return origin + uv[:, :1] * e + uv[:, 1:] * n

    def at(self, origin: np.ndarray, angle_deg: float, uv_mm: np.ndarray) -> np.ndarray:
        """Map points from any local frame (mm; u posterior, v up) to image pixels.

        Parameters
        ----------
        origin : numpy.ndarray
            (x, y) origin in pixels.
        angle_deg : float
            Endplate-style angle of the frame's u axis.
        uv_mm : numpy.ndarray
            (N, 2) points in mm.

        Returns
        -------
        numpy.ndarray
            (N, 2) image points (x, y).
        """
        e, n = unit(angle_deg)
        uv = np.asarray(uv_mm, dtype=np.float64).reshape(-1, 2) / self.spacing_mm
        return np.asarray(origin, dtype=np.float64) + uv[:, :1] * e + uv[:, 1:] * n

    def wall(self, side: str, extend_mm: float = 0.0) -> np.ndarray:
        """Anterior or posterior wall line (body corners C2 … T2), top to bottom.

        Parameters
        ----------
        side : str
            ``"anterior"`` or ``"posterior"``.
        extend_mm : float
            Straight extension beyond both ends.

        Returns
        -------
        numpy.ndarray
            (N, 2) polyline.
        """
        i_sup, i_inf = (0, 2) if side == "anterior" else (1, 3)
        line = np.array([p for lv in ALL_LEVELS for p in (self.corners[lv][i_sup], self.corners[lv][i_inf])])
        if extend_mm > 0:
            d0, d1 = line[0] - line[2], line[-1] - line[-3]
            k = extend_mm / self.spacing_mm
            line = np.vstack([line[0] + d0 / np.hypot(*d0) * k, line, line[-1] + d1 / np.hypot(*d1) * k])
        return line


def _body_outline(c: np.ndarray, conc_sup: float, conc_inf: float, radius: float,
                  dens: np.ndarray | None = None) -> np.ndarray:
    """Closed outline AI → inferior endplate → PI → PS → superior (or dens) → AS, corners rounded."""
    a_s, p_s, a_i, p_i = c
    s = np.linspace(0.125, 0.875, 7)[:, None]
    bump = 4 * s * (1 - s)
    n_inf = (a_s + p_s) / 2 - (a_i + p_i) / 2
    n_inf /= np.hypot(*n_inf)
    inferior = a_i + s * (p_i - a_i) + bump * conc_inf * n_inf
    superior = p_s + s * (a_s - p_s) - bump * conc_sup * n_inf if dens is None else dens
    pts = np.vstack([a_i[None], inferior, p_i[None], p_s[None], superior, a_s[None]])
    corners = [0, len(inferior) + 1, len(inferior) + 2, len(pts) - 1]
    return fillet(pts, corners, radius)


def _dens_profile(c: np.ndarray, anat: Anatomy, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Superior outline of C2 from PS to AS going over the dens, and the dens tip."""
    a_s, p_s = c[0], c[1]
    e = (p_s - a_s) / np.hypot(*(p_s - a_s))
    n = np.array([e[1], -e[0]])
    w = float(np.hypot(*(p_s - a_s)))
    dw, dh = anat.dens["width"] / spacing, anat.dens["height"] / spacing
    shear = np.tan(np.deg2rad(anat.dens["tilt"]))
    uc = 0.54 * w
    r = 0.45 * dw
    # half-profile (u offset from centre, v) from the posterior base up to the tip
    side = np.array([[0.5 * dw, 0.0], [0.42 * dw, 0.3 * dh], [0.47 * dw, 0.6 * dh], [0.45 * dw, dh - r]])
    t = np.linspace(0, np.pi, 9)[1:-1]
    cap = np.stack([r * np.cos(t), dh - r + r * np.sin(t)], 1)
    left = side[::-1] * np.array([-1, 1])
    prof = np.vstack([side, cap, left])
    u = uc + prof[:, 0] + prof[:, 1] * shear
    pts = a_s + u[:, None] * e + prof[:, 1:] * n
    tip = a_s + (uc + dh * shear) * e + dh * n
    return pts, tip


def layout_column(anat: Anatomy, cobb_deg: float, *, size: tuple[int, int], c7_angle_deg: float,
                  column_fraction: float, top_fraction: float, anterior_x_fraction: float) -> Column:
    """Lay the column out in pixels.

    Parameters
    ----------
    anat : Anatomy
        The anatomy (mm).
    cobb_deg : float
        C2–C7 Cobb angle (lordosis positive), distributed over the segments.
    size : tuple of int
        (H, W) of the image.
    c7_angle_deg : float
        Angle of C7's inferior endplate (includes the global tilt).
    column_fraction : float
        Fraction of H spanned from the dens tip to C7's inferior endplate; sets the pixel spacing.
    top_fraction : float
        Row of the dens tip as a fraction of H.
    anterior_x_fraction : float
        Column of the mean C2–C7 anterior wall as a fraction of W.

    Returns
    -------
    Column
        Corners, angles and outlines in pixels.
    """
    seg = segment_angles(anat, cobb_deg)
    ex = anat.extra_wedges_deg
    # body wedges and the disc wedge above each body, bottom (T2) to top (C2)
    body_w = {"T2": ex["T2"], "T1": ex["T1"], "C2": ex["C2"]}
    disc_above = {"T2": ex["T1-T2"], "T1": ex["C7-T1"]}
    for k, lv in enumerate(("C7", "C6", "C5", "C4", "C3")):
        body_w[lv], disc_above[lv] = seg[2 * k], seg[2 * k + 1]
    order = ALL_LEVELS[::-1]
    angle = c7_angle_deg - ex["T2"] - ex["T1-T2"] - ex["T1"] - ex["C7-T1"]
    p = np.zeros(2)
    corners_mm: dict[str, np.ndarray] = {}
    angles: dict[str, tuple[float, float]] = {}
    for lv in order:
        i = ALL_LEVELS.index(lv)
        w, h = anat.widths_mm[i], anat.heights_mm[i]
        e_i, n_i = unit(angle)
        top = angle + body_w[lv]
        e_s, _ = unit(top)
        s_c = p + n_i * h
        corners_mm[lv] = np.array([s_c - e_s * w / 2, s_c + e_s * w / 2, p - e_i * w / 2, p + e_i * w / 2])
        angles[lv] = (top, angle)
        if lv == "C2":
            break
        phi = disc_above[lv]
        _, n_mid = unit(top + phi / 2)
        e_next, _ = unit(top + phi)
        p = s_c + n_mid * anat.discs_mm[i - 1] + e_next * anat.shifts_mm[i - 1]
        angle = top + phi
    # scale and place: first measure the C2-top (dens) to C7 span in mm
    h_img, w_img = size
    dens_mm, tip_mm = _dens_profile(corners_mm["C2"], anat, 1.0)
    span_mm = corners_mm["C7"][2:, 1].max() - min(dens_mm[:, 1].min(), tip_mm[1])
    spacing = float(span_mm / (column_fraction * h_img))
    ant_x = np.mean([corners_mm[lv][[0, 2], 0].mean() for lv in LEVELS])
    shift = np.array([anterior_x_fraction * w_img - ant_x / spacing, top_fraction * h_img - tip_mm[1] / spacing])
    corners = {lv: c / spacing + shift for lv, c in corners_mm.items()}
    radius = float(np.clip(0.5 / spacing, 1.2, 3.0))
    dens_px, tip_px = _dens_profile(corners["C2"], anat, spacing)
    outlines = {}
    for lv in ALL_LEVELS:
        i = ALL_LEVELS.index(lv)
        conc = anat.concavity_mm[i] / spacing
        outlines[lv] = _body_outline(corners[lv], conc[0], conc[1], radius, dens_px if lv == "C2" else None)
    return Column(spacing_mm=spacing, corners=corners, angles=angles, outlines=outlines,
                  dens_tip=tip_px, dens_poly=dens_px, anat=anat)
