"""Polygons of the structures around the vertebral bodies, shared by the X-ray and MRI renderers.

Everything is returned in image pixels (x, y) for the anterior-left layout of a
:class:`cervkit.data.synth.geometry.Column`; sizes are in mm in the code.
"""

from __future__ import annotations

import numpy as np

from cervkit.data.synth.draw import band, ellipse, offset_polyline
from cervkit.data.synth.geometry import ALL_LEVELS, Column


def _ellipse_uv(cu: float, cv: float, au: float, av: float, rot_deg: float = 0.0, n: int = 40) -> np.ndarray:
    """Ellipse points in a local (u, v) frame (mm); positive rotation turns +u toward +v."""
    return ellipse(np.array([cu, cv]), au, av, rot_deg, n)


def posterior_elements(col: Column, *, pillars: bool) -> dict[str, list[np.ndarray]]:
    """Pedicles, articular pillars, laminae and spinous processes of C2 … T2.

    Parameters
    ----------
    col : Column
        The laid-out column.
    pillars : bool
        Include pedicles and articular pillars (lateral projection, X-ray); a mid-sagittal
        MRI slice shows only laminae and spinous processes.

    Returns
    -------
    dict
        ``{"pillar": [...], "pedicle": [...], "lamina": [...], "spinous": [...]}`` lists of polygons.
    """
    a = col.anat
    out: dict[str, list[np.ndarray]] = {"pillar": [], "pedicle": [], "lamina": [], "spinous": []}
    base_u = a.canal_mm + 2.0
    for i, lv in enumerate(ALL_LEVELS):
        h = a.heights_mm[i] if lv != "C2" else a.heights_mm[i] * 0.8
        t_up = a.discs_mm[i - 1] if i > 0 else 6.0
        t_dn = a.discs_mm[i] if i < len(a.discs_mm) else 5.0
        if pillars:
            out["pedicle"].append(col.frame(lv, [[-1.0, -0.1 * h], [6.0, -0.1 * h], [6.0, 0.4 * h], [-1.0, 0.4 * h]]))
            top, bot = h / 2 + t_up / 2 - 0.6 + 2.0, -h / 2 - t_dn / 2 + 0.6 + 2.0
            if lv == "C2":
                top += 8.0
            drop = 11.5 * np.tan(np.deg2rad(35.0))
            out["pillar"].append(col.frame(lv, [[3.5, bot], [15.0, bot - drop], [15.0, top - drop], [3.5, top]]))
        out["lamina"].append(col.frame(lv, [[11.0, 3.0], [base_u + 1, 0.5], [base_u + 1, -5.5], [11.0, -4.5]]))
        length, beta = a.spinous_len_mm[i], np.deg2rad(a.spinous_deg[i])
        wb, wt = (12.0, 7.0) if lv == "C2" else (9.0, 5.5)
        b = np.array([base_u, -2.5])
        d = np.array([np.cos(beta), -np.sin(beta)])
        perp = np.array([d[1], -d[0]])
        tip = b + d * length
        poly = np.vstack([b - perp * wb / 2, tip - perp * wt / 2, tip + d * 2.0, tip + perp * wt / 2, b + perp * wb / 2,
                          b - d * 2.0])
        out["spinous"].append(col.frame(lv, poly))
        out["spinous"].append(col.frame(lv, _ellipse_uv(tip[0], tip[1], 3.2, 2.6, np.rad2deg(-beta), 16)))
    return out


def tip_frame(col: Column, uv_mm: np.ndarray) -> np.ndarray:
    """Map mm points from the frame at the dens tip (C2 superior endplate orientation).

    Parameters
    ----------
    col : Column
        The laid-out column.
    uv_mm : numpy.ndarray
        (N, 2) points, u posterior, v up.

    Returns
    -------
    numpy.ndarray
        (N, 2) image points.
    """
    return col.at(col.dens_tip, col.angles["C2"][0], uv_mm)


def atlas(col: Column) -> dict[str, np.ndarray]:
    """C1: anterior arch, posterior arch and (X-ray) lateral mass, placed around the dens.

    Parameters
    ----------
    col : Column
        The laid-out column.

    Returns
    -------
    dict
        Polygons ``anterior_arch``, ``posterior_arch``, ``lateral_mass``.
    """
    a = col.anat
    dw, dh = a.dens["width"], a.dens["height"]
    return {
        "anterior_arch": tip_frame(col, _ellipse_uv(-dw / 2 - 2.5 - 3.3, -0.38 * dh, 3.3, 5.2)),
        "posterior_arch": tip_frame(col, _ellipse_uv(dw / 2 + a.canal_mm + 9.0, -0.3 * dh, 9.5, 3.8, -8.0)),
        "lateral_mass": tip_frame(col, np.array([[-dw / 2 - 1, -0.1 * dh], [dw / 2 + 10, -0.1 * dh],
                                                 [dw / 2 + 10, -0.8 * dh], [-dw / 2 - 1, -0.8 * dh]])),
    }


def head(col: Column, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Skull base / occiput, mastoid, mandible and hyoid hints.

    Parameters
    ----------
    col : Column
        The laid-out column.
    rng : numpy.random.Generator
        Random source for small variations.

    Returns
    -------
    dict
        Polygons ``skull``, ``mastoid``, ``mandible``, ``hyoid``, ``clivus``, ``occipital``, the
        ``foramen`` magnum line (basion, opisthion) and ``lift_mm`` (basion height above the dens tip).
    """
    lift = rng.uniform(6.0, 12.0)
    skull = tip_frame(col, _ellipse_uv(rng.uniform(5, 20), lift + 68.0, rng.uniform(95, 110), 70.0,
                                       -rng.uniform(8, 18), 64))
    mand_pts = np.array([[-20, 18], [-26, -4], [-30, -26], [-60, -33], [-95, -30], [-106, -16]], float)
    mand_pts += rng.normal(0, 2.0, mand_pts.shape)
    widths = np.array([8, 11, 12, 20, 23, 20], float)
    mandible = tip_frame(col, band(mand_pts, widths / 2, -widths / 2))
    c = col.corners
    hy_c = (c["C3"][2] + c["C4"][0]) / 2
    e_ang = col.angles["C4"][0]
    hyoid = col.at(hy_c, e_ang, _ellipse_uv(-rng.uniform(30, 40), 0.0, 7.0, 2.6, -15.0, 20))
    clivus = tip_frame(col, np.array([[-2.0, lift - 1], [-32.0, lift + 38], [-42.0, lift + 34], [-10.0, lift - 4]]))
    occ_u0 = col.anat.dens["width"] / 2 + col.anat.canal_mm + 14.0
    occ_pts = np.array([[occ_u0, lift + 6], [occ_u0 + 22, lift + 4], [occ_u0 + 45, lift + 14], [occ_u0 + 62, lift + 34],
                        [occ_u0 + 70, lift + 60]])
    occipital = tip_frame(col, band(occ_pts, 3.5, -3.5))
    return {"skull": skull, "mastoid": tip_frame(col, _ellipse_uv(24.0, lift + 10, 14.0, 9.0, 10.0, 24)),
            "mandible": mandible, "hyoid": hyoid, "clivus": clivus, "occipital": occipital,
            "foramen": tip_frame(col, np.array([[-2.0, lift], [occ_u0, lift + 6]])), "lift_mm": np.array([lift])}


def neck(col: Column) -> dict[str, np.ndarray]:
    """Neck silhouette, prevertebral soft tissue, airway and the spinal canal.

    Parameters
    ----------
    col : Column
        The laid-out column.

    Returns
    -------
    dict
        Polygons ``neck`` (skin outline), ``airway``, ``canal`` and the wall polylines
        ``anterior_wall`` / ``posterior_wall`` (extended).
    """
    a, s = col.anat, col.spacing_mm
    ant = col.wall("anterior", extend_mm=250.0)
    post = col.wall("posterior", extend_mm=250.0)
    k = np.arange(len(ant), dtype=np.float64)
    ramp = np.clip((k - 6.0) / 4.0, 0.0, 1.0)  # C2–C4 upper pharynx → C6 and below
    prevert = (a.soft["prevert_upper"] + ramp * (a.soft["prevert_lower"] - a.soft["prevert_upper"])) / s
    airway = band(ant, prevert, prevert + a.soft["airway"] / s)
    skin_a = (a.soft["anterior_skin"] + 8.0 * (1 - ramp)) / s
    neck_poly = np.vstack([offset(ant, skin_a), offset(post, -a.soft["posterior_skin"] / s)[::-1]])
    canal = band(post, 0.0, -a.canal_mm / s)
    return {"neck": neck_poly, "airway": airway, "canal": canal, "anterior_wall": ant, "posterior_wall": post,
            "prevert_px": prevert}


def offset(points: np.ndarray, d: np.ndarray | float) -> np.ndarray:
    """Shorthand for :func:`cervkit.data.synth.draw.offset_polyline`.

    Parameters
    ----------
    points : numpy.ndarray
        (N, 2) polyline.
    d : numpy.ndarray or float
        Offsets (positive anterior for a downward polyline).

    Returns
    -------
    numpy.ndarray
        (N, 2) polyline.
    """
    return offset_polyline(points, d)


def discs(col: Column, bulge_mm: float = 0.8) -> list[np.ndarray]:
    """Disc polygons between consecutive bodies (C2-3 … T1-2), bulging slightly past the walls.

    Parameters
    ----------
    col : Column
        The laid-out column.
    bulge_mm : float
        Outward bulge at the anterior and posterior disc margins.

    Returns
    -------
    list of numpy.ndarray
        One polygon per disc, top to bottom.
    """
    out = []
    b = bulge_mm / col.spacing_mm
    for up, lo in zip(ALL_LEVELS[:-1], ALL_LEVELS[1:]):
        cu, cl = col.corners[up], col.corners[lo]
        ai, pi, a_s, p_s = cu[2], cu[3], cl[0], cl[1]
        e = (pi - ai + p_s - a_s) / 2
        e /= np.hypot(*e)
        up_n = np.array([e[1], -e[0]]) * (1.5 / col.spacing_mm)  # reach into the concave endplates
        out.append(np.vstack([ai + up_n, pi + up_n, (pi + p_s) / 2 + e * b, p_s - up_n, a_s - up_n,
                              (ai + a_s) / 2 - e * b]))
    return out
