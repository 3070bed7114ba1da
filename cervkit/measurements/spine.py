"""Measurements from a label map: corners, endplates, heights, Cobb and adjacent angles.

Method, per body (one label each), in :mod:`cervkit.measurements.endplates`: the body's sub-pixel outline
is split into anterior, posterior, superior and inferior sides (first by the nearest side of
the body's rectangle in its own frame, then by the nearest corner-to-corner segment of the
previous fit); the 10 % of each side nearest its corners is dropped and a robust total-least-
squares line is fitted and moved out to the side's rims (a concave endplate is drawn rim to
rim, as a reader draws it). Corners are intersections of adjacent side lines; heights are
corner-to-corner distances (anterior: AS–AI, posterior: PS–PI), width (AP depth) is the mean of
the superior and inferior endplate lengths. Two last passes refit every side on the mask's
pixel centres (the centroid of all quadratic edges consistent with the pixels), which removes
most of the staircase error of nearly horizontal endplates; an edge no quadratic fits keeps its
outline line, which sits ~0.3 px outside the mask's edge (heights up to ~0.6 px long).

C2: its mask holds the dens. When a dens is found (:func:`cervkit.measurements.bodies.body_stats`: rows
narrower than 85 % of the body width rising at least 0.3 body heights above it), outline
points above the dens base are dropped and the superior line is fitted to the shoulders of
the body on either side of the peg (points across the peg's span are ignored); when one
shoulder is missing (a dens flush with a wall) the superior endplate is taken parallel to the
inferior one through the other shoulder. The C2–C7 Cobb angle uses only the inferior endplates of C2 and C7.

Anterior side: posterior elements are not in the mask, so it is decided from C2's dens when
the mask has one (the dens leans posterior over its body: :func:`cervkit.measurements.bodies.dens_offset`;
this also holds for a straight or kyphotic column), else from the curve of centroids: a normal
cervical (or lumbar) column is convex toward anterior. Pass ``anterior_side="left"|"right"``
when it is known; with neither cue and no argument, "left" is assumed and said so in
``reasons``. (Without the dens cue, a phantom column too straight for the curve test read
"left" on ~30 % of seeds, which negated every angle of the right-facing half: Cobb errors up
to 20°.)

Angles: an endplate's angle is the tilt of its posterior→anterior vector, positive when the
anterior end is higher (cranial) in the image; it does not depend on which side is anterior.
Cobb and adjacent angles are upper minus lower angle, so lordosis (endplates opening
anteriorly) is positive. With anisotropic pixels angles are taken in physical space.
Corner and centroid coordinates are pixel-edge coordinates in px, like the project's boxes and
the phantom geometry (x = column, y = row; pixel (r, c) covers [c, c+1) x [r, r+1), its centre
is (c + 0.5, r + 0.5)); lengths are in mm with a spacing, else in px, and the unit is in the
column name. The endplate angle convention equals :func:`cervkit.data.synth.phantom.endplate_angle`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cervkit.measurements.bodies import BodyStats, body_stats, dens_offset, instance_labels
from cervkit.measurements.endplates import CORNERS, fit_body, outline
from cervkit.measurements.levels import (
    ANATOMICAL_LEVELS,
    CERVICAL_LEVELS,
    LevelAssignment,
    assign_from_stats,
)

_DENS_SIDE = 0.02  # |dens offset| / body width from which the dens tells the anterior side

__all__ = ["CORNERS", "cobb_angle_deg", "decide_anterior_side", "measure_spine", "measure_vertebrae"]


def decide_anterior_side(centroids: np.ndarray, widths: Sequence[float] | None = None,
                         anterior_side: str | None = None,
                         dens_offset: float | None = None) -> tuple[str, str, list[str]]:
    """Which image side the bodies' anterior faces: argument, else C2's dens, else the curve.

    Parameters
    ----------
    centroids : numpy.ndarray
        (N, 2) body centroids (x, y), top to bottom.
    widths : sequence of float, optional
        Body widths, to judge whether the curve is clearly bent (default: 10 px).
    anterior_side : {"left", "right"}, optional
        The answer when known; it wins over everything (a disagreement is reported).
    dens_offset : float, optional
        :func:`cervkit.measurements.bodies.dens_offset` of C2 (the dens leans posterior). When at least 2 %
        of the body width it decides, also against the curve (a kyphotic column bends
        toward posterior, and a straight one does not bend at all); a disagreement is reported.

    Returns
    -------
    (side, source, notes)
        ``side`` "left" or "right"; ``source`` "argument", "dens", "curve" or "default"; notes
        in words.
    """
    if anterior_side not in (None, "left", "right"):
        raise ValueError(f"anterior_side must be 'left', 'right' or None, got {anterior_side!r}")
    notes: list[str] = []
    curve = None
    c = np.asarray(centroids, dtype=float)
    if len(c) >= 3:
        chord = c[-1] - c[0]
        perp = np.array([chord[1], -chord[0]]) / max(np.linalg.norm(chord), 1e-9)
        perp = perp if perp[0] >= 0 else -perp
        sagitta = float(np.mean((c[1:-1] - c[0]) @ perp))
        scale = 0.1 * (float(np.median(widths)) if widths is not None and len(widths) else 10.0)
        if abs(sagitta) >= scale:
            curve = "right" if sagitta > 0 else "left"
    dens = None
    if dens_offset is not None and abs(dens_offset) >= _DENS_SIDE:
        dens = "left" if dens_offset > 0 else "right"  # the dens leans posterior
    if anterior_side is not None:
        if curve is not None and curve != anterior_side:
            notes.append(f"centroid curve is convex toward the {curve} but anterior_side="
                         f"{anterior_side!r} was given: kyphotic column?")
        if dens is not None and dens != anterior_side:
            notes.append(f"C2's dens leans as if anterior were {dens} but anterior_side="
                         f"{anterior_side!r} was given")
        return anterior_side, "argument", notes
    if dens is not None:
        if curve is not None and curve != dens:
            notes.append(f"centroid curve is convex toward the {curve} but C2's dens leans as if "
                         f"anterior were {dens}: kyphotic column? anterior taken from the dens")
        return dens, "dens", notes
    if curve is not None:
        return curve, "curve", notes
    notes.append("anterior side could not be told from the centroid curve (straight or short "
                 "column); assumed 'left'; pass anterior_side to be sure")
    return "left", "default", notes


def _tilt_deg(anterior: np.ndarray, posterior: np.ndarray, ant_sign: float) -> float:
    """Endplate angle: tilt of posterior→anterior, positive when the anterior end is higher."""
    e = anterior - posterior
    return float(np.degrees(np.arctan2(-e[1], ant_sign * e[0])))


def _resolve_levels(stats: list[BodyStats],
                    levels: LevelAssignment | Mapping[int, str] | None) -> LevelAssignment:
    if levels is None:
        return assign_from_stats(stats, expected=CERVICAL_LEVELS)
    if isinstance(levels, LevelAssignment):
        return levels
    return LevelAssignment({int(k): str(v) for k, v in dict(levels).items()}, False, [])


def _measure(labels: np.ndarray, spacing_mm: Sequence[float] | None,
             levels: LevelAssignment | Mapping[int, str] | None,
             anterior_side: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    inst = instance_labels(labels)
    sp = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
    if min(sp) <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    unit = "px" if spacing_mm is None else "mm"
    stats = body_stats(inst, spacing_mm)
    assignment = _resolve_levels(stats, levels)
    centres = np.array([b.points.mean(axis=0) for b in stats]).reshape(-1, 2)
    c2 = [b for b in stats if b.has_dens and assignment.levels.get(b.label) in ("C2", None)]
    side, source, notes = decide_anterior_side(centres, [b.width for b in stats], anterior_side,
                                               dens_offset(c2[0]) if c2 else None)
    ant_sign = 1.0 if side == "right" else -1.0
    rows = []
    for b in stats:
        level = assignment.levels.get(b.label)
        row: dict[str, Any] = {"label": b.label, "level": level,
                               "centroid_x_px": float(b.centroid[0]) + 0.5,
                               "centroid_y_px": float(b.centroid[1]) + 0.5}
        corners = None
        if len(b.points) >= 16:
            corners = fit_body(b, outline(inst, b.label, sp), ant_sign,
                               use_dens=level in ("C2", None), floor=1.0 * max(sp),
                               mask=inst == b.label, spacing=sp)
        if corners is None:
            notes.append(f"body {b.label}: too small or irregular to fit four sides")
            corners = {k: np.full(2, np.nan) for k in CORNERS}
        for k in CORNERS:
            row[f"{k}_x_px"] = float(corners[k][0] / sp[1]) + 0.5  # pixel-edge coordinates
            row[f"{k}_y_px"] = float(corners[k][1] / sp[0]) + 0.5
        a_h = float(np.linalg.norm(corners["anterior_superior"] - corners["anterior_inferior"]))
        p_h = float(np.linalg.norm(corners["posterior_superior"] - corners["posterior_inferior"]))
        sup = float(np.linalg.norm(corners["anterior_superior"] - corners["posterior_superior"]))
        inf = float(np.linalg.norm(corners["anterior_inferior"] - corners["posterior_inferior"]))
        row[f"anterior_height_{unit}"] = a_h
        row[f"posterior_height_{unit}"] = p_h
        row[f"width_{unit}"] = 0.5 * (sup + inf)
        row["height_ratio"] = a_h / p_h if p_h > 0 else float("nan")
        row["superior_endplate_deg"] = _tilt_deg(corners["anterior_superior"],
                                                 corners["posterior_superior"], ant_sign)
        row["inferior_endplate_deg"] = _tilt_deg(corners["anterior_inferior"],
                                                 corners["posterior_inferior"], ant_sign)
        ps, pi = corners["posterior_superior"], corners["posterior_inferior"]
        wall = ps - pi  # posterior wall, pointing cranial
        row["posterior_wall_deg"] = float(np.degrees(np.arctan2(ant_sign * wall[0], -wall[1])))
        row[f"area_{unit}2"] = b.area
        row["dens_removed"] = bool(b.has_dens and level in ("C2", None))
        rows.append(row)
    columns = ["label", "level", "centroid_x_px", "centroid_y_px",
               *(f"{k}_{a}_px" for k in CORNERS for a in "xy"),
               f"anterior_height_{unit}", f"posterior_height_{unit}", f"width_{unit}",
               "height_ratio", "superior_endplate_deg", "inferior_endplate_deg",
               "posterior_wall_deg", f"area_{unit}2", "dens_removed"]
    table = pd.DataFrame(rows, columns=columns)
    info = {"unit": unit, "anterior_side": side, "anterior_side_source": source,
            "levels": dict(assignment.levels), "levels_unsure": assignment.unsure,
            "reasons": [*assignment.reasons, *notes]}
    table.attrs.update(info)
    return table, info


def measure_vertebrae(labels: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                      levels: LevelAssignment | Mapping[int, str] | None = None,
                      anterior_side: str | None = None) -> pd.DataFrame:
    """Per-body measurements of a label map (one row per body, top to bottom).

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map, one body per label (a binary mask is split into components).
    spacing_mm : (float, float), optional
        (row, col) pixel spacing; lengths in mm when given (``*_mm`` columns), else ``*_px``.
    levels : LevelAssignment or mapping of int to str, optional
        Level names; default :func:`cervkit.measurements.levels.assign_levels` with C2…C7 expected.
    anterior_side : {"left", "right"}, optional
        Which image side is anterior; default: from the curve of centroids (see module doc).

    Returns
    -------
    pandas.DataFrame
        Columns: label, level, centroid and the four corners in px (``*_x_px``, ``*_y_px``),
        anterior/posterior height, width, height_ratio, superior/inferior endplate and
        posterior wall angles (deg), area, dens_removed. ``attrs`` holds unit, anterior_side,
        levels_unsure and reasons.
    """
    return _measure(labels, spacing_mm, levels, anterior_side)[0]


def _angle_between(table: pd.DataFrame, upper: str, lower: str, upper_col: str,
                   lower_col: str) -> float | None:
    by_level = table.set_index("level") if table["level"].notna().any() else None
    if by_level is None or upper not in by_level.index or lower not in by_level.index:
        return None
    value = float(by_level.at[upper, upper_col] - by_level.at[lower, lower_col])
    return None if np.isnan(value) else value


def cobb_angle_deg(table: pd.DataFrame, upper: str, lower: str, *,
                   upper_endplate: str = "inferior", lower_endplate: str = "inferior") -> float | None:
    """Signed angle between two endplates of a :func:`measure_vertebrae` table (lordosis > 0).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`measure_vertebrae` (needs the ``level`` column filled).
    upper, lower : str
        Level names, e.g. "C2" and "C7".
    upper_endplate, lower_endplate : {"superior", "inferior"}
        Which endplate of each body.

    Returns
    -------
    float or None
        Degrees; None when a level is absent or its endplate could not be fitted.
    """
    for which in (upper_endplate, lower_endplate):
        if which not in ("superior", "inferior"):
            raise ValueError(f"endplate must be 'superior' or 'inferior', got {which!r}")
    return _angle_between(table, upper, lower, f"{upper_endplate}_endplate_deg",
                          f"{lower_endplate}_endplate_deg")


def measure_spine(labels: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                  levels: LevelAssignment | Mapping[int, str] | None = None,
                  anterior_side: str | None = None) -> dict[str, Any]:
    """Whole-column measurements: C2–C7 Cobb and Harrison angles, angles between adjacent endplates.

    Parameters
    ----------
    labels, spacing_mm, levels, anterior_side
        As for :func:`measure_vertebrae`.

    Returns
    -------
    dict
        ``c2c7_cobb_deg`` (C2 inferior vs C7 inferior endplate; lordosis > 0; None without
        both levels), ``c2c7_harrison_deg`` (posterior tangent angle, C2 vs C7 posterior walls),
        ``adjacent_endplate_angles_deg`` ({"C2-C3": deg, …}: inferior endplate of the upper body
        vs superior endplate of the lower, lordosis > 0; keys are labels "1-2" for unnamed
        bodies), ``levels``, ``levels_unsure``, ``reasons``, ``anterior_side``,
        ``anterior_side_source``, ``unit``, ``n_vertebrae`` and ``vertebrae`` (table rows).
    """
    table, info = _measure(labels, spacing_mm, levels, anterior_side)
    cobb = cobb_angle_deg(table, "C2", "C7")
    harrison = _angle_between(table, "C7", "C2", "posterior_wall_deg", "posterior_wall_deg")
    reasons = list(info["reasons"])
    if cobb is None:
        reasons.append("C2–C7 Cobb angle not measured: C2 or C7 not found")
    adjacent: dict[str, float] = {}
    recs = table.to_dict("records")
    for up, low in zip(recs[:-1], recs[1:]):
        names = (up["level"], low["level"])
        if all(n in ANATOMICAL_LEVELS for n in names):
            if ANATOMICAL_LEVELS.index(names[1]) - ANATOMICAL_LEVELS.index(names[0]) != 1:
                continue  # a level is missing in between: not an adjacent pair
            key = f"{names[0]}-{names[1]}"
        elif all(n is not None for n in names):
            key = f"{names[0]}-{names[1]}"
        else:
            key = f"{up['label']}-{low['label']}"
        value = up["inferior_endplate_deg"] - low["superior_endplate_deg"]
        if not np.isnan(value):
            adjacent[key] = float(value)
    return {"c2c7_cobb_deg": cobb, "c2c7_harrison_deg": harrison,
            "adjacent_endplate_angles_deg": adjacent, **{k: v for k, v in info.items()
                                                         if k != "reasons"},
            "reasons": reasons, "n_vertebrae": int(len(table)), "vertebrae": recs}
